"""Structured concurrency on asyncio alone, for the code ztunnel runs.

Issue 13 holds ztunnel to 30 MB, and anyio with its asyncio backend is 1.8 MiB of it; what
ztunnel needed from anyio is a task group its tasks can be cancelled through and a
shielded clean-up. asyncio's ``TaskGroup`` is the group (every task has a parent, a
failure cancels the rest); ``Tasks`` adds ``cancel``, and ``shielded`` is the shielded
cancel scope. Both work the same under anyio's task groups on its asyncio backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")


class Tasks:
    """An ``asyncio.TaskGroup`` whose children ``cancel()`` ends at once (the body goes on:
    as anyio's ``cancel_scope.cancel()`` as the last thing a group's body does)."""

    def __init__(self) -> None:
        self._group = asyncio.TaskGroup()
        self._children: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Tasks:
        await self._group.__aenter__()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self._group.__aexit__(kind, error, traceback)

    def start_soon(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = self._group.create_task(coroutine)
        self._children.add(task)
        task.add_done_callback(self._children.discard)

    def cancel(self) -> None:
        """Cancel every child still running; the group then ends once its body does."""
        for task in list(self._children):
            task.cancel()


async def shielded(clean_up: Awaitable[T]) -> T:
    """Await ``clean_up`` to its end even if this task is cancelled meanwhile, then raise
    the cancellation: a shielded cancel scope, in asyncio."""
    task = asyncio.ensure_future(clean_up)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return task.result()
