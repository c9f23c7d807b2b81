"""echo-basic's HTTP servers: the bytes around `pilotfish.demo.echo_basic`'s answers.

HTTP/1.1 is h11, HTTP/2 is h2, WebSockets wsproto (all sans-IO); anyio moves the bytes.
Ports as the Go server: ``HTTP_PORT`` HTTP/1.1, ``H2C_PORT`` HTTP/2 with prior knowledge
(or HTTP/1.1), ``HTTPS_PORT`` TLS with ALPN h2 and http/1.1 when a certificate is given.
An HTTP/1.1 WebSocket handshake to ``/ws`` upgrades, and every message is echoed back as
it came (text as text, binary as binary), as the Go server's ``websocket.Copy``.
"""

from __future__ import annotations

import contextlib
import http
import logging
import socket
import ssl
import struct
from collections.abc import Mapping
from functools import partial
from typing import Any

import anyio
import anyio.abc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h11
import wsproto.connection
import wsproto.events
import wsproto.utilities
from anyio.streams.tls import TLSAttribute, TLSListener

from pilotfish.demo import echo_basic
from pilotfish.demo.echo_basic import Context, Request, RetrySimulation, TlsInfo

log = logging.getLogger("pilotfish.demo.echo")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_BODY = 4 * 1024 * 1024  # request bodies are read and dropped; beyond this, 413
READ_TIMEOUT = 60.0
_SERVER_NAME = "_pilotfish_server_name"


def tls_context(cert: str, key: str, client_cas: str = "",
                alpn: tuple[str, ...] = ("h2", "http/1.1")) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    if client_cas:  # verify a client certificate when one is given (Go's VerifyClientCertIfGiven)
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(client_cas)

    def remember_name(ssl_object: Any, name: str | None, _: ssl.SSLContext) -> None:
        with contextlib.suppress(AttributeError):
            setattr(ssl_object, _SERVER_NAME, name or "")

    context.sni_callback = remember_name
    return context


def tls_info(stream: anyio.abc.ByteStream) -> TlsInfo | None:
    ssl_object = stream.extra(TLSAttribute.ssl_object, None)
    if ssl_object is None:
        return None
    peer = ssl_object.getpeercert(binary_form=True)
    cipher = ssl_object.cipher()
    return TlsInfo(
        version=ssl_object.version() or "", server_name=getattr(ssl_object, _SERVER_NAME, ""),
        negotiated_protocol=ssl_object.selected_alpn_protocol() or "",
        cipher_suite=echo_basic.go_cipher(cipher[0] if cipher else ""),
        peer_certificates=(ssl.DER_cert_to_PEM_cert(peer),) if peer else ())


def said(request: Request, stream: anyio.abc.ByteStream) -> None:
    """The line echo-basic logs for every request, which the suite's mirror tests look for
    in the pod's log."""
    peer = stream.extra(anyio.abc.SocketAttribute.remote_address, "")
    if isinstance(peer, tuple):  # Go's RemoteAddr: an IPv4 client as such, IPv6 bracketed
        host = str(peer[0]).removeprefix("::ffff:")
        peer = f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    print(f"Echoing back request made to {request.target} to client ({peer})", flush=True)


def reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def reset(stream: anyio.abc.ByteStream) -> None:
    """Close with a TCP RST (SO_LINGER 0), as the Go server's retry simulation does."""
    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
    if raw is not None:  # closing the stream then sends the RST
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class EchoServer:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.retries = RetrySimulation()

    async def serve(self, port: int, *, h2c: bool = False, tls: ssl.SSLContext | None = None,
                    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                    ) -> None:
        listener: anyio.abc.Listener[Any] = await anyio.create_tcp_listener(local_port=port)
        if tls is not None:
            listener = TLSListener(listener, tls, standard_compatible=False,
                                   handshake_timeout=10)
        kind = "https" if tls is not None else "h2c" if h2c else "http"
        print(f"Starting server, listening on port {port} ({kind})", flush=True)
        task_status.started()
        async with listener:
            await listener.serve(partial(self.connection, h2c=h2c))

    async def connection(self, stream: anyio.abc.ByteStream, h2c: bool = False) -> None:
        async with stream:
            try:
                info = tls_info(stream)
                if info is not None:
                    if info.negotiated_protocol == "h2":
                        await self.http2(stream, b"", info)
                    else:
                        await self.http1(stream, b"", info)
                    return
                first = b""
                if h2c:  # prior knowledge, or HTTP/1.1
                    with anyio.fail_after(READ_TIMEOUT):
                        while len(first) < len(PREFACE) and PREFACE.startswith(first):
                            first += await stream.receive(len(PREFACE) - len(first))
                    if first == PREFACE:
                        await self.http2(stream, first, None, h2c=True)
                        return
                await self.http1(stream, first, None, h2c=h2c)
            except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError,
                    anyio.ClosedResourceError, ConnectionError, ssl.SSLError):
                return
            except Exception:  # one connection's bug must not take the server down
                log.exception("connection failed")

    # -- HTTP/1.1 --------------------------------------------------------------------

    async def http1(self, stream: anyio.abc.ByteStream, first: bytes, info: TlsInfo | None,
                    h2c: bool = False) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        if first:
            conn.receive_data(first)
        while True:
            try:
                with anyio.fail_after(READ_TIMEOUT):
                    head = await self._read_request(conn, stream)
            except h11.RemoteProtocolError as exc:
                with contextlib.suppress(h11.LocalProtocolError):
                    body = f"bad request: {exc}".encode()
                    await stream.send(conn.send(h11.Response(
                        status_code=exc.error_status_hint,
                        headers=[("content-length", str(len(body))),
                                 ("connection", "close")])) + (conn.send(h11.Data(body)) or b"")
                        + (conn.send(h11.EndOfMessage()) or b""))
                return
            if head is None:
                return
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers]
            request = Request(
                method=head.method.decode(), target=head.target.decode("latin-1"),
                host=next((v for k, v in headers if k.lower() == "host"), ""),
                proto=f"HTTP/{head.http_version.decode()}",
                headers=tuple((k, v) for k, v in headers if k.lower() != "host"), tls=info)
            if echo_basic.websocket_key(request) and not h2c:
                said(request, stream)
                await self.websocket(conn, stream, echo_basic.websocket_key(request))
                return
            answer = echo_basic.answer(request, self.context, self.retries, h2c_port=h2c)
            said(request, stream)
            if answer.delay > 0:
                await anyio.sleep(answer.delay)
            if answer.reset:
                reset(stream)
                return
            out = [(name, value) for name, value in answer.headers]
            out.append(("Content-Length", str(len(answer.body))))
            data = conn.send(h11.Response(status_code=answer.status, headers=out,
                                          reason=reason(answer.status)))
            if request.method != "HEAD":
                data += conn.send(h11.Data(data=answer.body)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
            await stream.send(data)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    @staticmethod
    async def websocket(conn: h11.Connection, stream: anyio.abc.ByteStream, key: str) -> None:
        """Switch to WebSocket (the handshake's 101 by h11) and echo every message."""
        accept = wsproto.utilities.generate_accept_token(key.encode()).decode()
        await stream.send(conn.send(h11.InformationalResponse(status_code=101, headers=[
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept)])) or b"")
        ws = wsproto.connection.Connection(wsproto.connection.ConnectionType.SERVER)
        leftover, _ = conn.trailing_data
        data = bytes(leftover)
        parts: list[Any] = []
        while True:
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, wsproto.events.Message):
                    parts.append(event.data)
                    if event.message_finished:
                        reply: wsproto.events.Event = (
                            wsproto.events.TextMessage(data="".join(parts))
                            if isinstance(event, wsproto.events.TextMessage)
                            else wsproto.events.BytesMessage(data=b"".join(parts)))
                        parts = []
                        await stream.send(ws.send(reply))
                elif isinstance(event, wsproto.events.Ping):
                    await stream.send(ws.send(event.response()))
                elif isinstance(event, wsproto.events.CloseConnection):
                    with contextlib.suppress(wsproto.utilities.LocalProtocolError):
                        await stream.send(ws.send(event.response()))
                    return
            with anyio.fail_after(READ_TIMEOUT * 5):
                data = await stream.receive(65536)  # EndOfStream: the peer left

    @staticmethod
    async def _read_request(conn: h11.Connection, stream: anyio.abc.ByteStream
                            ) -> h11.Request | None:
        head: h11.Request | None = None
        size = 0
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
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    raise h11.RemoteProtocolError("request body too large", 413)
            elif isinstance(event, h11.EndOfMessage):
                return head
            elif isinstance(event, h11.ConnectionClosed):
                return None

    # -- HTTP/2 ----------------------------------------------------------------------

    async def http2(self, stream: anyio.abc.ByteStream, first: bytes, info: TlsInfo | None,
                    h2c: bool = False) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8", validate_inbound_headers=False))
        conn.initiate_connection()
        lock = anyio.Lock()
        window = anyio.Event()
        pending: dict[int, list[tuple[str, str]]] = {}

        async def flush() -> None:
            data = conn.data_to_send()
            if data:
                await stream.send(data)

        async def respond(stream_id: int, headers: list[tuple[str, str]]) -> None:
            nonlocal window
            pseudo = dict(h for h in headers if h[0].startswith(":"))
            request = Request(
                method=pseudo.get(":method", "GET"), target=pseudo.get(":path", "/"),
                host=pseudo.get(":authority", "") or next(
                    (v for k, v in headers if k == "host"), ""),
                proto="HTTP/2.0",
                headers=tuple((k, v) for k, v in headers
                              if not k.startswith(":") and k != "host"), tls=info)
            answer = echo_basic.answer(request, self.context, self.retries, h2c_port=h2c)
            said(request, stream)
            if answer.delay > 0:
                await anyio.sleep(answer.delay)
            if answer.reset:  # Go's HTTP/2 writer cannot be hijacked: it answers 500
                answer = echo_basic.answer_error(
                    "response writer does not support hijacking")
            out = [(":status", str(answer.status)),
                   *((k.lower(), v) for k, v in answer.headers),
                   ("content-length", str(len(answer.body)))]
            body = answer.body if request.method != "HEAD" else b""
            async with lock:
                with contextlib.suppress(h2.exceptions.StreamClosedError,
                                         h2.exceptions.ProtocolError):
                    conn.send_headers(stream_id, out, end_stream=not body)
                    await flush()
            while body:
                async with lock:
                    try:
                        room = min(conn.local_flow_control_window(stream_id),
                                   conn.max_outbound_frame_size, len(body))
                        if room > 0:
                            conn.send_data(stream_id, body[:room],
                                           end_stream=room == len(body))
                            body = body[room:]
                            await flush()
                    except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                        return
                if body and room <= 0:
                    await window.wait()

        async def feed(tg: anyio.abc.TaskGroup, data: bytes) -> bool:
            """Take in bytes; False once the peer ended the connection."""
            nonlocal window
            async with lock:
                for event in conn.receive_data(data):
                    ended = None
                    if isinstance(event, h2.events.RequestReceived):
                        pending[event.stream_id] = [(str(k), str(v)) for k, v in event.headers]
                        ended = event.stream_ended
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length,
                                                       event.stream_id)
                        ended = event.stream_ended
                    elif isinstance(event, h2.events.StreamEnded):
                        ended = event
                    elif isinstance(event, h2.events.WindowUpdated):
                        window.set()
                        window = anyio.Event()
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        await flush()
                        return False
                    if ended is not None and ended.stream_id in pending:
                        tg.start_soon(respond, ended.stream_id, pending.pop(ended.stream_id))
                await flush()
            return True

        async with anyio.create_task_group() as tg:
            try:
                await flush()
                if first and not await feed(tg, first):
                    return
                while True:
                    with anyio.fail_after(READ_TIMEOUT * 5):
                        data = await stream.receive(65536)
                    if not await feed(tg, data):
                        return
            except (h2.exceptions.ProtocolError, anyio.EndOfStream):
                with contextlib.suppress(Exception):
                    await flush()
            finally:
                tg.cancel_scope.cancel()


def run(env: Mapping[str, str]) -> None:
    context = Context.from_env(env)
    server = EchoServer(context)
    h2c_port = int(env.get("H2C_PORT") or 3001)
    https_port = int(env.get("HTTPS_PORT") or 8443)
    cert, key = env.get("TLS_SERVER_CERT", ""), env.get("TLS_SERVER_PRIVKEY", "")
    tls = tls_context(cert, key, env.get("TLS_CLIENT_CACERTS", "")) if cert and key else None

    async def serve_all() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(partial(server.serve, int(context.http_port)))
            await tg.start(partial(server.serve, h2c_port, h2c=True))
            if tls is not None:
                await tg.start(partial(server.serve, https_port, tls=tls))

    anyio.run(serve_all)


def main(env: Mapping[str, str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        run(env)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"Failed to start listening: {exc}", flush=True)
        return 1
    return 0
