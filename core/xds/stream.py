"""How the xDS stream servers here (discovery's ADS, the agent's SDS) move messages.

Requests are handled in their stream's own task as they arrive (``next_request``); pushes to
many streams are made by a few worker tasks (`PushQueue`); a lock per stream keeps the two
from interleaving on one stream. A push asked for while one is queued or running merges
into it, as Istio's push queue does.

Responses are written through `WriteSlots`: at most so many are encoded and being written
at once, whichever task writes them. gRPC's write returns only once the peer's flow-control
window took the bytes, so this bounds what responses in flight cost in memory, however
many streams want a full state at once (2,000 proxies reconnecting want about 1 MB each).
A write the peer does not take within the send timeout gives its slot back and leaves its
stream: nothing more is pushed or read on it until gRPC ends the call (`hold_until_done`).
One task watches the writes' deadlines and cancels a late writer's cancel scope (a worker's
lasts as long as the worker; a stream's own task has its stream's): a cancel scope of its
own per write cost more than the rest of a push to one proxy.

Nothing here knows what a response means: the servers plan and encode them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc
import attrs
import grpc

from pilotfish.core.xds.limits import LogThrottle

log = logging.getLogger("pilotfish.xds")


async def next_request(context: grpc.aio.ServicerContext) -> Any | None:
    """The stream's next request; None once the client half-closed or went away."""
    try:
        request = await context.read()
    except grpc.aio.AioRpcError:
        return None
    return None if request is grpc.aio.EOF else request


def stream_lock() -> asyncio.Lock:
    # gRPC's aio API runs on asyncio only, and so does this transport. asyncio's lock takes
    # a free lock (the usual case) at once; anyio's, even with fast_acquire, first walks
    # the task's cancel scopes (~7 us, and a push and its ACK take three such locks).
    return asyncio.Lock()


@attrs.define(eq=False)
class StreamState:
    """What the transport keeps for each stream; a server's record of a stream extends it."""

    lock: asyncio.Lock = attrs.field(factory=stream_lock, kw_only=True)
    queued: bool = attrs.field(default=False, kw_only=True)  # waiting in a PushQueue
    closed: bool = attrs.field(default=False, kw_only=True)
    stalled: bool = attrs.field(default=False, kw_only=True)  # given up: see give_up
    # The stream's own task runs in it (`serve_requests`); cancelled when it is given up.
    stop: anyio.CancelScope = attrs.field(factory=anyio.CancelScope, kw_only=True)

    def give_up(self) -> None:
        """A response was not read within the send timeout: push and read nothing more."""
        self.closed = self.stalled = True
        self.stop.cancel()


async def serve_requests(stream: StreamState, context: grpc.aio.ServicerContext,
                         handle: Callable[[Any], Awaitable[None]], first: Any = None) -> None:
    """Handle the stream's requests (``first``, then what it reads) one at a time under the
    stream's lock, until the client half-closes, goes away, or the stream is given up (the
    caller then cleans up, and a stalled stream `hold_until_done`)."""
    with stream.stop:
        request = first if first is not None else await next_request(context)
        while request is not None:
            async with stream.lock:
                await handle(request)
            # Not kept while waiting for the next: a SotW ACK carries every name the proxy
            # watches (~100 KB parsed at 1,000 services, per proxy).
            request = None
            request = await next_request(context)


S = TypeVar("S", bound=StreamState)


class PushQueue(Generic[S]):
    """Streams waiting for a push, served by ``workers`` tasks (while `run` runs, which
    also watches the deadlines of ``slots``)."""

    def __init__(self, push: Callable[[S, anyio.CancelScope], Awaitable[None]],
                 workers: int, slots: WriteSlots) -> None:
        """``push(stream, scope)``: ``scope`` is the worker's, for `WriteSlots.write`."""
        self._push = push
        self.workers = workers
        self.slots = slots
        self._queue: deque[S] = deque()
        self._ready = anyio.Event()
        # A bug that fails every stream's push must not write a traceback per stream.
        self._failures = LogThrottle(10.0)

    def add(self, stream: S) -> None:
        """Push to ``stream`` soon; a stream already waiting is not queued twice."""
        if stream.queued or stream.closed:
            return
        stream.queued = True
        self._queue.append(stream)
        self._ready.set()

    def __len__(self) -> int:
        return len(self._queue)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.slots.watch)
            for _ in range(self.workers):
                tg.start_soon(self._work)
            task_status.started()

    async def _work(self) -> None:
        while True:
            # Cancelled only when a write of this worker is past its deadline: that push
            # ends, and the worker goes on in a new scope.
            with anyio.CancelScope() as scope:
                await self._serve(scope)

    async def _serve(self, scope: anyio.CancelScope) -> None:
        while True:
            while self._queue:
                stream = self._queue.popleft()
                stream.queued = False
                if stream.closed:
                    continue
                try:
                    async with stream.lock:
                        if not stream.closed:
                            await self._push(stream, scope)
                except Exception:
                    # One stream's failure must not stop the pushes to every other.
                    unsaid = self._failures.due(anyio.current_time())
                    if unsaid is not None:
                        log.exception("a push failed; the other streams go on%s",
                                      f" ({unsaid} more failed since the last one logged)"
                                      if unsaid else "")
            ready = self._ready
            await ready.wait()
            if self._ready is ready:
                self._ready = anyio.Event()


class WriteSlots:
    """At most ``slots`` responses encoded and being written at once; `watch` gives up the
    writes past the timeout (see the module doc)."""

    def __init__(self, slots: int, timeout: float) -> None:
        self._slots = asyncio.Semaphore(slots)  # asyncio's: see stream_lock
        self.timeout = timeout
        self.timeouts = 0
        # Writes under way: token -> (deadline, the writer's scope, what gives the stream up).
        self._writing: dict[object, tuple[float, anyio.CancelScope, Callable[[], None]]] = {}

    async def write(self, write: Callable[[bytes], Awaitable[None]],
                    encode: Callable[[], bytes], scope: anyio.CancelScope,
                    stalled: Callable[[], None]) -> bytes:
        """Encode and write one response; the bytes written. If the peer does not take them
        within the timeout, ``stalled`` is called (it gives the stream up: see
        `hold_until_done`) and the writer's ``scope`` is cancelled."""
        async with self._slots:
            data = encode()
            token = object()
            self._writing[token] = (anyio.current_time() + self.timeout, scope, stalled)
            try:
                await write(data)
            finally:
                self._writing.pop(token, None)
            return data

    async def watch(self) -> None:
        """Until cancelled: give up the writes past their deadline."""
        period = min(1.0, self.timeout / 4)
        while True:
            await anyio.sleep(period)
            now = anyio.current_time()
            for token, (deadline, scope, stalled) in list(self._writing.items()):
                if deadline <= now:
                    del self._writing[token]
                    self.timeouts += 1
                    stalled()
                    scope.cancel()


async def hold_until_done(context: grpc.aio.ServicerContext) -> None:
    """What a stream whose write timed out does until gRPC ends the call.

    gRPC can neither cancel a write once started nor send a status while one is
    outstanding, so the stream cannot be ended from here: its handler waits, pushing and
    reading nothing, until the client goes away or the connection reaches its maximum age
    (`grpc.max_connection_age_ms`; the server then closes it after a grace period)."""
    done = anyio.Event()
    context.add_done_callback(lambda _: done.set())
    if not context.done():
        await done.wait()
