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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generated_section

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "envoy.md"
START, END = "<!-- not-applied:start -->", "<!-- not-applied:end -->"


def render(text: str) -> str:
    return generated_section.render(
        text, TARGET, START, END, lambda: not_applied.markdown(semantic.NOT_APPLIED_KINDS))


def main() -> int:
    return generated_section.main(__file__, TARGET, render)


if __name__ == "__main__":
    sys.exit(main())
