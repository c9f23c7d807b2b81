"""The layer contracts (``[tool.importlinter]`` in pyproject.toml) hold, and they would catch a
break: the same contracts, run on a small fixture tree shaped like pilotfish, fail on each
deliberate violation and pass without it."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).parent / "lint-imports"
FIXTURE = "fixture_pilotfish"


def contracts() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def ini(config: dict) -> str:
    """The contracts as import-linter's INI file, for the fixture's package names."""
    def names(values: list[str]) -> str:
        return "".join(f"\n    {v.replace('pilotfish.', FIXTURE + '.')}" for v in values)

    lines = ["[importlinter]", f"root_packages ={names(config['root_packages'])}",
             f"include_external_packages = {config.get('include_external_packages', False)}"]
    for index, contract in enumerate(config["contracts"]):
        lines.append(f"\n[importlinter:contract:{index}]")
        for key, value in contract.items():
            lines.append(f"{key} ={names(value)}" if isinstance(value, list)
                         else f"{key} = {value}")
    return "\n".join(lines) + "\n"


def tree(root: Path, config: dict, extra: dict[str, str]) -> None:
    """A package per root of the real tree, each with a module; ``extra`` adds modules."""
    for package in config["root_packages"]:
        folder = root / FIXTURE / package.split(".", 1)[1]
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("")
        (folder / "thing.py").write_text("import attrs\n")
    # Allowed: downwards, and from the test kit to anything.
    (root / FIXTURE / "cli" / "command.py").write_text(
        f"from {FIXTURE}.node import thing\nfrom {FIXTURE}.discovery import thing as d\n")
    (root / FIXTURE / "translators" / "lds.py").write_text(f"from {FIXTURE}.core import thing\n")
    (root / FIXTURE / "testing" / "kit.py").write_text(f"from {FIXTURE}.cli import command\n")
    for module, source in extra.items():
        (root / FIXTURE / f"{module.replace('.', '/')}.py").write_text(source)


def lint(tmp_path: Path, extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    config = contracts()
    tree(tmp_path, config, extra)
    (tmp_path / ".importlinter").write_text(ini(config))
    return subprocess.run([str(LINT), "--config", str(tmp_path / ".importlinter"),
                           "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})


def test_the_project_keeps_its_layer_contracts():
    done = subprocess.run([str(LINT), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_the_fixture_tree_keeps_them_without_a_violation(tmp_path: Path):
    done = lint(tmp_path, {})
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("module", "source", "broken"), [
    ("core.bad", f"from {FIXTURE}.translators import lds\n", "the core at the bottom"),
    ("core.worse", f"from {FIXTURE}.cli import command\n", "the core at the bottom"),
    ("translators.bad", f"from {FIXTURE}.interceptors import thing\n", "the core at the bottom"),
    ("cni.bad", f"from {FIXTURE}.interceptors import thing\n", "only through the plugin manager"),
    ("agent.bad", f"from {FIXTURE}.testing import kit\n", "Only tests use the test kit"),
])
def test_a_deliberate_violation_breaks_a_contract(tmp_path: Path, module: str, source: str,
                                                  broken: str):
    done = lint(tmp_path, {module: source})
    assert done.returncode == 1, done.stdout + done.stderr
    report = " ".join(done.stdout.split())
    assert "BROKEN" in report and broken in report, done.stdout
    assert f"{FIXTURE}.{module} ->" in report
