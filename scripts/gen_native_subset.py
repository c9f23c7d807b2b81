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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generated_section

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "native.md"
START, END = "<!-- subset:start -->", "<!-- subset:end -->"


def render(text: str) -> str:
    return generated_section.render(text, TARGET, START, END, subset.markdown)


def main() -> int:
    return generated_section.main(__file__, TARGET, render)


if __name__ == "__main__":
    sys.exit(main())
