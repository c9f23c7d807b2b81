"""gRPC calls over the native proxy's HTTP/2 (``http2.Connection``), for the processes that
must stay small and already carry HTTP/2: the native proxy (its ADS and SDS streams) and
ztunnel (WDS and its certificates). grpcio's runtime alone is ~20 MB of a process; this is
the part of gRPC those clients use: unary calls and bidirectional streams of protobuf
messages, on one connection a channel.

The wire (gRPC over HTTP/2): a ``POST`` of ``application/grpc`` to ``/Service/Method``
with ``te: trailers``; each message framed as one byte (compressed: never, as nothing is
negotiated) and a four-byte big-endian length; the call's outcome in the trailers'
``grpc-status`` and percent-encoded ``grpc-message``, or in the head alone when the server
answers at once ("trailers-only"). A connection over TLS offers ALPN ``h2``, as gRPC
servers require; a unix socket (``unix:PATH``) speaks HTTP/2 with prior knowledge.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote

from pilotfish.core.native import http1, http2, tls

MAX_MESSAGE = 64 << 20  # larger than any config discovery sends; grpcio's default is 4 MiB
# gRPC's status codes by number, named as grpcio names them
STATUS = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
          "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
          "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
          "UNAUTHENTICATED")
# gRPC's mapping of an HTTP status that is not 200 (the answer did not come from gRPC)
HTTP_STATUS = {400: "INTERNAL", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
               404: "UNIMPLEMENTED", 429: "UNAVAILABLE", 502: "UNAVAILABLE",
               503: "UNAVAILABLE", 504: "UNAVAILABLE"}
CONNECT_TIMEOUT = 10.0  # to reach the server and finish the TLS handshake
CLOSE_TIMEOUT = 1.0  # for the TLS shutdown when the channel is done



class Proto(Protocol):
    """A message as the channel handles it: protobuf's, or ``core/protowire.py``'s for
    ztunnel, which does not load the protobuf runtime."""

    def SerializeToString(self) -> bytes: ...

    @classmethod
    def FromString(cls, data: bytes, /) -> Any: ...


M = TypeVar("M", bound=Proto)


class GrpcError(Exception):
    """A call that did not end OK: ``code`` is the status's name (``UNAVAILABLE``),
    ``details`` the server's message or what went wrong on the way."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code, self.details = code, details


def client_tls(roots: bytes, chain: bytes | None = None, key: bytes | None = None
               ) -> ssl.SSLContext:
    """TLS to a gRPC server: its certificate checked against ``roots`` and the name the
    channel is given; with ``chain`` and ``key``, ours presented (mutual TLS)."""
    context = ssl.create_default_context(cadata=roots.decode())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    if chain and key:
        tls.load_identity(context, chain, key)
    return context


def frame(message: Proto) -> bytes:
    data: bytes = message.SerializeToString()
    return struct.pack(">BI", 0, len(data)) + data


def call_status(headers: Sequence[tuple[str, str]]) -> tuple[str, str] | None:
    """(code name, details) from a trailers block or a trailers-only head; None if absent."""
    values = dict(headers)
    if "grpc-status" not in values:
        return None
    number = values["grpc-status"]
    code = STATUS[int(number)] if number.isdigit() and int(number) < len(STATUS) \
        else "UNKNOWN"
    return code, unquote(values.get("grpc-message", ""))


class Reframer:
    """Messages out of a stream's bytes, however the frames cut them (sans-IO)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        out = []
        while len(self.buffer) >= 5:
            compressed, length = struct.unpack_from(">BI", self.buffer)
            if compressed:
                raise GrpcError("INTERNAL", "a compressed message, and no compression was "
                                            "asked for")
            if length > MAX_MESSAGE:
                raise GrpcError("RESOURCE_EXHAUSTED", f"a message of {length} bytes, more "
                                                      f"than {MAX_MESSAGE}")
            if len(self.buffer) < 5 + length:
                break
            out.append(bytes(self.buffer[5:5 + length]))
            del self.buffer[:5 + length]
        return out


class Channel:
    """One HTTP/2 connection to a gRPC server at ``target`` (``host:port``, ``[v6]:port``,
    ``unix:PATH``), over TLS with ``context`` (checked against ``server_name``), in clear
    without. TLS goes over a unix socket too: the agent's xDS relay passes the proxy's
    bytes on to discovery as they are. Used as ``async with``; a call on a lost connection
    fails ``UNAVAILABLE``."""

    def __init__(self, target: str, context: ssl.SSLContext | None = None,
                 server_name: str = "") -> None:
        self.target, self.context, self.server_name = target, context, server_name
        self.connection: http2.Connection | None = None

    @property
    def authority(self) -> str:
        if self.server_name:
            return self.server_name
        return "localhost" if self.target.startswith("unix:") else self.target

    async def __aenter__(self) -> Channel:
        try:
            if self.target.startswith("unix:"):
                path = self.target.removeprefix("unix:")
                path = path.removeprefix("//") if path.startswith("///") else path
                async with asyncio.timeout(CONNECT_TIMEOUT):  # TLS too: a relay's socket
                    reader, writer = await asyncio.open_unix_connection(
                        path, ssl=self.context,
                        server_hostname=self.server_name if self.context else None)
            else:
                host, _, port = self.target.rpartition(":")
                if not port.isdigit():
                    raise GrpcError("UNAVAILABLE", f"{self.target!r} is not HOST:PORT or "
                                                   "unix:PATH")
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    reader, writer = await asyncio.open_connection(
                        host.strip("[]"), int(port), ssl=self.context,
                        server_hostname=(self.server_name or host.strip("[]"))
                        if self.context else None)
        except TimeoutError:
            raise GrpcError("UNAVAILABLE", f"cannot connect to {self.target} in "
                                           f"{CONNECT_TIMEOUT} s") from None
        except OSError as exc:  # ssl.SSLError included
            raise GrpcError("UNAVAILABLE", f"cannot connect to {self.target}: "
                                           f"{exc.strerror or exc}") from None
        if self.context is not None:
            ssl_object = writer.get_extra_info("ssl_object")
            if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
                writer.close()
                raise GrpcError("UNAVAILABLE", f"{self.target} did not agree to HTTP/2 "
                                               "(ALPN h2)")
        self.connection = http2.Connection(reader, writer, client=True)
        self.connection.run()
        return self

    async def __aexit__(self, *exc: object) -> None:
        connection, self.connection = self.connection, None
        if connection is None:
            return
        try:
            # a peer that never answers TLS's close_notify (grpcio's on a unix socket)
            # would hold asyncio's shutdown for 30 s
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await connection.close()
        except TimeoutError:
            connection.writer.transport.abort()

    def _request(self, method: str, metadata: Sequence[tuple[str, str]],
                 timeout: float | None, body: bytes = b"") -> http1.Message:
        headers = [("host", self.authority), ("content-type", "application/grpc"),
                   ("te", "trailers"), ("user-agent", "pilotfish-grpc")]
        if timeout is not None:
            headers.append(("grpc-timeout", f"{max(1, int(timeout * 1000))}m"))
        return http1.Message([*headers, *metadata], body, "POST", method, version="2")

    def _live(self) -> http2.Connection:
        if self.connection is None or self.connection.closed:
            raise GrpcError("UNAVAILABLE", f"the connection to {self.target} is closed")
        return self.connection

    @property
    def _scheme(self) -> str:
        return "https" if self.context is not None else "http"

    async def unary(self, method: str, request: Proto, response_type: type[M],
                    metadata: Sequence[tuple[str, str]] = (), timeout: float | None = None
                    ) -> M:
        """One request, one response (``GrpcError`` unless the call ends OK)."""
        connection = self._live()
        try:
            async with asyncio.timeout(timeout):
                answer = await connection.request(
                    self._request(method, metadata, timeout, frame(request)), self._scheme)
        except TimeoutError:
            raise GrpcError("DEADLINE_EXCEEDED", f"{method} took longer than {timeout} s"
                            ) from None
        except http2.StreamError as exc:
            raise GrpcError("UNAVAILABLE", f"{method} at {self.target}: {exc}") from None
        if answer.status != 200:
            raise GrpcError(HTTP_STATUS.get(answer.status, "UNKNOWN"),
                            f"{method} at {self.target}: HTTP status {answer.status}")
        code, details = call_status(answer.trailers) or call_status(answer.headers) or (
            "UNKNOWN", "the answer carried no grpc-status")
        if code != "OK":
            raise GrpcError(code, details)
        messages = Reframer().feed(answer.body)
        if len(messages) != 1:
            raise GrpcError("INTERNAL", f"{method} answered {len(messages)} messages, not 1")
        return _decoded(response_type, messages[0], method)

    async def stream(self, method: str, requests: AsyncIterator[Proto],
                     response_type: type[M],
                     metadata: Sequence[tuple[str, str]] = ()) -> AsyncIterator[M]:
        """A bidirectional stream: ``requests`` are sent as they come (the stream's side
        is closed when they end), responses yielded as they arrive; ``GrpcError`` when the
        call ends other than OK, or the connection does."""
        connection = self._live()
        stream = connection.open(self._request(method, metadata, None), self._scheme)
        sending = asyncio.get_running_loop().create_task(
            self._send(connection, stream.id, requests))
        try:
            await stream.responded.wait()
            status = stream.pseudo(":status")
            if stream.error:
                raise GrpcError("UNAVAILABLE", f"{method} at {self.target}: {stream.error}")
            if status != "200":
                raise GrpcError(HTTP_STATUS.get(int(status), "UNKNOWN") if status.isdigit()
                                else "UNKNOWN",
                                f"{method} at {self.target}: HTTP status {status}")
            reframer = Reframer()
            while data := await connection.read(stream):
                for message in reframer.feed(data):
                    yield _decoded(response_type, message, method)
            if stream.error:
                raise GrpcError("UNAVAILABLE", f"{method} at {self.target}: {stream.error}")
            code, details = call_status(stream.trailers) or call_status(stream.headers) or (
                "INTERNAL", "the stream ended without a grpc-status")
            if code != "OK":
                raise GrpcError(code, details)
        finally:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sending
            connection.end(stream.id, reset=True)  # a no-op once both sides are closed
            connection.release(stream.id)

    @staticmethod
    async def _send(connection: http2.Connection, stream_id: int,
                    requests: AsyncIterator[Any]) -> None:
        with contextlib.suppress(http2.StreamError):
            async for request in requests:
                await connection.write(stream_id, frame(request))
            await connection.finish(stream_id)


def _decoded(response_type: type[M], message: bytes, method: str) -> M:
    """``message`` as ``response_type``; one that does not decode ends the call as gRPC's
    own clients end it (INTERNAL), so callers see a ``GrpcError`` as for any failed call
    (an xDS client then reconnects) rather than the codec's exception."""
    try:
        decoded: M = response_type.FromString(message)
    except Exception as exc:  # protobuf's DecodeError, protowire's WireError, ...
        raise GrpcError("INTERNAL", f"{method}: a response that does not decode as "
                        f"{response_type.__name__}: {exc}") from None
    return decoded
