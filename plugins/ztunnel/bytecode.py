"""ztunnel's bytecode: compiled once per node into a cache of its own, without docstrings and
asserts (``-OO``) and without column tables (``-X no_debug_ranges``).

Issue 13 holds ztunnel to 30 MB, and those flags take ~1.2 MiB off a started ztunnel. They
need their own cache (``-X pycache_prefix``): Debian's standard library ships no ``opt-2``
bytecode, and a module compiled as ztunnel starts costs far more than the flags save (a
started ztunnel that compiled its event loop's and anyio's modules held 4.7 MiB more,
docs/benchmarks.md). Where the environment forbids writing bytecode
(``PYTHONDONTWRITEBYTECODE``), ztunnel cannot fill that cache itself either, so ``fill``
compiles, before ztunnel starts, every module it loads: those its command imports, those it
imports once running (``RUNTIME``), and every module of the packages it takes modules from
as it goes (``PACKAGES``). Files already compiled and current are left alone.

Nothing ztunnel runs reads a docstring or relies on an assert (its asserts narrow types).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pilotfish.core.proxy_backend import ProxyError

# What ztunnel's command imports: the command, its agent and its proxy.
MODULES = ("pilotfish.cli.main", "pilotfish.agent.ztunnel", "pilotfish.core.ztunnel.proxy")
# What it imports once running: its event loop (asyncio's streams and task groups are
# imported with asyncio; ztunnel loads no anyio).
RUNTIME = ("runpy", "queue", "concurrent.futures.thread", "uvloop")
# Packages whose every module is compiled: ztunnel imports from them as traffic comes.
PACKAGES = ("uvloop", "h2", "hpack", "hyperframe", "h11", "asyncio",
            "pilotfish.core.native", "pilotfish.core.ztunnel", "pilotfish.core.ambient",
            "pilotfish.core.security")
TIMEOUT = 120.0


def interpreter(cache: Path) -> list[str]:
    """Python as ztunnel runs it, its bytecode in ``cache``."""
    return [sys.executable, "-OO", "-X", "no_debug_ranges", "-X", f"pycache_prefix={cache}"]


def fill(cache: Path) -> None:
    """Compile what ztunnel loads into ``cache`` with ztunnel's interpreter; ``ProxyError``
    names what went wrong."""
    try:
        subprocess.run([*interpreter(cache), "-m", __name__], check=True, capture_output=True,
                       text=True, timeout=TIMEOUT)
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ProxyError(f"compiling ztunnel's modules into {cache} failed: {last}") from None
    except subprocess.TimeoutExpired:
        raise ProxyError(f"compiling ztunnel's modules into {cache} took over "
                         f"{TIMEOUT:.0f} s") from None


def _compile_here() -> None:
    """In ztunnel's interpreter: import what it imports, then compile each loaded module and
    each module of ``PACKAGES`` (``compileall`` writes whatever the environment says, and
    names the file as this interpreter would: the cache, ``opt-2``)."""
    import compileall
    import importlib

    for name in (*MODULES, *RUNTIME):
        importlib.import_module(name)
    for package in PACKAGES:
        for folder in importlib.import_module(package).__path__:
            if not compileall.compile_dir(folder, quiet=2, maxlevels=0 if "." in package
                                          else sys.getrecursionlimit()):
                raise SystemExit(f"{folder}: does not compile")
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None) or ""
        if path.endswith(".py") and not compileall.compile_file(path, quiet=2):
            raise SystemExit(f"{path}: does not compile")


if __name__ == "__main__":
    _compile_here()
