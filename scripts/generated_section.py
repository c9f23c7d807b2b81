"""Rewrite (or check) a generated section of a doc, between its start and end markers: the
one mechanism behind the scripts that keep docs in step with the code's own tables."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


def render(text: str, target: Path, start: str, end: str, content: Callable[[], str]) -> str:
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    if not rest:
        raise SystemExit(f"{target}: no {start} marker")
    return f"{head}{start}\n{content()}{end}{tail}"


def main(script: str, target: Path, fresh: Callable[[str], str]) -> int:
    """``--check``: exit 1 if ``target`` is out of date; else rewrite it."""
    current = target.read_text(encoding="utf-8")
    rendered = fresh(current)
    if "--check" in sys.argv[1:]:
        if rendered != current:
            print(f"{target} is out of date; run {Path(script).name}", file=sys.stderr)
            return 1
        return 0
    target.write_text(rendered, encoding="utf-8")
    print(f"wrote {target}")
    return 0
