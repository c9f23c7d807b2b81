"""Run mypy on the installed layout (``pilotfish.core`` ... ``pilotfish.testing``).

The repository's top-level folders install under one namespace through setuptools'
package-dir mapping; mypy cannot follow the editable-install import hook, so this script
gives it the same layout as a tree of symlinks and checks ``-p pilotfish``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    with tempfile.TemporaryDirectory(prefix="pilotfish-mypy-") as tmp:
        package = Path(tmp) / "pilotfish"
        package.mkdir()
        for name, folder in mapping.items():
            (package / name.split(".", 1)[1]).symlink_to(ROOT / folder)
        command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                   "--explicit-package-bases", "-p", "pilotfish", *sys.argv[1:]]
        return subprocess.call(command, cwd=tmp, env={"MYPYPATH": tmp, "PATH": "/usr/bin:/bin"})


if __name__ == "__main__":
    sys.exit(main())
