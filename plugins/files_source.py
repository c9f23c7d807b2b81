"""The ``files`` config source: a directory of YAML/JSON, read recursively and watched.

Each file is one origin in the store. A file that no longer parses keeps the objects it
held; an invalid object keeps its last good version; a deleted file removes its objects.
Changes are picked up with ``watchfiles`` (inotify underneath) after a short debounce, so
an editor's write-rename-chmod burst is read once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import anyio
import anyio.abc
import watchfiles

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.sources import SourceSettings
from pilotfish.core.store import ConfigError, ConfigStore
from pilotfish.core.yamlload import YAMLFileError, load_text

log = logging.getLogger("pilotfish.sources.files")

SUFFIXES = (".yaml", ".yml", ".json")
ROOT_POLL = 0.2  # seconds between looks for a config root that went away


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
    if root.is_file():
        return [root]
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and is_config_file(p)
        and not any(part.startswith(".") for part in p.relative_to(root).parts[:-1])
    )


def load_file(store: ConfigStore, path: Path) -> None:
    """(Re)read one file into the store."""
    origin = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        store.remove(origin)
        return
    except (OSError, UnicodeDecodeError) as exc:
        store.failed(origin, ConfigError(origin, 0, f"cannot read file: {exc}"))
        return
    try:
        objects, problems = load_text(text, origin)
    except YAMLFileError as exc:
        store.failed(origin, ConfigError(exc.error.file, exc.error.line, exc.error.message))
        return
    store.replace(
        origin, objects, [ConfigError(p.file, p.line, p.message) for p in problems]
    )


class FilesSource:
    name = "files"

    def __init__(self, root: Path, *, watch: bool = True, debounce: float = 0.05) -> None:
        self.root = root
        self.watch = watch
        self.debounce = debounce

    async def run(
        self, store: ConfigStore, *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        if not self.root.exists():
            raise FileNotFoundError(f"config directory {self.root} does not exist")
        for path in config_files(self.root):
            load_file(store, path)
        log.info("loaded %d objects from %s", len(store), self.root)
        task_status.started()
        if not self.watch:
            return

        async def apply(paths: set[Path]) -> None:
            self.apply_changes(store, paths)

        await watch(self.root, apply, debounce_ms=max(1, int(self.debounce * 1000)))

    def apply_changes(self, store: ConfigStore, paths: Iterable[Path]) -> None:
        for path in sorted(set(paths)):
            if path.is_dir():
                for child in config_files(path):
                    load_file(store, child)
            elif path.exists():
                if is_config_file(path):
                    load_file(store, path)
            else:
                # A deleted file, or a deleted directory: drop every origin under it.
                prefix = str(path)
                for origin in store.origins():
                    if origin == prefix or origin.startswith(prefix + "/"):
                        store.remove(origin)


@hookimpl
def pilotfish_config_source(settings: SourceSettings) -> FilesSource | None:
    if settings.config_dir is None:
        return None
    return FilesSource(settings.config_dir, watch=settings.watch, debounce=settings.file_debounce)
