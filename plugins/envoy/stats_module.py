"""Building Envoy's metrics module (``istio_stats.c``) once per source and Envoy version.

The module is C against Envoy's dynamic-module ABI, which is tied to the Envoy that loads it
(ABI v0.2.0 for Envoy 1.40): the shared object is compiled with the system's C compiler
(``cc``, else ``gcc``; ``./dev setup`` installs gcc) into a cache directory, under a name made
from the source's hash and Envoy's version, so each pair is built once per host and every
agent after that finds it. The file appears by rename: agents starting together never load
half a file. A compiler that fails raises `StatsModuleError` with its output; no compiler at
all is `NoCompiler`, on which the backend keeps the gRPC access-log path.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

SOURCE = "istio_stats.c"
CACHE_ENV = "PILOTFISH_CACHE_DIR"  # where built modules go (default: ~/.cache/pilotfish)
FLAGS = ("-O2", "-shared", "-fPIC", "-Wall", "-Werror", "-pthread")
COMPILE_TIMEOUT = 120.0


class StatsModuleError(RuntimeError):
    """The module could not be built; the message has the compiler's output."""


class NoCompiler(StatsModuleError):
    """No C compiler on this host."""


def source() -> bytes:
    return resources.files("pilotfish.plugins.envoy").joinpath(SOURCE).read_bytes()


def cache_dir() -> Path:
    base = os.environ.get(CACHE_ENV) or os.environ.get("XDG_CACHE_HOME")
    root = Path(base) if base else Path.home() / ".cache"
    return (root if os.environ.get(CACHE_ENV) else root / "pilotfish") / "envoy-modules"


def compiler() -> str:
    for name in (os.environ.get("CC") or "", "cc", "gcc"):
        if name and (found := shutil.which(name)):
            return found
    raise NoCompiler("no C compiler (cc, gcc) on PATH: install gcc (./dev setup does) to "
                     "count Istio's metrics inside Envoy")


def module_name(code: bytes, envoy_version: str) -> str:
    digest = hashlib.sha256(code + b"\0" + envoy_version.encode() + b"\0"
                            + " ".join(FLAGS).encode()).hexdigest()[:16]
    return f"libpilotfish_istio_stats_{digest}.so"


def build(envoy_version: str, into: Path | None = None) -> Path:
    """The module's path for this Envoy version, compiled first if the cache lacks it."""
    code = source()
    directory = into or cache_dir()
    path = directory / module_name(code, envoy_version)
    if path.exists():
        return path
    cc = compiler()
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as work:
        src = Path(work) / SOURCE
        src.write_bytes(code)
        built = Path(work) / path.name
        argv = [cc, *FLAGS, "-o", str(built), str(src)]
        try:
            result = subprocess.run(argv, capture_output=True, text=True,
                                    timeout=COMPILE_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StatsModuleError(f"{cc}: cannot compile {SOURCE}: {exc}") from exc
        if result.returncode != 0:
            raise StatsModuleError(
                f"{cc} failed on {SOURCE} (exit status {result.returncode}):\n"
                + (result.stderr + result.stdout).strip())
        built.chmod(0o755)
        built.replace(path)
    return path
