"""Which of the native proxy's modules run compiled, and the guard against stale builds.

``scripts/compile_native.py`` compiles the HTTP/1 hot path (``MODULES``) with mypyc into
extension modules beside their ``.py`` files, where Python's import system prefers them,
and records each source's hash in ``compiled.json`` (``MANIFEST``). Compiled modules call
one another directly in C, not through module attributes, so a build is used whole or not
at all: if any listed source differs from its recorded hash (edited since the build), or
the build is for another interpreter, ``guard`` makes the whole group load from source and
says why. The package's ``__init__`` runs it before any of these modules is imported.
Modules outside the build are reached as Python objects at run time (nothing of theirs is
copied in: no ``Final`` constants), so they may change without a rebuild; what compiled
code gets back from them is checked against their annotations, a mismatch raising
TypeError rather than running old code.

Nothing here is compiled itself: it decides what the others load.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import attrs

PACKAGE = "pilotfish.core.native"
HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "compiled.json"
# The request path of a plain HTTP/1.1 router, by the profile (docs/benchmarks.md): what
# every request runs through. Not the control plane, the admin API or the xDS client. Each
# group is one shared library (``<group>__mypyc.*.so``) whose modules call one another
# directly. ``http1`` (the messages) stays Python: ztunnel imports it (through ``http2``;
# ``http1_codec``, the parser and writer, is compiled), and any
# compiled group, with mypyc's runtime in it, adds ~0.4 MiB to a process that loads it;
# ztunnel's memory has a budget. (``tests/unit/ztunnel/test_imports.py`` holds to it.)
GROUPS: dict[str, tuple[str, ...]] = {
    "hot": ("proxy", "fast_path", "forwarding", "connection", "http1_codec", "routing",
            "matchers", "upstreams", "pool", "telemetry", "stats", "http_filters",
            "access_log"),
}
MODULES: tuple[str, ...] = tuple(name for group in GROUPS.values() for name in group)
LIBRARIES = tuple(f"{group}__mypyc" for group in GROUPS)


@attrs.frozen
class Build:
    """What the import of ``MODULES`` uses: ``compiled`` when the extension modules are
    current, else the sources, with ``reason`` saying why (no build, stale, other Python);
    ``unused`` when there is a build but it is not the one that runs."""

    compiled: bool
    reason: str
    unused: bool = False


def source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_for(folder: Path, modules: Sequence[str]) -> dict[str, object]:
    """What the build records: the interpreter it is for and each source's hash."""
    return {"cache_tag": sys.implementation.cache_tag,
            "modules": {name: source_hash(folder / f"{name}.py") for name in modules}}


def extension_path(folder: Path, name: str) -> Path | None:
    """The extension module for ``name`` in ``folder``, built for this interpreter."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = folder / f"{name}{suffix}"
        if candidate.exists():
            return candidate
    return None


def check(folder: Path = HERE, modules: Sequence[str] = MODULES) -> Build:
    """Whether the build in ``folder`` may be used: every module's extension present and
    every source's hash the one recorded when it was compiled."""
    manifest_path = folder / MANIFEST.name
    if not manifest_path.exists():
        return Build(False, f"not compiled (no {manifest_path})")
    build = check_manifest(folder, modules, manifest_path)
    return build if build.compiled else attrs.evolve(build, unused=True)


def check_manifest(folder: Path, modules: Sequence[str], manifest_path: Path) -> Build:
    try:
        manifest = json.loads(manifest_path.read_text())
        recorded: dict[str, str] = manifest["modules"]
        cache_tag: str = manifest["cache_tag"]
    except (ValueError, KeyError, TypeError) as exc:
        return Build(False, f"{manifest_path} unreadable ({exc!r}): running the sources")
    if cache_tag != sys.implementation.cache_tag:
        return Build(False, f"{manifest_path} is for {cache_tag}, this is "
                            f"{sys.implementation.cache_tag}: running the sources")
    for library in LIBRARIES:
        if extension_path(folder, library) is None:
            return Build(False, f"{library} is missing from the build ({manifest_path}): "
                                f"running the sources; ./dev setup compiles it")
    for name in modules:
        source = folder / f"{name}.py"
        if recorded.get(name) is None or extension_path(folder, name) is None:
            return Build(False, f"{name} is not in the build ({manifest_path}): running the "
                                f"sources; ./dev setup compiles it")
        if source_hash(source) != recorded[name]:
            return Build(False, f"{source} changed since it was compiled: running the "
                                f"sources; ./dev setup compiles it again")
    return Build(True, f"compiled with mypyc ({len(modules)} modules, {manifest_path})")


class SourceFinder:
    """Finds ``MODULES`` as their ``.py`` files, ahead of the extension modules beside
    them (a meta path finder is asked before the package's own path is searched)."""

    def __init__(self, folder: Path, modules: Sequence[str]) -> None:
        self.folder = folder
        self.names = {f"{PACKAGE}.{name}": name for name in modules}

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        name = self.names.get(fullname)
        if name is None:
            return None
        return importlib.util.spec_from_file_location(fullname, self.folder / f"{name}.py")


BUILD = Build(False, "not checked")


def guard(folder: Path = HERE, modules: Sequence[str] = MODULES) -> Build:
    """Decide once, before the first of ``modules`` is imported, whether the build is used;
    when it is not, have the imports take the sources."""
    global BUILD
    BUILD = check(folder, modules)
    if not BUILD.compiled and not any(isinstance(f, SourceFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, SourceFinder(folder, modules))
    return BUILD


def running() -> dict[str, bool]:
    """For each of ``MODULES`` already imported, whether it runs as an extension module:
    what the proxy reports (``/server_info``), from the modules themselves."""
    loaded = {}
    for name in MODULES:
        module = sys.modules.get(f"{PACKAGE}.{name}")
        if module is not None:
            loaded[name] = isinstance(module.__spec__.loader if module.__spec__ else None,
                                      importlib.machinery.ExtensionFileLoader)
    return loaded


def report() -> dict[str, object]:
    """What ``/server_info`` says under ``hot_path`` (and the start-up log line): whether
    every compiled module runs compiled, why (the build's state), and module by module."""
    loaded = running()
    return {"compiled": bool(loaded) and all(loaded.values()), "build": BUILD.reason,
            "modules": loaded}
