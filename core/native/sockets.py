"""Sockets for the native proxy: listening (TPROXY's transparent ones too), peeking at a
connection's first bytes for the listener filters, taking an accepted socket into a
protocol or streams after its TLS handshake, where a REDIRECTed connection was going, and
connecting upstream from the client's own address (Envoy's ``original_src``), and opening
sockets inside another network namespace (``in_netns``: ztunnel's listeners in a pod).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import socket
import ssl
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

if TYPE_CHECKING:  # a type only: ztunnel imports this module, and connection runs compiled
    from pilotfish.core.native.connection import Http1Connection


READ_SIZE = 65536


@attrs.frozen
class Keepalive:
    """TCP keepalive on upstream connections (0: the system's value). Here rather than
    with the rest of the native proxy's config: ztunnel sets it too, and should not load
    Envoy's protobufs to do so (``config`` takes it from here)."""

    probes: int = 0
    time: int = 0  # seconds idle before the first probe
    interval: int = 0  # seconds between probes


async def close_writer(writer: asyncio.StreamWriter | Http1Connection) -> None:
    writer.close()
    if isinstance(writer, asyncio.StreamWriter):
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def peer_of(conn: socket.socket) -> tuple[str, int]:
    try:
        address = conn.getpeername()
    except OSError:
        return ("", 0)
    return (str(address[0]), int(address[1]))


def host_of(value: Any) -> str:
    return str(value[0]) if isinstance(value, tuple) and value else ""


@functools.lru_cache(maxsize=4096)  # a few hosts and peers, each seen request after request
def address_text(value: Any) -> str:
    if isinstance(value, tuple) and len(value) >= 2:
        host = str(value[0])
        return f"[{host}]:{value[1]}" if ":" in host else f"{host}:{value[1]}"
    return ""


@attrs.frozen
class Accepted:
    """What the listener filters learned of a connection (travels with it)."""

    transport: str = "raw_buffer"  # Envoy's default transport protocol
    alpn: tuple[str, ...] = ()
    server_name: str = ""


SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h


def original_destination(conn: socket.socket) -> tuple[str, int] | None:
    """Where a REDIRECTed connection was going (None if it was not redirected)."""
    try:
        raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:
        return None
    return socket.inet_ntoa(raw[4:8]), int.from_bytes(raw[2:4], "big")


IPV6_TRANSPARENT = 75  # linux/in6.h (the socket module lacks it)


@attrs.frozen
class UpstreamSource:
    """original_src: upstream connections leave from the client's address, marked."""

    address: str
    mark: int = 0




def set_transparent(sock: socket.socket, family: int) -> None:
    """IP_TRANSPARENT (needs CAP_NET_ADMIN): accept what TPROXY diverts to a listener, or
    bind an upstream socket to an address that is not this host's."""
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
    else:
        sock.setsockopt(socket.SOL_IP, socket.IP_TRANSPARENT, 1)


async def connect_from(source: UpstreamSource, host: tuple[str, int]) -> socket.socket:
    """A socket connected to ``host`` from the client's address (Envoy's original_src)."""
    family = socket.AF_INET6 if ":" in host[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        set_transparent(sock, family)
        if source.mark:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, source.mark)
        sock.bind((source.address, 0))
        await asyncio.get_running_loop().sock_connect(sock, host)
    except BaseException:
        sock.close()
        raise
    return sock


def listening_socket(host: str, port: int, transparent: bool = False,
                      reuse_port: bool = False, mark: int = 0) -> socket.socket:
    """A non-blocking listening TCP socket (``mark``: its packets' SO_MARK)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if mark:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        if transparent:
            set_transparent(sock, family)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:  # --concurrency: every process listens, the kernel spreads
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def peek_first(conn: socket.socket, bound: int, enough: Callable[[bytes], bool],
                settle: float = 1.0) -> bytes:
    """The first bytes of a connection without consuming them (Envoy's inspectors peek
    too): wait for the first, then for more until ``enough`` or ``settle`` seconds."""
    loop = asyncio.get_running_loop()
    data = b""
    deadline: float | None = None
    while len(data) < bound:
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(conn.fileno(), _resolve, ready)
        try:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            await asyncio.wait_for(ready, timeout)
        except TimeoutError:
            break
        finally:
            loop.remove_reader(conn.fileno())
        peeked = conn.recv(bound, socket.MSG_PEEK)
        if not peeked or len(peeked) == len(data):
            break  # closed, or nothing new (the same bytes peeked again)
        data = peeked
        if enough(data):
            break
        deadline = deadline or loop.time() + settle
    return data


async def accept_into(conn: socket.socket, context: ssl.SSLContext | None,
                    protocol: asyncio.BaseProtocol) -> asyncio.BaseTransport:
    """An accepted socket's transport to ``protocol``, after the TLS handshake with
    ``context``."""
    options: dict[str, Any] = {"ssl": context, "ssl_handshake_timeout": 10} \
        if context is not None else {}
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
        lambda: protocol, conn, **options)
    return transport


async def open_streams(conn: socket.socket, context: ssl.SSLContext | None,
                       protocol_for: Callable[[asyncio.StreamReader],
                                              asyncio.StreamReaderProtocol]
                       = asyncio.StreamReaderProtocol,
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Reader and writer for an accepted socket, after the TLS handshake with ``context``
    (``protocol_for``: a reader's protocol of another kind, as HTTP/2's ``Pushed``)."""
    reader = asyncio.StreamReader(limit=READ_SIZE)
    protocol = protocol_for(reader)
    transport = await accept_into(conn, context, protocol)
    return reader, asyncio.StreamWriter(transport, protocol, reader,  # type: ignore[arg-type]
                                        asyncio.get_running_loop())


def set_keepalive(sock: socket.socket, keepalive: Keepalive) -> None:
    """TCP keepalive on an upstream socket (the cluster's ``tcp_keepalive``; what it leaves
    at 0 keeps the system's value)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in ((socket.TCP_KEEPCNT, keepalive.probes),
                          (socket.TCP_KEEPIDLE, keepalive.time),
                          (socket.TCP_KEEPINTVL, keepalive.interval)):
        if value:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


T = TypeVar("T")
CLONE_NEWNET = 0x40000000  # linux/sched.h
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, what: str) -> None:
    # Python 3.11 has no os.setns; setns(2) moves only the calling thread.
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns({what}): {os.strerror(err)}")


async def in_netns(netns_fd: int, fn: Callable[[], T]) -> T:
    """``fn()`` run inside the network namespace ``netns_fd`` refers to, and its result.

    A namespace belongs to a thread, not a process, so ``fn`` runs on a thread of its own that
    enters the namespace, calls ``fn`` and goes back to its own namespace before it ends;
    the event loop's threads never move. A socket ``fn`` creates stays in the namespace it
    was created in, whichever thread uses it later: that is how ztunnel listens inside a pod.
    Needs CAP_SYS_ADMIN; raises ``OSError`` when the namespace cannot be entered, or what
    ``fn`` raised.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(netns_fd, f"fd {netns_fd}")
                try:
                    result = fn()
                finally:
                    _setns(home, "the thread's own namespace")
            finally:
                os.close(home)
        except BaseException as exc:
            error = exc
        loop.call_soon_threadsafe(settle, result, error)

    worker = threading.Thread(target=run, name=f"in-netns-{netns_fd}", daemon=True)
    worker.start()
    try:
        return await asyncio.shield(done)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, worker.join)
