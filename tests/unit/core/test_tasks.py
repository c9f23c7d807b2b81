"""core/tasks.py: the task group and the shielded clean-up ztunnel's code runs on instead of
anyio's, on asyncio's loop, on uvloop and under an anyio task group."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio
import pytest
import uvloop

from pilotfish.core.tasks import Tasks, shielded

T = TypeVar("T")


def run_both(main: Callable[[], Coroutine[Any, Any, T]]) -> list[T]:
    """``main`` on asyncio's own loop, then on uvloop (ztunnel's)."""
    return [asyncio.run(main()), uvloop.run(main())]


def test_cancel_ends_the_children_and_the_group_ends_with_its_body() -> None:
    async def main() -> list[str]:
        seen: list[str] = []

        async def child(name: str) -> None:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                seen.append(f"{name} cancelled")
                raise

        async with Tasks() as tasks:
            tasks.start_soon(child("a"))
            tasks.start_soon(child("b"))
            await asyncio.sleep(0)
            tasks.cancel()
            seen.append("body goes on")
        return sorted(seen)

    assert run_both(main) == [["a cancelled", "b cancelled", "body goes on"]] * 2


def test_a_child_that_fails_cancels_the_others_and_the_body() -> None:
    async def main() -> tuple[list[str], str]:
        seen: list[str] = []

        async def fails() -> None:
            raise ValueError("boom")

        async def waits() -> None:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                seen.append("waiter cancelled")
                raise

        with pytest.raises(ExceptionGroup) as raised:
            async with Tasks() as tasks:
                tasks.start_soon(waits())
                tasks.start_soon(fails())
                await asyncio.sleep(30)
        return seen, str(raised.value.exceptions[0])

    assert run_both(main) == [(["waiter cancelled"], "boom")] * 2


def test_shielded_clean_up_runs_to_its_end_then_the_cancellation_is_raised() -> None:
    async def main() -> list[str]:
        seen: list[str] = []

        async def clean_up() -> str:
            await asyncio.sleep(0.05)
            seen.append("cleaned")
            return "done"

        async def worker() -> None:
            try:
                await asyncio.sleep(30)
            finally:
                seen.append(await shielded(clean_up()))

        task = asyncio.get_running_loop().create_task(worker())
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.sleep(0.01)
        task.cancel()  # a second cancellation during the clean-up does not cut it short
        with pytest.raises(asyncio.CancelledError):
            await task
        return seen

    assert run_both(main) == [["cleaned"]] * 2


def test_shielded_passes_the_clean_ups_error_and_value() -> None:
    async def main() -> tuple[int, str]:
        async def value() -> int:
            return 7

        async def broken() -> None:
            raise OSError("gone")

        try:
            await shielded(broken())
        except OSError as exc:
            return await shielded(value()), str(exc)
        return 0, ""

    assert run_both(main) == [(7, "gone")] * 2


@pytest.mark.anyio
async def test_an_anyio_cancel_scope_cancels_a_tasks_group_inside_it() -> None:
    # the rest of pilotfish runs on anyio; code on Tasks must stop with its scope
    ended: list[str] = []

    async def clean_up() -> None:
        await asyncio.sleep(0.05)  # anyio keeps cancelling the task meanwhile
        ended.append("cleaned")

    async def forever() -> None:
        try:
            async with Tasks() as tasks:
                tasks.start_soon(asyncio.sleep(30))
                await asyncio.sleep(30)
        finally:
            await shielded(clean_up())

    with anyio.move_on_after(0.1) as scope:
        await forever()
    assert scope.cancelled_caught and ended == ["cleaned"]
