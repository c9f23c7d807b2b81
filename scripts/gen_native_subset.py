#!/usr/bin/env python3
"""Write the supported-subset table of docs/native.md from core/native/subset.py (the same
table the native proxy checks every resource against), between its markers.

    python scripts/gen_native_subset.py          # rewrite the table
    python scripts/gen_native_subset.py --check  # exit 1 if docs/native.md is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

from pilotfish.core.native import subset

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "native.md"
START, END = "<!-- subset:start -->", "<!-- subset:end -->"


def render(text: str) -> str:
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    if not rest:
        raise SystemExit(f"{TARGET}: no {START} marker")
    return f"{head}{START}\n{subset.markdown()}{END}{tail}"


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
