"""The files source's watch: changes arrive, and cancelling it is immediate."""

from __future__ import annotations

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
