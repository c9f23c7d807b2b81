"""Config sources: what feeds the store (files now; a Kubernetes API server later)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import anyio.abc
import attrs

from pilotfish.core.store import ConfigStore
from pilotfish.core.yamlload import DEFAULT_LIMITS, LoadLimits


@attrs.frozen
class SourceSettings:
    """What the command line asked for; each source plugin takes the part it understands."""

    config_dir: Path | None = None
    watch: bool = True
    # Seconds of quiet before a burst of file events is read (editors write in steps).
    file_debounce: float = 0.05
    limits: LoadLimits = DEFAULT_LIMITS  # what one config file may hold (mesh config)


@runtime_checkable
class ConfigSource(Protocol):
    name: str

    async def run(
        self, store: ConfigStore, *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Load everything into the store, call ``task_status.started()``, then keep the
        store up to date until cancelled."""
        ...
