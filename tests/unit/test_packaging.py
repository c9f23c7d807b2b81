"""Every source folder with an __init__.py is listed as a package (wheels would miss it), and
every listed package is a source folder or a data folder named in package-data."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

from pilotfish.core.version import VERSION

ROOT = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for package, folder in config["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *relative)))
    found |= set(config.get("package-data", {}))  # data-only folders, no __init__.py
    assert found == listed, f"missing: {sorted(found - listed)}; extra: {sorted(listed - found)}"


def test_the_version_constant_is_the_distributions():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert VERSION == declared == importlib.metadata.version("pilotfish")
