"""The stream transport shared by ADS and SDS: merged pushes, bounded writes, deadlines."""

from __future__ import annotations

import asyncio
import logging

import anyio
import attrs

from pilotfish.core.xds.stream import PushQueue, WriteSlots, stream_lock


@attrs.define(eq=False)
class Stream:
    name: str
    lock: asyncio.Lock = attrs.field(factory=stream_lock)
    queued: bool = False
    closed: bool = False


def test_a_push_asked_for_while_one_waits_merges_into_it():
    pushed: list[str] = []

    async def push(stream: Stream, scope: anyio.CancelScope) -> None:
        pushed.append(stream.name)

    async def main() -> None:
        queue: PushQueue[Stream] = PushQueue(push, 2, WriteSlots(2, 30))
        a, b, gone = Stream("a"), Stream("b"), Stream("gone", closed=True)
        for stream in (a, b, a, a, gone):
            queue.add(stream)
        assert len(queue) == 2  # a once, b; a closed stream is not queued
        async with anyio.create_task_group() as tg:
            await tg.start(queue.run)
            await anyio.wait_all_tasks_blocked()
            queue.add(a)  # after its push: a new one
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert pushed == ["a", "b", "a"]


def test_at_most_slots_responses_are_encoded_and_written_at_once():
    most = now = 0
    encoded = 0

    async def write(data: bytes) -> None:
        nonlocal most, now
        now += 1
        most = max(most, now)
        await anyio.sleep(0.01)
        now -= 1

    def encode() -> bytes:
        nonlocal encoded
        encoded += 1
        return b"x"

    async def main() -> None:
        slots = WriteSlots(3, 30)
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(slots.write, write, encode, tg.cancel_scope, lambda: None)

    anyio.run(main)
    assert most == 3 and encoded == 20


def test_a_write_past_the_timeout_gives_its_stream_up_and_its_slot_back(caplog):
    stalled: list[str] = []
    written: list[str] = []

    async def never(data: bytes) -> None:
        await anyio.sleep_forever()

    async def quick(data: bytes) -> None:
        written.append("quick")

    async def push(stream: Stream, scope: anyio.CancelScope) -> None:
        write = never if stream.name == "stuck" else quick
        await slots.write(write, lambda: b"x", scope, lambda: stalled.append(stream.name))

    slots = WriteSlots(1, 0.2)

    async def main() -> None:
        queue: PushQueue[Stream] = PushQueue(push, 1, slots)
        async with anyio.create_task_group() as tg:
            await tg.start(queue.run)
            queue.add(Stream("stuck"))
            queue.add(Stream("next"))  # one worker, one slot: waits for the stuck write
            with anyio.fail_after(5):
                while not written:
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()

    with caplog.at_level(logging.ERROR):
        anyio.run(main)
    assert stalled == ["stuck"] and written == ["quick"] and slots.timeouts == 1
    assert not caplog.records  # given up quietly: the server says so, not the queue


def test_a_failing_push_is_logged_once_per_interval_and_the_others_go_on(caplog):
    pushed: list[str] = []

    async def push(stream: Stream, scope: anyio.CancelScope) -> None:
        if stream.name.startswith("bad"):
            raise RuntimeError("a bug")
        pushed.append(stream.name)

    async def main() -> None:
        queue: PushQueue[Stream] = PushQueue(push, 1, WriteSlots(1, 30))
        for index in range(50):
            queue.add(Stream(f"bad{index}"))
        queue.add(Stream("good"))
        async with anyio.create_task_group() as tg:
            await tg.start(queue.run)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()

    with caplog.at_level(logging.ERROR, logger="pilotfish.xds"):
        anyio.run(main)
    assert pushed == ["good"]
    assert len(caplog.records) == 1 and "a push failed" in caplog.records[0].getMessage()
