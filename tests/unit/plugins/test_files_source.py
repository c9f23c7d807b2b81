"""The files source's watch: changes arrive, and cancelling it is immediate."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import anyio

from pilotfish.plugins.files_source import watch


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
