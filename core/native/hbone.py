"""HBONE: TCP connections carried as HTTP/2 CONNECT streams over mutual TLS, as ztunnel and
waypoints carry them between pods (port 15008).

The wire: TLS 1.3 with ALPN ``h2`` and no SNI, each side presenting its workload's SPIFFE
certificate; HTTP/2 with a 4 MiB stream window, a 16 MiB connection window and frames up to
1 MiB; one ``CONNECT`` stream per TCP connection, ``:authority`` the target ``ip:port``
(or ``host:port``), with Istio's ``forwarded``, ``baggage`` and ``traceparent`` headers. The
server answers 200 once it has reached the target, then the stream's DATA frames carry the
bytes both ways; an END_STREAM is the TCP half-close.

The server side (:func:`serve`, :func:`serve_connection`) leaves every decision to a
handler: it hears a :class:`TunnelRequest` (authority, headers, the client's SPIFFE IDs,
the connection's real addresses) and gives back an upstream :class:`Channel` or a status.
The client side (:class:`HbonePool`) keeps connections per source identity and
destination and opens tunnels on them. The HTTP/2 machinery is the native proxy's
(``http2.Connection``), configured for HBONE; the headers are ``hbone_headers``' (sans-IO,
re-exported here).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import h2.events
import h2.exceptions

from pilotfish.core.native import channels, http2, tls, tunnel_relay
from pilotfish.core.native.channels import Channel
from pilotfish.core.native.hbone_headers import (
    baggage,
    forwarded,
    parse_authority,
    parse_baggage,
    traceparent,
)
from pilotfish.core.native.sockets import (
    Keepalive,
    address_text,
    open_streams,
    peer_of,
    set_keepalive,
)
from pilotfish.core.tasks import Tasks, shielded

log = logging.getLogger(__name__)

PORT = 15008
STREAM_WINDOW = 4 << 20  # reference §4.5: ztunnel's HTTP/2 windows and frame size
CONNECTION_WINDOW = 16 << 20
MAX_FRAME = 1 << 20
HANDSHAKE_TIMEOUT = 10.0  # TLS handshake, and a CONNECT's answer
KEEPALIVE = Keepalive(probes=9, time=180, interval=180)  # ztunnel's TCP keepalive

# what http2.Connection is given for an HBONE connection, either side
SETTINGS: dict[str, int] = {"stream_window": STREAM_WINDOW,
                            "connection_window": CONNECTION_WINDOW, "max_frame": MAX_FRAME}


class HboneError(Exception):
    """A tunnel that could not be had: ``status`` is the server's answer when it refused
    the CONNECT (400, 401, 503...), None when no answer came (no connection, a TLS or
    identity failure, the connection lost)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# -- TLS ------------------------------------------------------------------------------------


def _tls13(context: ssl.SSLContext, cert_chain_pem: bytes, key_pem: bytes,
           roots_pem: bytes) -> ssl.SSLContext:
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["h2"])
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cadata=roots_pem.decode())
    except (ssl.SSLError, UnicodeDecodeError) as exc:
        raise ValueError(f"the trust roots are not PEM certificates ({exc})") from None
    tls.load_identity(context, cert_chain_pem, key_pem)
    return context


def server_context(cert_chain_pem: bytes, key_pem: bytes, roots_pem: bytes) -> ssl.SSLContext:
    """The context a workload's 15008 accepts with: its certificate, TLS 1.3 only, ALPN
    ``h2``, a client certificate required that chains to ``roots_pem``. Which identity
    the client has is for authorization to judge (``TunnelRequest.peer_identities``)."""
    return _tls13(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert_chain_pem, key_pem, roots_pem)


def client_context(cert_chain_pem: bytes, key_pem: bytes, roots_pem: bytes) -> ssl.SSLContext:
    """The context a tunnel is originated with: the source workload's certificate, TLS 1.3,
    ALPN ``h2``, the server's chain verified to ``roots_pem``. No host name is checked and
    no SNI sent: the server's identity is its URI SAN, checked after the handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    return _tls13(context, cert_chain_pem, key_pem, roots_pem)


def peer_identities(ssl_object: Any) -> tuple[str, ...]:
    """The URI SANs (SPIFFE IDs) of the peer's verified certificate."""
    certificate = ssl_object.getpeercert() if ssl_object is not None else None
    return tuple(value for kind, value in (certificate or {}).get("subjectAltName", ())
                 if kind == "URI")


def _tune(sock: socket.socket) -> None:
    """ztunnel's socket options: keepalive, and no Nagle delay (a tunnel's small writes,
    a CONNECT's answer or a last DATA frame, would otherwise wait for the peer's delayed
    ACK; asyncio sets TCP_NODELAY only on sockets it connects itself)."""
    with contextlib.suppress(OSError):
        set_keepalive(sock, KEEPALIVE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# -- the server side ------------------------------------------------------------------------


@attrs.frozen
class TunnelRequest:
    """One CONNECT a client sent, with what the connection tells of it."""

    authority: str  # as sent: "10.0.0.5:8080" or "host:port"
    headers: tuple[tuple[str, str], ...]  # the request's own (no pseudo-headers)
    peer_identities: tuple[str, ...]  # the client certificate's URI SANs
    local: tuple[str, int]  # the TCP connection's real destination
    peer: tuple[str, int]  # the TCP peer

    def header(self, name: str) -> str:
        """The first value of header ``name`` ("" when absent)."""
        return next((v for k, v in self.headers if k == name), "")


# An upstream channel, already connected (answered 200 and spliced), or the status to
# refuse the tunnel with (400, 401, 503).
Handler = Callable[[TunnelRequest], Awaitable[Channel | int]]
_ACCEPT_RETRY = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ContextFor = Callable[[tuple[str, int]], ssl.SSLContext | Awaitable[ssl.SSLContext]]


def _address(value: Any) -> tuple[str, int]:
    return (str(value[0]), int(value[1])) if isinstance(value, tuple) else ("", 0)


async def serve_connection(conn: socket.socket, context: ssl.SSLContext,
                           handler: Handler) -> None:
    """One accepted TCP connection: the TLS handshake, then HTTP/2, every CONNECT stream
    handled at once in a task group (anything else is answered 400). Returns when the
    connection ends; its tunnels end with it."""
    local, peer = _address(conn.getsockname()), peer_of(conn)
    _tune(conn)
    try:
        reader, writer = await open_streams(conn, context, http2.Pushed)
    except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
        log.debug("HBONE from %s: TLS handshake failed: %s", address_text(peer), exc)
        conn.close()
        return
    identities = peer_identities(writer.get_extra_info("ssl_object"))
    connection = http2.Connection(reader, writer, client=False, **SETTINGS, fast_data=True)
    try:
        async with Tasks() as tasks:
            def on_event(event: h2.events.Event) -> None:
                if isinstance(event, h2.events.RequestReceived):
                    stream = connection.streams.get(event.stream_id)
                    if stream is not None:
                        request = TunnelRequest(
                            stream.pseudo(":authority"),
                            tuple((k, v) for k, v in stream.headers if not k.startswith(":")),
                            identities, local, peer)
                        tasks.start_soon(_answer(connection, stream, request, handler))

            connection.start()
            await connection.receive(on_event)
            tasks.cancel()  # the connection is gone: so are its tunnels
    finally:
        await shielded(connection.close())


async def _refuse(connection: http2.Connection, stream: http2.Stream, status: int) -> None:
    with contextlib.suppress(Exception):  # the client may have reset the stream already
        await connection.accept(stream.id, status, end=True)
    connection.release(stream.id)


async def _answer(connection: http2.Connection, stream: http2.Stream,
                  request: TunnelRequest, handler: Handler) -> None:
    if stream.pseudo(":method") != "CONNECT" or stream.pseudo(":protocol"):
        await _refuse(connection, stream, 400)
        return
    try:
        parse_authority(request.authority)
    except ValueError as exc:
        log.debug("HBONE from %s: %s", address_text(request.peer), exc)
        await _refuse(connection, stream, 400)
        return
    try:
        answer = await handler(request)
    except Exception:  # one tunnel's failure must not take its connection down
        log.exception("HBONE handler failed for CONNECT %s", request.authority)
        answer = 503
    if isinstance(answer, int):
        await _refuse(connection, stream, answer)
        return
    tunnel = channels.StreamChannel(connection, stream)
    try:
        await connection.accept(stream.id, 200, end=False)
        await relay(tunnel, answer)
    except (http2.StreamError, h2.exceptions.ProtocolError, OSError):
        pass  # the client went away before or during the tunnel
    except Exception:  # a bug in one tunnel must not end the others on its connection
        log.exception("HBONE tunnel to %s failed", request.authority)
    finally:
        await shielded(_close(answer, tunnel))


async def _close(*channels_: Channel) -> None:
    for channel in channels_:
        await channel.close()


async def relay(tunnel: channels.StreamChannel, other: Channel) -> None:
    """Bytes both ways between a tunnel and ``other`` (the app's connection, either side),
    each half close passed on, until both ways ended; a stream that is reset (or whose
    connection goes) ends the relay at once, the other way included. Closing both is the
    caller's. When ``other`` is a socket (counted or not) the bytes move in the callbacks
    that bring them (``tunnel_relay``), with no task woken per message."""
    inner = other.inner if isinstance(other, channels.Counted) else other
    if isinstance(inner, channels.SocketChannel):
        if isinstance(other, channels.Counted):
            await tunnel_relay.relay(tunnel, inner, to_tunnel=other.on_read,
                                     to_app=other.on_written)
        else:
            await tunnel_relay.relay(tunnel, inner)
        return
    async with Tasks() as tasks:
        async def watch() -> None:
            await tunnel.stream.ended.wait()
            if tunnel.stream.error:
                tasks.cancel()

        async def splice() -> None:
            await channels.splice(tunnel, other)
            tasks.cancel()

        tasks.start_soon(watch())
        tasks.start_soon(splice())


async def _accepted(conn: socket.socket, context_for: ContextFor, handler: Handler) -> None:
    peer = address_text(peer_of(conn))
    try:
        chosen = context_for(_address(conn.getsockname()))
        context = await chosen if inspect.isawaitable(chosen) else chosen
    except Exception as exc:  # no certificate for that address (yet): refuse it
        log.warning("HBONE from %s: no server certificate: %s", peer, exc)
        conn.close()
        return
    try:
        await serve_connection(conn, context, handler)
    except Exception:  # a bug in one connection must not stop the listener
        log.exception("HBONE connection from %s failed", peer)


async def serve(listener: socket.socket, context_for: ContextFor, handler: Handler) -> None:
    """Accept HBONE connections on ``listener`` until cancelled. Each connection's server
    certificate is ``context_for(its local address)`` (a context or an awaitable of one):
    ztunnel answers for each pod with that pod's own identity."""
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as tasks:
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except (ConnectionAbortedError, BlockingIOError):  # the client gave up first
                continue
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY:
                    raise
                # out of descriptors or memory for now: accepting again at once would spin
                log.warning("HBONE listener %s: %s", address_text(listener.getsockname()),
                            exc)
                await asyncio.sleep(0.1)
                continue
            tasks.create_task(_accepted(conn, context_for, handler))



# -- the client side: pooled connections ----------------------------------------------------


@attrs.frozen
class PoolKey:
    """What a pooled connection may be shared by (ztunnel's pool key): tunnels from one
    identity and source address, to one destination verified as one of its identities."""

    source_identity: str
    destination_identities: tuple[str, ...]
    source_ip: str
    destination: tuple[str, int]  # where the TCP connection goes (a pod's or waypoint's :15008)


@attrs.frozen
class PoolStatistics:
    connections: int  # open, or being opened
    streams: int  # tunnels open on them


@attrs.define(eq=False)
class _Pooled:
    """One connection of the pool, from the moment it is asked for."""

    key: PoolKey
    ready: asyncio.Future[http2.Connection]
    active: int = 0  # tunnels open on it, or waiting for it to be ready
    retired: bool = False  # no new tunnels: idle too long, or gone
    connection: http2.Connection | None = None
    idle: asyncio.Event = attrs.field(factory=asyncio.Event)  # no tunnels
    busy: asyncio.Event = attrs.field(factory=asyncio.Event)  # some tunnels

    def has_room(self, max_streams: int) -> bool:
        if self.retired:
            return False
        if self.connection is None:
            return self.active < max_streams
        if self.connection.closed:
            return False
        return self.active < min(max_streams,
                                 self.connection.h2.remote_settings.max_concurrent_streams)

    def take(self) -> None:
        self.active += 1
        self.idle.clear()
        self.busy.set()

    def give_back(self) -> None:
        self.active -= 1
        if self.active == 0:
            self.busy.clear()
            self.idle.set()


class PooledChannel(channels.StreamChannel):
    """A tunnel on a pooled connection; :meth:`close` (once both ways ended, or to abandon
    it) frees its stream for another tunnel."""

    def __init__(self, connection: http2.Connection, stream: http2.Stream,
                 entry: _Pooled) -> None:
        super().__init__(connection, stream)
        self._entry: _Pooled | None = entry

    async def close(self) -> None:
        await super().close()
        if self._entry is not None:
            self._entry.give_back()
            self._entry = None


class HbonePool:
    """HBONE tunnels on shared connections: each connection carries up to ``max_streams``
    tunnels of one :class:`PoolKey` (a new one is made when all are full), and is closed
    after ``idle_timeout`` seconds without any (ztunnel's defaults: 100, 5 minutes). A
    connection that dies leaves the pool; its tunnels end with an error.

    The pool owns one task per connection (its reader and idle timer): :meth:`close`
    cancels them and closes every connection, and ``async with HbonePool() as pool`` does
    it on the way out."""

    def __init__(self, *, max_streams: int = 100, idle_timeout: float = 300.0) -> None:
        if max_streams < 1:
            raise ValueError(f"max_streams {max_streams}: at least 1 expected")
        self.max_streams, self.idle_timeout = max_streams, idle_timeout
        self._entries: dict[PoolKey, list[_Pooled]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def __aenter__(self) -> HbonePool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def statistics(self) -> PoolStatistics:
        entries = [e for group in self._entries.values() for e in group]
        return PoolStatistics(len(entries), sum(e.active for e in entries))

    async def open(self, key: PoolKey, authority: str, headers: Sequence[tuple[str, str]],
                   context: Callable[[], ssl.SSLContext],
                   connect: Callable[[tuple[str, int]], Awaitable[socket.socket]]) -> Channel:
        """A tunnel to ``authority`` on a connection for ``key``. A new connection takes
        ``connect(key.destination)`` (the caller picks netns, SO_MARK, source address),
        then TLS with ``context()`` and HTTP/2; the server must prove one of
        ``key.destination_identities`` (else HboneError and the connection is closed). A
        CONNECT the server refuses raises HboneError with its status."""
        if self._closed:
            raise HboneError("the HBONE pool is closed")
        entry = next((e for e in self._entries.get(key, ()) if e.has_room(self.max_streams)),
                     None)
        if entry is None:
            entry = self._dial(key, context, connect)
        entry.take()
        try:
            connection = await asyncio.shield(entry.ready)
            try:
                stream = await asyncio.wait_for(connection.connect(authority, headers),
                                                HANDSHAKE_TIMEOUT)
            except TimeoutError:
                raise HboneError(f"CONNECT {authority} via {address_text(key.destination)}: "
                                 f"no answer in {HANDSHAKE_TIMEOUT:g}s") from None
            except http2.StreamError as exc:
                raise HboneError(f"CONNECT {authority} via {address_text(key.destination)}: "
                                 f"{exc}", exc.status) from None
            except h2.exceptions.ProtocolError as exc:  # the connection could take no stream
                raise HboneError(f"CONNECT {authority} via {address_text(key.destination)}: "
                                 f"{exc or type(exc).__name__}") from None
        except BaseException:
            entry.give_back()
            raise
        return PooledChannel(connection, stream, entry)

    def _dial(self, key: PoolKey, context: Callable[[], ssl.SSLContext],
              connect: Callable[[tuple[str, int]], Awaitable[socket.socket]]) -> _Pooled:
        loop = asyncio.get_running_loop()
        entry = _Pooled(key, loop.create_future())
        # the outcome is for whoever waits; a failure nobody waited for is no warning
        entry.ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._entries.setdefault(key, []).append(entry)
        task = loop.create_task(self._hold(entry, context, connect))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return entry

    async def _hold(self, entry: _Pooled, context: Callable[[], ssl.SSLContext],
                    connect: Callable[[tuple[str, int]], Awaitable[socket.socket]]) -> None:
        """A connection's life: made, read until it ends or idles out, closed."""
        try:
            try:
                connection = await _handshake(entry.key, context, connect)
            except BaseException as exc:
                entry.ready.set_exception(exc if isinstance(exc, HboneError) else HboneError(
                    f"HBONE to {address_text(entry.key.destination)}: "
                    f"{exc or type(exc).__name__}"))
                raise
            entry.connection = connection
            entry.ready.set_result(connection)
            try:
                async with Tasks() as tasks:
                    async def receive() -> None:
                        await connection.receive()
                        tasks.cancel()

                    async def expire() -> None:
                        await self._expire(entry)
                        tasks.cancel()

                    tasks.start_soon(receive())
                    tasks.start_soon(expire())
            finally:
                await shielded(connection.close())
        except (HboneError, OSError, ssl.SSLError, TimeoutError) as exc:
            log.debug("HBONE to %s: %s", address_text(entry.key.destination), exc)
        finally:
            entry.retired = True
            group = self._entries.get(entry.key, [])
            if entry in group:
                group.remove(entry)
            if not group:
                self._entries.pop(entry.key, None)

    async def _expire(self, entry: _Pooled) -> None:
        """Return (the connection to be closed) once it has had no tunnel for
        ``idle_timeout``."""
        while True:
            await entry.idle.wait()
            try:
                async with asyncio.timeout(self.idle_timeout):
                    await entry.busy.wait()
            except TimeoutError:
                if entry.active == 0:
                    entry.retired = True
                    return

    async def close(self) -> None:
        """Close every connection (their tunnels end) and take no more."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _handshake(key: PoolKey, context: Callable[[], ssl.SSLContext],
                     connect: Callable[[tuple[str, int]], Awaitable[socket.socket]]
                     ) -> http2.Connection:
    """TCP (the caller's), TLS, the server's identity checked, HTTP/2 started."""
    sock = await connect(key.destination)
    _tune(sock)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=http2.READ_SIZE)
    try:
        transport, protocol = await loop.create_connection(
            lambda: http2.Pushed(reader), sock=sock, ssl=context(),
            server_hostname="",  # "": no SNI
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    names = peer_identities(writer.get_extra_info("ssl_object"))
    if not set(names) & set(key.destination_identities):
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        raise HboneError(f"HBONE to {address_text(key.destination)}: the server is "
                         f"{list(names) or 'no URI SAN'}, not one of "
                         f"{list(key.destination_identities)}")
    connection = http2.Connection(reader, writer, client=True, **SETTINGS, fast_data=True)
    connection.start()
    return connection


__all__ = ["CONNECTION_WINDOW", "HANDSHAKE_TIMEOUT", "MAX_FRAME", "PORT", "SETTINGS",
           "STREAM_WINDOW", "Handler", "HboneError", "HbonePool", "PoolKey", "PoolStatistics",
           "PooledChannel", "TunnelRequest", "baggage", "client_context", "forwarded",
           "parse_authority", "parse_baggage", "peer_identities", "relay", "serve",
           "serve_connection", "server_context", "traceparent"]
