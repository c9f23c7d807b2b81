"""A ztunnel for tests of the node agent's side of ZDS: a ``WorkloadHandler`` that records.

Run it with ``run_client(path, RecordingZtunnel())`` and read what the agent sent with
``await ztunnel.next()``: ``("add", uid, info, netns)``, ``("keep", uid)``, ``("del", uid)``,
``("snapshot_sent", known)``. ``netns`` identifies the namespace the descriptor refers to, as
``netns_id`` of a path does, so a test compares it with the pod's; the descriptor is closed.
Setting ``refuse`` makes every add fail with that text (the agent's Ack error).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pilotfish.core.ambient.zds import WorkloadInfo


def netns_id(path: str) -> tuple[int, int]:
    """What identifies a network namespace: the device and inode of its file."""
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


class RecordingZtunnel:
    def __init__(self, refuse: str = "") -> None:
        self.events: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.refuse = refuse

    async def add(self, uid: str, info: WorkloadInfo, netns_fd: int) -> None:
        try:
            if self.refuse:
                raise RuntimeError(self.refuse)
            await self.enter(uid, netns_fd)
            stat = os.fstat(netns_fd)
            await self.events.put(("add", uid, info, (stat.st_dev, stat.st_ino)))
        finally:
            os.close(netns_fd)

    async def enter(self, uid: str, netns_fd: int) -> None:
        """What a subclass does with the namespace before the add is recorded."""

    async def keep(self, uid: str) -> None:
        await self.events.put(("keep", uid))

    async def delete(self, uid: str) -> None:
        await self.events.put(("del", uid))

    async def snapshot_sent(self, known: frozenset[str]) -> None:
        await self.events.put(("snapshot_sent", known))

    async def next(self, timeout: float = 10.0) -> tuple[Any, ...]:
        return await asyncio.wait_for(self.events.get(), timeout)
