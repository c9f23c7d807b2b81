"""A small HTTP/1.1 server on h11 and anyio, for pilotfish's own endpoints.

Debug and status endpoints (discovery's 15014, the agent's 15020/15021) need routing by
path, JSON/text bodies, keep-alive and bounded reads — nothing more. h11 does the protocol;
this module only moves bytes and dispatches. A response may also stream its body (chunked:
the test kit's Kubernetes API server streams watch events), and a server may speak TLS.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.abc
import attrs
import h11

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
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        host, port = parse_address(address)
        tcp = await anyio.create_tcp_listener(local_host=host, local_port=port,
                                              reuse_port=False)
        bound = tcp.extra(anyio.abc.SocketAttribute.local_port)
        listener: anyio.abc.Listener[anyio.abc.ByteStream] = tcp
        if ssl_context is not None:
            # Imported here: most servers (ztunnel's three) are plaintext, and anyio's TLS
            # streams cost a process most of a megabyte.
            from anyio.streams.tls import TLSListener

            listener = TLSListener(tcp, ssl_context, standard_compatible=False)
        task_status.started(bound)
        async with listener:
            await listener.serve(self._connection)

    async def serve_unix(
        self, path: str, *, mode: int = 0o600,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve on a unix socket at ``path`` (a stale one is replaced; only the owner may
        connect unless ``mode`` says otherwise); the socket is removed on the way out."""
        import os
        from pathlib import Path

        socket_path = Path(path)
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        socket_path.unlink(missing_ok=True)
        listener = await anyio.create_unix_listener(socket_path)
        os.chmod(socket_path, mode)
        task_status.started()
        try:
            async with listener:
                await listener.serve(self._connection)
        finally:
            socket_path.unlink(missing_ok=True)

    async def _connection(self, stream: anyio.abc.ByteStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            remote = stream.extra(anyio.abc.SocketAttribute.remote_address)
            if isinstance(remote, tuple):
                host = str(remote[0])
                peer = f"[{host}]:{remote[1]}" if ":" in host else f"{host}:{remote[1]}"
            else:
                peer = str(remote)
        except Exception:
            peer = ""
        async with stream:
            while True:
                try:
                    with anyio.fail_after(READ_TIMEOUT):
                        request = await self._read_request(conn, stream, peer)
                except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError,
                        ConnectionError):
                    return
                except h11.RemoteProtocolError as exc:
                    await self._send(conn, stream, Response.text(f"bad request: {exc}\n", 400))
                    return
                if request is None:
                    return
                response = await self.dispatch(request)
                try:
                    await self._send(conn, stream, response)
                except (anyio.BrokenResourceError, ConnectionError, h11.LocalProtocolError):
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
        self, conn: h11.Connection, stream: anyio.abc.ByteStream, peer: str
    ) -> Request | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive(65536)
                except anyio.EndOfStream:
                    data = b""
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
        self, conn: h11.Connection, stream: anyio.abc.ByteStream, response: Response
    ) -> None:
        length = [] if response.stream else [("content-length", str(len(response.body)))]
        headers = [("content-type", response.content_type), *length, *response.headers]
        data = conn.send(h11.Response(status_code=response.status, headers=headers))
        if response.stream is not None:
            try:
                await stream.send(data)
                async for chunk in response.stream:
                    await stream.send(conn.send(h11.Data(data=chunk)) or b"")
                await stream.send(conn.send(h11.EndOfMessage()) or b"")
            finally:  # a generator's clean-up runs now, not whenever it is collected
                aclose = getattr(response.stream, "aclose", None)
                if aclose is not None:
                    with anyio.CancelScope(shield=True):
                        await aclose()
            return
        data += conn.send(h11.Data(data=response.body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        await stream.send(data)
