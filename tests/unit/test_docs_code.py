"""Code in docs/plugins.md is taken from files that run: every Python or TOML block appears,
line for line, in the project's sources or tests, so the guide cannot drift from the code."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for pattern in ("*/**/*.py", "pyproject.toml", "contrib/**/*.toml",
                             "contrib/**/*.py")
           for p in ROOT.glob(pattern) if ".venv" not in p.parts]


def blocks(doc: Path) -> list[str]:
    return [textwrap.dedent(m.group(2)) for m in re.finditer(
        r"```(python|toml)\n(.*?)```", doc.read_text(), re.S)]


def normalized(text: str) -> str:
    return "\n".join(line.strip() for line in text.strip().splitlines())


def test_every_code_block_of_the_plugin_guide_is_in_a_file_that_runs():
    corpus = "\n".join(normalized(p.read_text()) for p in SOURCES)
    found = blocks(ROOT / "docs" / "plugins.md")
    assert len(found) >= 6
    for block in found:
        assert normalized(block) in corpus, f"not found in the sources:\n{block}"
