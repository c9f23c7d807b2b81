"""Compile the native proxy's HTTP/1 hot path with mypyc, in place.

The modules ``pilotfish.core.native.compiled.MODULES`` names become C extension modules
beside their ``.py`` files (``core/native/fast_path.cpython-311-x86_64-linux-gnu.so`` ...)
and a shared library per group of them (``core/native/hot__mypyc...so``; ``compiled.GROUPS``:
compiled modules call each other directly inside a group). The source
hashes go to ``core/native/compiled.json``; the package's import uses the build only while
they match (``compiled.guard``). All of these are build outputs, git-ignored.

mypyc needs the modules' full names (``pilotfish.core.native.http1``), so, as
``scripts/typecheck.py`` does for mypy, the build runs in a temporary folder where
``pilotfish/<layer>`` is a link to the repository's folder: setuptools' in-place build then
writes the extension modules through the link, beside the sources. The C files and objects
stay in ``build/mypyc`` so that a rebuild recompiles only what changed.

``./dev setup`` runs this. It does nothing when the recorded hashes match (a second or
less); ``--force`` rebuilds; ``--clean`` removes the build outputs (the sources then run).
Without a C compiler, or if mypyc fails, it says so and exits 0 with the build removed:
the pure-Python modules still run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from pilotfish.core.native import compiled

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "core" / "native"
BUILD_DIR = ROOT / "build" / "mypyc"

# Run in the child (the temporary layout as cwd): mypycify, then build_ext --inplace.
SETUP = """
import os
import sys
from setuptools import setup
from mypyc.build import mypycify

config, build_dir, *groups = sys.argv[1:]
separate = []
for group in groups:
    name, modules = group.split("=")
    separate.append(([f"pilotfish/core/native/{m}.py" for m in modules.split(",")],
                     f"pilotfish.core.native.{name}"))
paths = [path for files, _ in separate for path in files]
setup(name="pilotfish-native-compiled",
      ext_modules=mypycify(["--config-file", config, *paths], separate=separate,
                           target_dir=build_dir),
      script_args=["build_ext", "--inplace", "--build-temp", build_dir + "/temp",
                   "--parallel", str(os.cpu_count() or 1)])
"""


def outputs() -> list[Path]:
    """The build's files in ``core/native`` (extension modules and the manifest)."""
    found = [p for p in NATIVE.iterdir() if p.name.endswith(".so")
             and p.name.split(".", 1)[0] in {*compiled.MODULES, *compiled.LIBRARIES}]
    return found + ([compiled.MANIFEST] if compiled.MANIFEST.exists() else [])


def clean() -> None:
    for path in outputs():
        path.unlink()


def build(force: bool) -> int:
    if not force and compiled.check(NATIVE).compiled:
        print("==> native hot path: compiled build is current")
        return 0
    if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
        clean()
        print("==> native hot path: no C compiler; the pure-Python modules run")
        return 0
    if importlib.util.find_spec("mypyc") is None:
        clean()
        print("==> native hot path: no mypyc (pilotfish[dev]); the pure-Python modules run")
        return 0
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    started = time.monotonic()
    # The hashes of what is compiled, taken before: a source edited during the build is
    # recorded as it was compiled, so the guard sees the change.
    manifest = compiled.manifest_for(NATIVE, compiled.MODULES)
    clean()  # a failed build must not leave a half-written one in use
    with tempfile.TemporaryDirectory(prefix="pilotfish-mypyc-") as tmp:
        package = Path(tmp) / "pilotfish"
        package.mkdir()
        (package / "__init__.py").write_text("")
        for name, folder in mapping.items():
            (package / name.split(".", 1)[1]).symlink_to(ROOT / folder)
        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [sys.executable, "-c", SETUP, str(ROOT / "pyproject.toml"), str(BUILD_DIR),
             *(f"{name}={','.join(modules)}" for name, modules in compiled.GROUPS.items())],
            cwd=tmp, env={**os.environ, "MYPYPATH": tmp}, capture_output=True, text=True)
        (package / "__init__.py").unlink()
    if result.returncode != 0:
        clean()
        print(result.stdout[-4000:], result.stderr[-4000:], sep="\n", file=sys.stderr)
        print("==> native hot path: mypyc failed (above); the pure-Python modules run")
        return 0
    compiled.MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"==> native hot path: compiled {len(compiled.MODULES)} modules with mypyc in "
          f"{time.monotonic() - started:.0f} s")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if current")
    parser.add_argument("--clean", action="store_true", help="remove the build outputs")
    args = parser.parse_args()
    if args.clean:
        clean()
        return 0
    return build(args.force)


if __name__ == "__main__":
    sys.exit(main())
