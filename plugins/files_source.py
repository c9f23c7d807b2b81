"""The ``files`` config source: a directory of YAML/JSON, read recursively and watched.

Each file is one origin in the store. A file that no longer parses keeps the objects it
held; an invalid object keeps its last good version; a deleted file removes its objects.
Changes are picked up with ``watchfiles`` (inotify underneath) after a short debounce, so
an editor's write-rename-chmod burst is read once.

Nothing in the tree can hurt the server: only regular files are read (not FIFOs or
devices), symlinks only to files inside the tree, within the mesh config's
``discovery.configLimits``; reading, parsing and validating run in a worker thread, a batch
of files at a time, and any failure is that file's error.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread
import attrs
import watchfiles

from pilotfish.core.files import ReadError, TooLarge, read_regular
from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.sources import SourceSettings
from pilotfish.core.store import Checked, ConfigError, ConfigStore
from pilotfish.core.yamlload import DEFAULT_LIMITS, LoadLimits, YAMLFileError, load_text

log = logging.getLogger("pilotfish.sources.files")

SUFFIXES = (".yaml", ".yml", ".json")
ROOT_POLL = 0.2  # seconds between looks for a config root that went away
BATCH = 64  # files read in the worker thread before the loop applies them


async def watch(root: Path, on_changes: Callable[[set[Path]], Awaitable[None]], *,
                debounce_ms: int, step_ms: int = 20) -> None:
    """Call ``on_changes`` with the paths that changed under ``root``, until cancelled.

    ``watchfiles.awatch`` waits in a worker thread that cancellation cannot interrupt; the
    thread checks a stop event every step, but awatch sets that event only after the thread
    returned on its own (5 s). A sibling task sets it the moment cancellation arrives, so
    stopping takes one step instead of seconds.

    A change to the root itself (a directory deleted, a single config file replaced by an
    editor's save-by-rename) leaves inotify watching nothing. Then the watch starts over on
    the root as it is now, once it exists again, and reports the root whole so that every
    file under it is read again (reading a file that did not change changes nothing).
    """
    stop = anyio.Event()

    async def stop_when_cancelled() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            stop.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_when_cancelled)
        while not stop.is_set():
            async with contextlib.aclosing(watchfiles.awatch(
                root, debounce=debounce_ms, step=step_ms, recursive=True, watch_filter=None,
                stop_event=stop,
            )) as batches:
                async for batch in batches:
                    paths = {Path(path) for _, path in batch}
                    await on_changes(paths)
                    if root in paths:
                        break  # start over on the root as it is now
            if stop.is_set():
                break
            if not root.exists():
                log.info("%s went away; waiting for it to come back", root)
            while not root.exists():
                await anyio.sleep(ROOT_POLL)
            await on_changes({root})  # whatever changed while no watch was set
        tg.cancel_scope.cancel()


def is_config_file(path: Path) -> bool:
    name = path.name
    if name.startswith((".", "#")) or name.endswith("~"):
        return False  # hidden files and editor backups
    return path.suffix in SUFFIXES


def config_files(root: Path) -> list[Path]:
    """The config files under ``root`` in path order: hidden folders (a mounted
    ConfigMap's ``..data``) and symlinked folders are not walked."""
    if not root.is_dir():
        return [root]
    out = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(folder) / name for name in files if is_config_file(Path(name))]
    return sorted(out)


def read_config_file(path: Path, root: Path, limits: LoadLimits = DEFAULT_LIMITS) -> str:
    """The text of a config file, read so that no file can hurt the reader.

    A symlink is followed only to a file inside the config tree (a mounted ConfigMap's
    files are such links); only regular files are read — a FIFO would block, a device
    never end — and no more than the limit's bytes.
    """
    max_bytes = limits.max_file_bytes
    real = os.path.realpath(path)
    real_root = os.path.realpath(root if root.is_dir() else root.parent)
    if real != real_root and not real.startswith(real_root + os.sep):
        raise ReadError(f"{path}: a link to {real}, outside the config tree {root}; not read")
    try:
        # The open does not follow a link: the file must not have become one since
        # realpath looked.
        data = read_regular(real, max_bytes)
    except TooLarge as exc:
        raise ReadError(f"{path}: " + limits.exceeded("maxFileSize", "its size in bytes")
                        ) from exc
    except ReadError as exc:
        raise ReadError(str(exc).replace(real, str(path), 1)) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReadError(f"{path}: not UTF-8 text (byte {exc.start})") from exc


@attrs.frozen
class Prepared:
    """One file read, parsed and validated (in a worker thread); applied on the loop."""

    origin: str
    checked: tuple[Checked, ...] = ()
    errors: tuple[ConfigError, ...] = ()
    failed: ConfigError | None = None  # the file as a whole could not be read
    gone: bool = False

    def apply(self, store: ConfigStore) -> None:
        if self.gone:
            store.remove(self.origin)
        elif self.failed is not None:
            store.failed(self.origin, self.failed)
        else:
            store.replace_checked(self.origin, self.checked, self.errors)


def prepare_file(store: ConfigStore, path: Path, root: Path,
                 limits: LoadLimits = DEFAULT_LIMITS) -> Prepared:
    """Read, parse and validate one file without changing the store. Whatever goes wrong
    becomes that file's error; nothing escapes."""
    origin = str(path)
    try:
        text = read_config_file(path, root, limits)
    except FileNotFoundError:
        return Prepared(origin, gone=True)
    except ReadError as exc:
        return Prepared(origin, failed=ConfigError(origin, 0, str(exc).removeprefix(
            f"{origin}: ")))
    try:
        objects, problems = load_text(text, origin, limits=limits)
        checked = store.check(objects)
    except YAMLFileError as exc:
        return Prepared(origin, failed=ConfigError(exc.error.file, exc.error.line,
                                                   exc.error.message))
    except Exception as exc:  # a bug must cost one file, not the server
        log.exception("%s: unexpected error reading it", origin)
        return Prepared(origin, failed=ConfigError(origin, 0, f"cannot be read: "
                                                   f"{type(exc).__name__}: {exc}"))
    return Prepared(origin, tuple(checked),
                    tuple(ConfigError(p.file, p.line, p.message) for p in problems))


def load_file(store: ConfigStore, path: Path, root: Path | None = None,
              limits: LoadLimits = DEFAULT_LIMITS) -> None:
    """(Re)read one file into the store, on the caller's thread."""
    prepare_file(store, path, root or path.parent, limits).apply(store)


def changed_files(store: ConfigStore, paths: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """What a batch of file events means: files to (re)read, origins to drop."""
    files: list[Path] = []
    removed: list[str] = []
    for path in sorted(set(paths)):
        if path.is_dir():
            files += config_files(path)
        elif path.exists() or path.is_symlink():
            if is_config_file(path):
                files.append(path)
        else:
            # A deleted file, or a deleted directory: drop every origin under it.
            prefix = str(path)
            removed += [origin for origin in store.origins()
                        if origin == prefix or origin.startswith(prefix + "/")]
    return files, removed


class FilesSource:
    name = "files"

    def __init__(self, root: Path, *, watch: bool = True, debounce: float = 0.05,
                 limits: LoadLimits = DEFAULT_LIMITS) -> None:
        self.root = root
        self.watch = watch
        self.debounce = debounce
        self.limits = limits

    async def run(
        self, store: ConfigStore, *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        if not self.root.exists():
            raise FileNotFoundError(f"config directory {self.root} does not exist")
        await self.load(store, config_files(self.root))
        log.info("loaded %d objects from %s", len(store), self.root)
        task_status.started()
        if not self.watch:
            return

        async def apply(paths: set[Path]) -> None:
            files, removed = changed_files(store, paths)
            for origin in removed:
                store.remove(origin)
            await self.load(store, files)

        await watch(self.root, apply, debounce_ms=max(1, int(self.debounce * 1000)))

    async def load(self, store: ConfigStore, paths: Sequence[Path]) -> None:
        """Read, parse and validate in a worker thread, a batch at a time; apply each batch
        on the loop. xDS, the CA and the debug endpoints keep answering meanwhile."""
        for start in range(0, len(paths), BATCH):
            batch = paths[start:start + BATCH]
            prepared = await anyio.to_thread.run_sync(self._prepare, store, batch)
            for item in prepared:
                item.apply(store)

    def _prepare(self, store: ConfigStore, paths: Sequence[Path]) -> list[Prepared]:
        return [prepare_file(store, path, self.root, self.limits) for path in paths]

    def apply_changes(self, store: ConfigStore, paths: Iterable[Path]) -> None:
        """The same as a watch batch, on the caller's thread (for the local node)."""
        files, removed = changed_files(store, paths)
        for origin in removed:
            store.remove(origin)
        for path in files:
            load_file(store, path, self.root, self.limits)


@hookimpl
def pilotfish_config_source(settings: SourceSettings) -> FilesSource | None:
    if settings.config_dir is None:
        return None
    return FilesSource(settings.config_dir, watch=settings.watch, debounce=settings.file_debounce,
                       limits=settings.limits)
