"""The files source's watch: changes arrive, and cancelling it is immediate."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import anyio
import pytest

from pilotfish.core.store import ConfigStore
from pilotfish.core.yamlload import LoadLimits
from pilotfish.plugins.files_source import (
    ReadError,
    config_files,
    load_file,
    read_config_file,
    watch,
)


def test_watch_reports_changes_and_stops_at_once_when_cancelled(tmp_path: Path) -> None:
    seen: list[set[Path]] = []
    changed = anyio.Event()

    async def on_changes(paths: set[Path]) -> None:
        seen.append(paths)
        changed.set()

    async def main() -> float:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: watch(tmp_path, on_changes, debounce_ms=10))
            await anyio.sleep(0.3)  # the watcher is set up
            (tmp_path / "a.yaml").write_text("x: 1\n")
            with anyio.fail_after(5):
                await changed.wait()
            started = time.monotonic()
            tg.cancel_scope.cancel()
        return time.monotonic() - started

    took = anyio.run(main)
    assert tmp_path / "a.yaml" in set().union(*seen)
    assert took < 1.0, f"cancelling the watch took {took:.2f}s"


def run_watch(root: Path, steps: list[tuple[float, object]]) -> list[set[Path]]:
    """Watch ``root`` while each step's action runs after its pause; the changes seen."""
    seen: list[set[Path]] = []

    async def on_changes(paths: set[Path]) -> None:
        seen.append(paths)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: watch(root, on_changes, debounce_ms=10))
            for pause, action in steps:
                await anyio.sleep(pause)
                action()  # type: ignore[operator]
            await anyio.sleep(0.8)
            tg.cancel_scope.cancel()

    anyio.run(main)
    return seen


def test_a_deleted_and_recreated_directory_is_watched_again(tmp_path: Path) -> None:
    root = tmp_path / "config"
    root.mkdir()
    seen = run_watch(root, [
        (0.3, lambda: shutil.rmtree(root)),
        (0.5, lambda: root.mkdir()),
        (0.5, lambda: (root / "late.yaml").write_text("x: 1\n")),
    ])
    assert root in set().union(*seen)  # reported whole when it came back
    assert root / "late.yaml" in set().union(*seen)  # and watched after that


def test_a_single_file_replaced_by_rename_is_watched_again(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text("a: 1\n")

    def save(text: str) -> None:  # an editor's save: write aside, rename over
        aside = tmp_path / ".mesh.yaml.swp"
        aside.write_text(text)
        os.replace(aside, config)

    seen = run_watch(config, [(0.3, lambda: save("a: 2\n")), (0.8, lambda: save("a: 3\n"))])
    assert sum(config in paths for paths in seen) >= 2, seen


# -- reading files that cannot hurt the reader ---------------------------------------------

def test_only_regular_files_inside_the_tree_are_read(tmp_path: Path) -> None:
    root = tmp_path / "config"
    (root / "..data").mkdir(parents=True)  # a mounted ConfigMap: visible names are links
    (root / "..data" / "mesh.yaml").write_text("a: 1\n")
    (root / "mesh.yaml").symlink_to("..data/mesh.yaml")
    assert read_config_file(root / "mesh.yaml", root) == "a: 1\n"
    outside = tmp_path / "secret.yaml"
    outside.write_text("b: 2\n")
    (root / "out.yaml").symlink_to(outside)
    (root / "zero.yaml").symlink_to("/dev/zero")
    os.mkfifo(root / "fifo.yaml")
    (root / "big.yaml").write_text("x" * 100)
    (root / "latin1.yaml").write_bytes(b"a: \xe9\n")
    cases = {
        "out.yaml": f"a link to {outside}, outside the config tree",
        "zero.yaml": "a link to /dev/zero, outside the config tree",
        "fifo.yaml": "a FIFO, not a regular file; not read",
        "big.yaml": "its size in bytes is over the limit of 10",
        "latin1.yaml": "not UTF-8 text (byte 3)",
    }
    for name, message in cases.items():
        with pytest.raises(ReadError, match=message.replace("(", r"\(").replace(")", r"\)")):
            read_config_file(root / name, root, LoadLimits(max_file_bytes=10))
    with pytest.raises(FileNotFoundError):
        read_config_file(root / "gone.yaml", root)


def test_config_files_skip_hidden_and_linked_folders(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.yaml").write_text("")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "y.yaml").write_text("")
    (tmp_path / "linked").symlink_to(tmp_path / "a")
    (tmp_path / "z.json").write_text("")
    (tmp_path / "notes.txt").write_text("")
    assert config_files(tmp_path) == [tmp_path / "a" / "x.yaml", tmp_path / "z.json"]


def test_any_failure_is_the_files_error_and_the_store_keeps_its_last_good(
        tmp_path: Path) -> None:
    store = ConfigStore()
    path = tmp_path / "ns.yaml"
    path.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
    load_file(store, path, tmp_path)
    path.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"
                    "x: " + "[" * 500 + "]" * 500 + "\n")
    load_file(store, path, tmp_path)
    assert [o.name for o in store.objects()] == ["shop"]  # the last good version
    (error,) = store.errors()
    assert error.file == str(path) and "maxDepth" in error.message
