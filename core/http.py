"""A small HTTP/1.1 server on h11 and asyncio's streams, for pilotfish's own endpoints.

Debug and status endpoints (discovery's 15014, the agent's 15020/15021) need routing by
path, JSON/text bodies, keep-alive and bounded reads — nothing more. h11 does the protocol;
this module only moves bytes and dispatches. A response may also stream its body (chunked:
the test kit's Kubernetes API server streams watch events), and a server may speak TLS.

It runs on asyncio itself, not anyio: ztunnel serves three of these and loads no anyio
(1.8 MiB of its RSS, issue 13's target); anyio's task groups on the asyncio backend start
it as before (``task_status``) and cancel it as any asyncio task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import attrs
import h11

from pilotfish.core.tasks import shielded

log = logging.getLogger("pilotfish.http")

MAX_BODY = 1024 * 1024
READ_TIMEOUT = 30.0


@attrs.frozen
class Request:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes = b""
    peer: str = ""  # "host:port" ("[v6]:port")
    query_string: str = ""  # as sent: parse_qs drops valueless keys such as ?usedonly


    @property
    def peer_host(self) -> str:
        """The peer's address without the port."""
        return self.peer.rpartition(":")[0].strip("[]")


@attrs.frozen
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    # Sent chunk by chunk (chunked encoding) instead of ``body``. An exception from it drops
    # the connection mid-body, as a peer sees a server that went away.
    stream: AsyncIterator[bytes] | None = None

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Response:
        return cls(status, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode(),
                   "application/json")

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        return cls(status, text.encode())


Handler = Callable[[Request], Awaitable[Response]]


class TaskStatus(Protocol):
    """What ``serve`` reports its start to: anyio's ``TaskStatus`` (``task_group.start``)
    is one."""

    def started(self, value: Any = None) -> None: ...


class _NotWatched:
    def started(self, value: Any = None) -> None:
        """Nobody waits for the start."""


NOT_WATCHED = _NotWatched()


def parse_address(address: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``host:port``, ``:port`` or ``[v6]:port`` → (host, port), with a clear error."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address {address!r}: expected HOST:PORT, for example 127.0.0.1:15014")
    host = host.strip("[]") or default_host
    return host, int(port)


class HttpServer:
    def __init__(self, routes: Mapping[str, Handler], fallback: Handler | None = None,
                 max_body: int = MAX_BODY) -> None:
        self.routes = dict(routes)
        self.fallback = fallback
        self.max_body = max_body

    async def dispatch(self, request: Request) -> Response:
        handler = self.routes.get(request.path, self.fallback)
        if handler is None:
            known = "\n".join(sorted(self.routes))
            return Response.text(f"404 not found: {request.path}\nknown paths:\n{known}\n", 404)
        try:
            return await handler(request)
        except Exception as exc:  # a handler bug must not take the server down
            log.exception("handler for %s failed", request.path)
            return Response.text(f"internal error: {exc}\n", 500)

    async def serve(
        self, address: str, *, ssl_context: ssl.SSLContext | None = None,
        task_status: TaskStatus = NOT_WATCHED,
    ) -> None:
        """Serve on ``address`` until cancelled; ``task_status`` hears the bound port."""
        host, port = parse_address(address)
        bound = _bind_numeric(host, port, address)
        where: dict[str, Any] = {"sock": bound} if bound else {"host": host, "port": port}
        async with asyncio.TaskGroup() as connections:
            server = await asyncio.start_server(
                self._accepted(connections), **where, ssl=ssl_context,
                ssl_handshake_timeout=READ_TIMEOUT if ssl_context is not None else None)
            try:
                task_status.started(server.sockets[0].getsockname()[1])
                await asyncio.get_running_loop().create_future()  # until cancelled
            finally:
                server.close()

    async def serve_unix(
        self, path: str, *, mode: int = 0o600, task_status: TaskStatus = NOT_WATCHED,
    ) -> None:
        """Serve on a unix socket at ``path`` (a stale one is replaced; only the owner may
        connect unless ``mode`` says otherwise); the socket is removed on the way out."""
        import os
        from pathlib import Path

        socket_path = Path(path)
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        socket_path.unlink(missing_ok=True)
        try:
            async with asyncio.TaskGroup() as connections:
                server = await asyncio.start_unix_server(self._accepted(connections),
                                                         str(socket_path))
                try:
                    os.chmod(socket_path, mode)
                    task_status.started()
                    await asyncio.get_running_loop().create_future()  # until cancelled
                finally:
                    server.close()
        finally:
            socket_path.unlink(missing_ok=True)

    def _accepted(self, connections: asyncio.TaskGroup
                  ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], None]:
        """The streams' callback: each connection a task of the server's group, so that
        none outlives the server."""
        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.create_task(self._connection(reader, writer))
        return accepted

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        remote = writer.get_extra_info("peername")
        if isinstance(remote, tuple):
            host = str(remote[0])
            peer = f"[{host}]:{remote[1]}" if ":" in host else f"{host}:{remote[1]}"
        else:
            peer = str(remote or "")
        try:
            await self._exchange(reader, writer, peer)
        except Exception:  # one connection's failure must not take the server down
            log.exception("HTTP connection from %s failed", peer)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        peer: str) -> None:
        """Requests and responses on one connection until either side ends it."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        while True:
            try:
                async with asyncio.timeout(READ_TIMEOUT):
                    request = await self._read_request(conn, reader, peer)
            except (TimeoutError, ConnectionError, ssl.SSLError):
                return
            except h11.RemoteProtocolError as exc:
                with contextlib.suppress(ConnectionError, ssl.SSLError):
                    await self._send(conn, writer, Response.text(f"bad request: {exc}\n", 400))
                return
            if request is None:
                return
            response = await self.dispatch(request)
            try:
                await self._send(conn, writer, response)
            except (ConnectionError, ssl.SSLError, h11.LocalProtocolError):
                return
            except Exception:  # a streamed body broke off: so does the connection
                log.debug("streamed response to %s broke off", request.path, exc_info=True)
                return
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, peer: str
    ) -> Request | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                if not data and head is None:
                    return None
                continue
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.max_body:
                    raise h11.RemoteProtocolError("request body too large", 413)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                target = head.target.decode("latin-1")
                parts = urlsplit(target)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                headers = {k.decode().lower(): v.decode("latin-1") for k, v in head.headers}
                return Request(head.method.decode(), parts.path, query, headers, bytes(body),
                               peer, parts.query)
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, response: Response
    ) -> None:
        length = [] if response.stream else [("content-length", str(len(response.body)))]
        headers = [("content-type", response.content_type), *length, *response.headers]
        data = conn.send(h11.Response(status_code=response.status, headers=headers))
        if response.stream is not None:
            try:
                await _write(writer, data)
                async for chunk in response.stream:
                    await _write(writer, conn.send(h11.Data(data=chunk)) or b"")
                await _write(writer, conn.send(h11.EndOfMessage()) or b"")
            finally:  # a generator's clean-up runs now, not whenever it is collected
                aclose = getattr(response.stream, "aclose", None)
                if aclose is not None:
                    await shielded(aclose())
            return
        data += conn.send(h11.Data(data=response.body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        await _write(writer, data)


def _bind_numeric(host: str, port: int, address: str) -> socket.socket | None:
    """A socket bound to ``host:port`` when the host is an IP address, else None (the loop
    looks the name up). The loop would look a numeric address up too, and that loads the
    IDNA codec (0.2 MiB of ztunnel's RSS, for its three endpoints) for nothing."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.inet_pton(family, host)
    except OSError:
        return None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {address}: {exc.strerror}") from None
    return sock


async def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()

