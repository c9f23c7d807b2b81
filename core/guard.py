"""One bad object must not break the rest: per-object isolation while config is indexed.

Validation should keep malformed objects out of the store, but the registry and the push
context read fields validation cannot vouch for in every combination (a plugin's kind, a
checker's blind spot, a bug). ``Guard.run`` builds one object's part; if that raises, the
object is left out, the failure is recorded against it (file, line, kind and name), and the
rest of the config is indexed and served as usual. Discovery reports the failures beside
the store's errors (``/debug/config_errors``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from pilotfish.core.objects import ConfigObject
from pilotfish.core.store import ConfigError

log = logging.getLogger("pilotfish.push")
T = TypeVar("T")


class Guard:
    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def run(self, obj: ConfigObject, build: Callable[..., T], *args: Any) -> T | None:
        """``build(*args)``, or None when it fails (the failure is recorded against
        ``obj``)."""
        try:
            return build(*args)
        except Exception as exc:
            log.debug("%s: %s", obj.key, exc, exc_info=True)
            self.errors.append(ConfigError(
                obj.source.file, obj.source.line,
                f"cannot be used ({type(exc).__name__}: {exc}); it is left out and the rest "
                "of the config is served", obj.key))
            return None
