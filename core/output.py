"""What every command prints through: its errors, aligned tables, ``-o json|yaml``.

Kept free of heavy imports: the command line loads it before it knows which command runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


class CommandError(Exception):
    """A command cannot do what was asked; the message says which flag or file, and why.
    ``pilotfish`` prints it after the command's name and exits 2."""


def table(headers: list[str], rows: Iterable[list[str]]) -> str:
    """Columns aligned on the widest cell, two spaces apart, as istioctl prints them."""
    all_rows = [headers, *rows]
    widths = [max(len(str(r[i])) for r in all_rows) for i in range(len(headers))]
    return "\n".join(
        "  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in all_rows
    ) + "\n"


def emit(data: Any, output: str) -> None:
    """Print ``data`` as JSON or YAML (``-o json|yaml``)."""
    if output == "json":
        print(json.dumps(data, indent=2))
    else:
        import yaml

        print(yaml.safe_dump(data, sort_keys=False), end="")


def manifests(documents: Iterable[Any]) -> str:
    """Kubernetes objects as one YAML stream (``---`` between documents), in their own key
    order, without anchors: what kubectl and a reader expect."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return "---\n".join(yaml.dump(d, Dumper=Dumper, sort_keys=False) for d in documents)
