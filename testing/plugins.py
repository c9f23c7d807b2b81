"""Make a plugin distribution on disk, for tests of discovery with third-party plugins.

A real distribution is a module plus a ``.dist-info`` folder with ``METADATA`` and
``entry_points.txt``; put the folder on ``PYTHONPATH`` and ``importlib.metadata`` finds
the plugin exactly as it finds a pip-installed one.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def write_distribution(
    target: Path, name: str, modules: Mapping[str, str],
    entry_points: Mapping[str, Mapping[str, str]], version: str = "0.0.1",
) -> Path:
    """Write modules and a dist-info for distribution ``name`` into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (target / f"{module}.py").write_text(source)
    info = target / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, entries in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{entry} = {value}" for entry, value in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return target


def pip_install_target(project: Path, target: Path) -> Path:
    """``pip install --target``: a real install of a plugin project, isolated from the venv."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps",
         "--target", str(target), str(project)],
        check=True,
    )
    return target
