#!/usr/bin/env python3
"""Write the "Not applied" table of docs/envoy.md from validation/not_applied.py (the same
table validation warns from), between its markers.

    python scripts/gen_not_applied.py          # rewrite the table
    python scripts/gen_not_applied.py --check  # exit 1 if docs/envoy.md is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

from pilotfish.validation import not_applied, semantic

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "envoy.md"
START, END = "<!-- not-applied:start -->", "<!-- not-applied:end -->"


def render(text: str) -> str:
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    if not rest:
        raise SystemExit(f"{TARGET}: no {START} marker")
    return (f"{head}{START}\n{not_applied.markdown(semantic.NOT_APPLIED_KINDS)}{END}{tail}")


def main() -> int:
    current = TARGET.read_text(encoding="utf-8")
    fresh = render(current)
    if "--check" in sys.argv[1:]:
        if fresh != current:
            print(f"{TARGET} is out of date; run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(fresh, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
