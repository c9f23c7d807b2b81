"""Write docs/hooks.md from the hookspecs' signatures and docstrings (the hook reference).

    python scripts/gen_hook_docs.py          # rewrite docs/hooks.md
    python scripts/gen_hook_docs.py --check  # exit 1 if docs/hooks.md is out of date
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from pilotfish.core import hookspecs

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "hooks.md"


def render() -> str:
    source = inspect.getsource(hookspecs)
    hooks = sorted(
        (source.index(f"def {name}("), name, getattr(hookspecs, name))
        for name in dir(hookspecs) if name.startswith("pilotfish_")
    )
    out = [
        "# Hook reference",
        "",
        "Generated from `core/hookspecs.py` by `scripts/gen_hook_docs.py`; do not edit.",
        "",
        inspect.cleandoc(hookspecs.__doc__ or ""),
        "",
    ]
    for _, name, func in hooks:
        signature = str(inspect.signature(func)).replace("'", "")
        out += [f"## `{name}`", "", "```python", f"def {name}{signature}", "```", "",
                inspect.cleandoc(func.__doc__ or ""), ""]
    return "\n".join(out)


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run python scripts/gen_hook_docs.py")
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
