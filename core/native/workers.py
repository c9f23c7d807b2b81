"""``--concurrency N``: the native proxy as N processes sharing its listeners and one
configuration, as Envoy's worker threads share its main thread's.

The first process holds the xDS streams (ADS to discovery, SDS to the agent) and the admin
API, and serves traffic like the others. It starts N-1 workers (``python -m
pilotfish.core.native --worker-fd FD``), each with a socket pair to it, sends each one
what it holds, then every update it accepts, as it accepts it (:class:`Update`, checked
once by the first process: a worker applies it to its own state and binds the same
listeners). Every process opens its listening sockets with ``SO_REUSEPORT``, so the kernel
spreads new connections over them. Counters and Istio's metrics stay where they are
counted; the admin API adds them up when they are read (:meth:`Workers.totals`). A worker
that dies is started again and brought up to date; a worker whose parent is gone exits.

Frames are a 4-byte length and a pickle: both ends are this program, started by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import signal
import socket
import struct
import subprocess
import sys
from typing import Any

from pilotfish.core.istio_requests import IstioSeries
from pilotfish.core.native.config import ConfigState, Rejected, Update
from pilotfish.core.native.proxy import NativeProxy
from pilotfish.core.native.stats import Stats

log = logging.getLogger("pilotfish.native")

_LENGTH = struct.Struct("!I")
STOP_GRACE = 5.0  # seconds a worker has to finish after it is told to quit
SPAWN_TIMEOUT = 30.0  # seconds a new worker has to start and catch up


def _frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


async def _send(writer: asyncio.StreamWriter, message: Any) -> None:
    writer.write(_frame(message))
    await writer.drain()


async def _receive(reader: asyncio.StreamReader) -> Any:
    """The next message; None when the other end is gone."""
    try:
        head = await reader.readexactly(_LENGTH.size)
        return pickle.loads(await reader.readexactly(_LENGTH.unpack(head)[0]))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.process: subprocess.Popen[bytes] | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.lock = asyncio.Lock()  # one exchange at a time on the pair

    async def send(self, message: Any) -> None:
        if self.writer is None:
            return
        async with self.lock:
            with contextlib.suppress(ConnectionError, OSError):
                await _send(self.writer, message)

    async def ask(self, message: Any, timeout: float = 5.0) -> Any:
        if self.writer is None or self.reader is None:
            return None
        async with self.lock:
            try:
                await _send(self.writer, message)
                return await asyncio.wait_for(_receive(self.reader), timeout)
            except (ConnectionError, OSError, TimeoutError):
                return None


class Workers:
    """The first process's side: starts the workers and keeps them in step."""

    def __init__(self, count: int, state: ConfigState, log_level: str = "warning") -> None:
        self.state = state
        self.log_level = log_level
        self.workers = [_Worker(index) for index in range(1, count)]
        self.stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._queue: list[Update] = []
        self._flushing: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the workers; back once each has taken what this process holds."""
        self.state.observers.append(self._forward)
        await asyncio.gather(*(self._spawn(worker) for worker in self.workers))

    async def _spawn(self, worker: _Worker) -> None:
        ours, theirs = socket.socketpair()
        worker.process = subprocess.Popen(
            [sys.executable, "-m", "pilotfish.core.native", "--worker-fd",
             str(theirs.fileno()), "--worker-index", str(worker.index), "-l",
             self.log_level], pass_fds=[theirs.fileno()])
        theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        # What it missed (everything so far), written at once: no update can come between
        # the snapshot and the worker taking the updates that follow it.
        for update in self.state.snapshot():
            writer.write(_frame(update))
        worker.reader, worker.writer = reader, writer
        # answered once the worker has applied all that came before (and bound listeners)
        if await worker.ask("sync", timeout=SPAWN_TIMEOUT) != "synced":
            log.error("native worker %d did not start in %.0fs", worker.index, SPAWN_TIMEOUT)
        self._watch(worker)

    def _watch(self, worker: _Worker) -> None:
        async def watch() -> None:
            process = worker.process
            assert process is not None
            code = await asyncio.get_running_loop().run_in_executor(None, process.wait)
            if not self.stopping:
                log.error("native worker %d exited (%s); starting it again", worker.index,
                          code)
                await self._spawn(worker)

        task = asyncio.get_running_loop().create_task(watch())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forward(self, update: Update) -> None:
        """An update the first process took: to every worker, in order."""
        self._queue.append(update)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._queue:
            update = self._queue.pop(0)
            for worker in self.workers:
                await worker.send(update)

    async def totals(self, stats: Stats, istio: IstioSeries) -> tuple[Stats, IstioSeries]:
        """This process's counters and series plus every worker's."""
        total_stats, total_istio = Stats(), IstioSeries()
        total_stats.add_snapshot(stats.snapshot())
        total_istio.add_snapshot(istio.snapshot())
        for answer in await asyncio.gather(*(w.ask("stats") for w in self.workers)):
            if answer is not None:
                total_stats.add_snapshot(answer[0])
                total_istio.add_snapshot(answer[1])
        return total_stats, total_istio

    async def drain(self) -> None:
        await asyncio.gather(*(w.send("drain") for w in self.workers))

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.gather(*(w.send("quit") for w in self.workers))
        for worker in self.workers:
            if worker.process is None:
                continue
            try:
                await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(
                    None, worker.process.wait), STOP_GRACE)
            except TimeoutError:
                worker.process.kill()


async def run_worker(fd: int, index: int, sniffers: list[Any]) -> None:
    """A worker: apply what the first process sends, serve the listeners, answer for its
    counters; exit when told to or when the first process is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the first process decides when to stop
    state = ConfigState()
    proxy = NativeProxy(state, sniffers=sniffers, reuse_port=True, worker=index)
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))

    async def flush_logs() -> None:
        while True:
            await asyncio.sleep(1)
            proxy.flush_logs()

    flushing = asyncio.get_running_loop().create_task(flush_logs())
    try:
        while (message := await _receive(reader)) is not None:
            if isinstance(message, Update):
                try:
                    state.apply(message.type_url, message.added, message.removed,
                                message.version)
                except Rejected as exc:  # the first process took it: should not happen
                    log.error("native worker: %s", exc)
                await proxy.reconcile()
            elif message == "sync":
                await _send(writer, "synced")
            elif message == "stats":
                proxy.refresh_gauges()
                await _send(writer, (proxy.stats.snapshot(), proxy.istio.snapshot()))
            elif message == "drain":
                proxy.drain()
            elif message == "quit":
                break
    finally:
        flushing.cancel()
        proxy.drain()
        proxy.flush_logs()
