"""ZDS over its unix socket: the node agent's server and ztunnel's client (asyncio).

The rules live in ``zds_session`` (sans-IO); this module moves packets. The socket is
``AF_UNIX``/``SOCK_SEQPACKET`` (message boundaries kept, so a packet is one protobuf message),
read with ``recvmsg`` so the netns descriptor of an ``AddWorkload`` arrives with it.

- ``ZdsServer`` (the node agent): listens; a newer ztunnel connection replaces an older one
  (a restarted ztunnel connects before the old socket is noticed gone). On every connection it
  waits for the hello and sends the snapshot of the pods it holds. ``add`` and ``delete``
  update what it holds and, when ztunnel is connected, send the request and wait for the Ack
  (``ACK_TIMEOUT``). With no ztunnel connected they only update what it holds: ztunnel gets
  the pods in the snapshot when it connects. One reader task per connection takes every packet
  ztunnel sends, so a ztunnel that goes away is noticed at once, not at the next request.
- ``run_client`` (ztunnel): connects, retrying with backoff while the socket is missing or
  refuses; says hello; hands each request to a ``WorkloadHandler`` and acks it (the handler's
  exception text is the Ack's error); reconnects when the agent goes away.

A protocol error drops the connection on either side; the agent's pods are kept and sent again
in the next snapshot.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import attrs

from pilotfish.core.ambient.zds_session import (
    ACK_TIMEOUT,
    MAX_PACKET,
    Add,
    AgentSession,
    AgentState,
    Delete,
    Keep,
    SnapshotSent,
    WorkloadInfo,
    ZdsError,
    ZtunnelSession,
)
from pilotfish.core.backoff import Backoff

__all__ = ["WorkloadHandler", "WorkloadInfo", "ZdsError", "ZdsServer", "run_client"]

log = logging.getLogger("pilotfish.zds")
_FD_SPACE = socket.CMSG_SPACE(4 * 4)  # room for a few descriptors: more than one is an error
DEFAULT_BACKOFF = Backoff(initial=0.05, maximum=5.0, multiplier=2.0)  # a local socket


# --- socket IO ---------------------------------------------------------------------------


async def _wait(sock: socket.socket, writable: bool = False) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)
    fd = sock.fileno()
    (loop.add_writer if writable else loop.add_reader)(fd, wake)
    try:
        await ready
    finally:
        (loop.remove_writer if writable else loop.remove_reader)(fd)


async def _recv(sock: socket.socket) -> tuple[bytes, list[int], int]:
    """One packet, the descriptors that came with it, and recvmsg's flags."""
    while True:
        try:
            data, ancillary, flags, _ = sock.recvmsg(MAX_PACKET, _FD_SPACE)
            break
        except BlockingIOError:
            await _wait(sock)
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[:len(payload) - len(payload) % received.itemsize])
            fds.extend(received)
    return data, fds, flags


async def _send(sock: socket.socket, data: bytes, fd: int | None = None) -> None:
    ancillary = [] if fd is None else [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                        array.array("i", [fd]).tobytes())]
    while True:
        try:
            sock.sendmsg([data], ancillary)
            return
        except BlockingIOError:
            await _wait(sock, writable=True)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# --- the node agent's side ---------------------------------------------------------------


@attrs.define
class _Pod:
    info: WorkloadInfo
    netns_fd: int | None  # the agent's own duplicate; None: known, but no netns held


@attrs.define(eq=False)
class _Link:
    """One ztunnel connection, agent side."""

    sock: socket.socket
    session: AgentSession = attrs.field(factory=AgentSession)
    acks: asyncio.Queue[str] = attrs.field(factory=lambda: asyncio.Queue(maxsize=1))
    closed: asyncio.Event = attrs.field(factory=asyncio.Event)
    hello: asyncio.Event = attrs.field(factory=asyncio.Event)
    problem: str = "ztunnel closed the connection"

    async def read(self) -> None:
        """Every packet ztunnel sends, until it goes or breaks the protocol."""
        try:
            while True:
                data, fds, flags = await _recv(self.sock)
                if not data and not fds:
                    return
                try:
                    error = self.session.receive(data, fds, flags)
                finally:
                    _close_all(fds)
                if error is None:
                    self.hello.set()
                else:
                    self.acks.put_nowait(error)  # lockstep: at most one is ever waiting
        except ZdsError as exc:
            self.problem = f"ztunnel broke the protocol: {exc}"
            log.warning("zds: %s; dropping the connection", self.problem)
        except OSError as exc:
            self.problem = f"the connection failed: {exc}"
        finally:
            self.close()

    def close(self) -> None:
        """End the connection. The socket is shut down, which wakes the reader; it is closed
        only once the reader is done (``release``), so that its descriptor number cannot be
        taken by a new connection while the reader still watches it."""
        if not self.closed.is_set():
            self.closed.set()
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    async def release(self, reader: asyncio.Future[None]) -> None:
        self.close()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        self.sock.close()

    async def request(self, what: str, data: bytes, fd: int | None = None) -> str:
        """Send one request and wait for its Ack; the Ack's error text ("" for success)."""
        async def exchange() -> str:
            await _send(self.sock, data, fd)
            got = asyncio.ensure_future(self.acks.get())
            gone = asyncio.ensure_future(self.closed.wait())
            try:
                await asyncio.wait({got, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in (got, gone):
                    waiter.cancel()
            if got.done() and not got.cancelled():
                return got.result()
            raise ZdsError(f"{what}: no Ack: {self.problem}")
        try:
            return await asyncio.wait_for(exchange(), ACK_TIMEOUT)
        except TimeoutError:
            # Lockstep is lost (a late Ack would answer the next request): start over.
            self.close()
            raise ZdsError(f"{what}: ztunnel did not acknowledge within {ACK_TIMEOUT:g} s; "
                           "connection dropped") from None
        except OSError as exc:
            self.close()
            raise ZdsError(f"{what}: sending failed: {exc}") from None


class ZdsServer:
    """The node agent's ZDS endpoint: the pods it holds, and the ztunnel connected to it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._pods: dict[str, _Pod] = {}
        self._link: _Link | None = None
        self._lock = asyncio.Lock()  # one request in flight, snapshot included
        self._ready = asyncio.Event()

    @property
    def connected(self) -> bool:
        """A ztunnel is connected and has acknowledged its snapshot."""
        link = self._link
        return (link is not None and not link.closed.is_set()
                and link.session.state is AgentState.READY)

    async def wait_connected(self) -> None:
        """Until a ztunnel has acknowledged a snapshot (returns at once if one has)."""
        while not self.connected:
            self._ready.clear()
            await self._ready.wait()

    def known(self) -> frozenset[str]:
        """The uids of the pods this agent holds."""
        return frozenset(self._pods)

    async def serve(self) -> None:
        """Listen on ``path`` until cancelled (a stale socket file is replaced; the socket
        is removed on the way out). The socket exists when the first await is reached."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.unlink(missing_ok=True)
            listener.bind(str(self.path))
            # Whoever connects is handed every pod's network namespace: root only.
            os.chmod(self.path, 0o600)
            listener.listen(8)
            listener.setblocking(False)
            log.info("zds: listening on %s", self.path)
            async with asyncio.TaskGroup() as tasks:
                while True:
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        await _wait(listener)
                        continue
                    conn.setblocking(False)
                    tasks.create_task(self._serve_link(_Link(conn)))
        finally:
            listener.close()
            self.path.unlink(missing_ok=True)
            if self._link is not None:
                self._link.close()
            for pod in self._pods.values():
                if pod.netns_fd is not None:
                    os.close(pod.netns_fd)
            self._pods.clear()

    async def _serve_link(self, link: _Link) -> None:
        reader = asyncio.ensure_future(link.read())
        try:
            hello = asyncio.ensure_future(link.hello.wait())
            gone = asyncio.ensure_future(link.closed.wait())
            try:
                await asyncio.wait({hello, gone}, timeout=ACK_TIMEOUT,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                hello.cancel()
                gone.cancel()
            if not link.hello.is_set():
                log.warning("zds: a connection said no hello within %g s (%s); dropped",
                            ACK_TIMEOUT, link.problem if link.closed.is_set() else "silent")
                return
            async with self._lock:
                if self._link is not None:
                    self._link.close()  # the newer ztunnel wins
                self._link = link
                await self._send_snapshot(link)
            log.info("zds: ztunnel connected; snapshot of %d pod(s) acknowledged",
                     len(self._pods))
            self._ready.set()
            await link.closed.wait()
            log.info("zds: ztunnel connection ended: %s", link.problem)
        except ZdsError as exc:
            log.warning("zds: snapshot not acknowledged: %s", exc)
        except Exception:  # a bug here must not stop the server: this connection goes
            log.exception("zds: serving a ztunnel connection failed")
        finally:
            await link.release(reader)
            if self._link is link:
                self._link = None

    async def _send_snapshot(self, link: _Link) -> None:
        for uid, pod in self._pods.items():
            if pod.netns_fd is None:
                error = await link.request(f"keep {uid}", link.session.request_keep(uid))
            else:
                error = await link.request(f"add {uid}", link.session.request_add(
                    uid, pod.info), pod.netns_fd)
            if error:
                # One pod ztunnel cannot serve must not keep it from the others: the pod
                # stays held, and the next connection's snapshot offers it again.
                log.warning("zds: snapshot: ztunnel refused pod %s: %s", uid, error)
        await self._exchange(link, "snapshot_sent", link.session.request_snapshot_sent())

    async def _exchange(self, link: _Link, what: str, data: bytes, fd: int | None = None
                        ) -> None:
        error = await link.request(what, data, fd)
        if error:
            raise ZdsError(f"{what}: ztunnel answered: {error}")

    async def add(self, uid: str, info: WorkloadInfo, netns_fd: int) -> None:
        """Hold the pod (a duplicate of ``netns_fd``, which stays the caller's) and, when
        ztunnel is connected, hand it over and wait for the Ack. Raises ``ZdsError`` when
        ztunnel refuses it, does not answer in time or goes away meanwhile; the pod is held
        all the same and is in the next snapshot. With no ztunnel connected the pod is only
        held."""
        own = os.dup(netns_fd)
        async with self._lock:
            old = self._pods.get(uid)
            if old is not None and old.netns_fd is not None:
                os.close(old.netns_fd)
            self._pods[uid] = _Pod(info, own)
            link = self._link if self.connected else None
            if link is not None:
                await self._exchange(link, f"add {uid}", link.session.request_add(uid, info),
                                     own)

    async def keep(self, uid: str, info: WorkloadInfo) -> None:
        """Hold a pod known to be in the mesh whose netns this agent has no handle on (found
        again after a restart): snapshots say ``keep`` for it, so a ztunnel that still serves
        it keeps doing so."""
        async with self._lock:
            old = self._pods.get(uid)
            if old is None or old.netns_fd is None:
                self._pods[uid] = _Pod(info, None)

    async def delete(self, uid: str) -> None:
        """Forget the pod and, when ztunnel is connected, tell it and wait for the Ack (an
        unknown uid is still sent: ztunnel may hold it from an earlier agent)."""
        async with self._lock:
            pod = self._pods.pop(uid, None)
            if pod is not None and pod.netns_fd is not None:
                os.close(pod.netns_fd)
            link = self._link if self.connected else None
            if link is not None:
                await self._exchange(link, f"del {uid}", link.session.request_delete(uid))


# --- ztunnel's side ----------------------------------------------------------------------


class WorkloadHandler(Protocol):
    """What ztunnel does with the agent's requests; an exception's text becomes the Ack's
    error."""

    async def add(self, uid: str, info: WorkloadInfo, netns_fd: int) -> None:
        """Serve the pod; ``netns_fd`` (its network namespace) is the handler's to close,
        whether or not it raises."""
        ...

    async def keep(self, uid: str) -> None:
        """The pod is still in the mesh, though the agent holds no netns for it."""
        ...

    async def delete(self, uid: str) -> None:
        """Stop serving the pod."""
        ...

    async def snapshot_sent(self, known: frozenset[str]) -> None:
        """The snapshot is complete: ``known`` (the uids added or kept on this connection)
        are all the pods there are; forget the others."""
        ...


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(path)  # a unix connect does not block on a live listener
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def run_client(path: str | Path, handler: WorkloadHandler, *,
                     retry: Backoff | None = None) -> None:
    """Stay connected to the agent at ``path`` until cancelled (see the module docstring);
    ``retry`` paces reconnecting (reset by every connection that got through its hello)."""
    backoff = retry or attrs.evolve(DEFAULT_BACKOFF)
    while True:
        try:
            sock = _connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            delay = backoff.next(random.random())
            log.debug("zds: %s: %s; again in %.2f s", path, exc.strerror, delay)
            await asyncio.sleep(delay)
            continue
        try:
            await _serve_agent(sock, handler, backoff.reset)
            log.info("zds: the agent closed the connection; reconnecting")
        except ZdsError as exc:
            log.warning("zds: %s; reconnecting", exc)
        except OSError as exc:
            log.warning("zds: the connection failed: %s; reconnecting", exc)
        finally:
            sock.close()
        await asyncio.sleep(backoff.next(random.random()))


async def _serve_agent(sock: socket.socket, handler: WorkloadHandler,
                       connected: Callable[[], None]) -> None:
    session = ZtunnelSession()
    await _send(sock, session.hello())
    connected()
    while True:
        data, fds, flags = await _recv(sock)
        if not data and not fds:
            return
        try:
            request = session.receive(data, fds, flags)
        except ZdsError:
            _close_all(fds)
            raise
        call: Awaitable[None]
        if isinstance(request, Add):
            call = handler.add(request.uid, request.info, request.netns_fd)
        elif isinstance(request, Keep):
            call = handler.keep(request.uid)
        elif isinstance(request, Delete):
            call = handler.delete(request.uid)
        else:
            assert isinstance(request, SnapshotSent)
            call = handler.snapshot_sent(request.known)
        try:
            await call
            error = ""
        except Exception as exc:  # the handler's failure is the agent's to hear, not ours
            error = str(exc) or type(exc).__name__
            log.warning("zds: %s failed: %s", type(request).__name__.lower(), error)
        await _send(sock, session.ack(error))
