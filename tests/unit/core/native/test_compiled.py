"""The native proxy's compiled hot path (``core/native/compiled.py``,
``scripts/compile_native.py``): the build ``./dev setup`` made loads, and a module edited
since it was compiled sends the whole group back to its sources."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from pilotfish.core.native import compiled

ROOT = Path(__file__).resolve().parents[4]

# What a process reports once the proxy's modules are imported.
REPORT = ("import json; import pilotfish.core.native.proxy, pilotfish.core.native.admin; "
          "from pilotfish.core.native import compiled; print(json.dumps(compiled.report()))")


def report(pythonpath: Path | None = None) -> dict[str, object]:
    env = {"PATH": "/usr/bin:/bin"} | ({"PYTHONPATH": str(pythonpath)} if pythonpath else {})
    result = subprocess.run([sys.executable, "-c", REPORT], capture_output=True, text=True,
                            env=env, check=True)
    loaded: dict[str, object] = json.loads(result.stdout)
    return loaded


def layout(tmp: Path, edit: str = "") -> Path:
    """The installed package under ``tmp`` (as ``scripts/typecheck.py`` lays it out) with
    a copy of ``core/native``: its sources copied, the build's extension modules linked,
    and ``edit``'s source changed after the build."""
    package = tmp / "pilotfish"
    package.mkdir()
    (package / "__init__.py").write_text("")
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    for name, folder in mapping.items():
        if name != "pilotfish.core":
            (package / name.split(".", 1)[1]).symlink_to(ROOT / folder)
    core = package / "core"
    core.mkdir()
    for entry in (ROOT / "core").iterdir():
        if entry.name != "native":
            (core / entry.name).symlink_to(entry)
    native = core / "native"
    shutil.copytree(ROOT / "core" / "native", native, symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    for built in (ROOT / "core" / "native").glob("*.so"):
        (native / built.name).symlink_to(built)
    if edit:
        source = native / f"{edit}.py"
        source.write_text(source.read_text() + "\n# edited after the build\n")
    return tmp


def test_the_build_dev_setup_made_is_current() -> None:
    build = compiled.check()
    assert build.compiled, f"{build.reason} (./dev setup runs scripts/compile_native.py)"


def test_the_proxy_runs_every_listed_module_compiled() -> None:
    loaded = report()
    assert loaded["compiled"] is True
    assert loaded["modules"] == dict.fromkeys(compiled.MODULES, True)


def test_ztunnel_does_not_load_the_compiled_library() -> None:
    # ztunnel's RSS budget (issue 13): the hot path's library is ~2 MiB and not its path.
    code = ("import json, sys; import pilotfish.agent.ztunnel, pilotfish.core.ztunnel.proxy; "
            "print(json.dumps(sorted(sys.modules)))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], check=True,
                                           capture_output=True, text=True).stdout))
    libraries = {f"{compiled.PACKAGE}.{library}" for library in compiled.LIBRARIES}
    assert loaded & ({f"{compiled.PACKAGE}.{m}" for m in compiled.MODULES} | libraries) \
        == set()


def test_a_copy_of_the_current_build_runs_compiled(tmp_path: Path) -> None:
    loaded = report(layout(tmp_path))
    assert loaded["compiled"] is True, loaded["build"]
    assert str(tmp_path) in str(loaded["build"])  # the copy's, not the checkout's


def test_a_module_edited_after_the_build_sends_the_whole_group_to_its_sources(
        tmp_path: Path) -> None:
    # Compiled modules call each other in C: one module's source with the others compiled
    # would still run the old code of the edited one wherever they call it.
    loaded = report(layout(tmp_path, edit="routing"))
    assert loaded["compiled"] is False
    assert loaded["modules"] == dict.fromkeys(compiled.MODULES, False)
    assert "routing.py changed since it was compiled" in str(loaded["build"])


def test_a_build_for_another_interpreter_is_not_used(tmp_path: Path) -> None:
    manifest = tmp_path / compiled.MANIFEST.name
    recorded = compiled.manifest_for(compiled.HERE, compiled.MODULES)
    manifest.write_text(json.dumps({**recorded, "cache_tag": "cpython-399"}))
    for name in compiled.MODULES:
        shutil.copy(compiled.HERE / f"{name}.py", tmp_path)
    build = compiled.check(tmp_path)
    assert not build.compiled and build.unused
    assert "is for cpython-399" in build.reason


def test_no_build_is_not_an_unused_one(tmp_path: Path) -> None:
    build = compiled.check(tmp_path)
    assert not build.compiled and not build.unused
    assert build.reason.startswith("not compiled")
