"""Request bodies passed on as they come: an upload from an HTTP/1.1 connection or an
HTTP/2 stream sent to an HTTP/1.1 upstream while its answer is awaited, or read whole for
an upstream that cannot take it as it comes.
"""

from __future__ import annotations

import asyncio

from pilotfish.core.native import http1, http2
from pilotfish.core.native.connection import Http1Connection

# An upstream answer longer than this, or of unknown length, is passed on as it comes
# rather than collected first (Envoy streams every body; a server-sent-events stream never
# ends, a download may not fit in memory).
STREAM_OVER = 1024 * 1024


class BodyTooLarge(Exception):
    """A body to read whole is longer than the proxy holds."""


class DownstreamGone(Exception):
    """The client stopped sending the body it was streaming."""


async def send_body(connection: Http1Connection, request: http1.Message
                     ) -> Exception | None:
    """A streamed request's body, passed upstream as it comes (chunked when it has no
    length of its own); reads pause while the upstream is slow to take it. Returns what
    stopped the upstream writes (None: all sent). A client that breaks off closes the
    upstream connection, which ends the exchange waiting for the answer."""
    source = request.body_source
    assert source is not None
    chunked = http1.chunked_body(request)
    try:
        while True:
            try:
                data = await source.chunk()
            except (EOFError, http1.ParseError) as exc:
                connection.close()
                return DownstreamGone(str(exc))
            if not data:
                break
            connection.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
            await connection.drain()
        if chunked:
            connection.write(b"0\r\n\r\n")
    except OSError as exc:  # the upstream stopped reading; its answer may still come
        return exc
    return None


async def exchange_streamed(connection: Http1Connection, request: http1.Message,
                             limit: float) -> http1.Message:
    """The head, then the body as it comes while the answer is awaited: an upstream may
    answer before it has read the body (a refusal); the rest is then not sent, and the
    connection is not used again."""
    failure: Exception | None = None
    async with asyncio.TaskGroup() as tasks:
        sending = tasks.create_task(send_body(connection, request))
        try:
            response = await connection.exchange(http1.request_bytes(request), False, limit,
                                                  STREAM_OVER)
        except Exception as exc:  # raised once the body's task is done with
            failure = exc
        early = not sending.done()
        if early:
            sending.cancel()
    stopped = None if sending.cancelled() else sending.result()
    if isinstance(stopped, DownstreamGone):
        raise stopped
    if failure is not None:
        raise failure
    if early or stopped is not None:
        response.keep_alive = False  # what is on the wire now is half a request
    return response


async def buffer_body(request: http1.Message) -> None:
    """A streamed request's body read whole, for an upstream it cannot stream to (up to
    ``MAX_BODY``)."""
    source = request.body_source
    assert source is not None
    parts, size = [], 0
    while data := await source.chunk():
        size += len(data)
        if size > http1.MAX_BODY:
            raise BodyTooLarge(f"request body larger than {http1.MAX_BODY} bytes")
        parts.append(data)
    request.body, request.streamed, request.body_source = b"".join(parts), False, None


class H2Body:
    """A long upload on an HTTP/2 stream, read as it comes (for an HTTP/1.1 upstream)."""

    def __init__(self, connection: http2.Connection, stream: http2.Stream) -> None:
        self.connection, self.stream = connection, stream
        self.taken = 0

    async def chunk(self) -> bytes:
        data = await self.connection.read(self.stream)
        if not data and self.stream.error:
            raise EOFError(self.stream.error)
        self.taken += len(data)
        return data

    def close(self) -> None:
        self.connection.end(self.stream.id, reset=True)


def body_received(request: http1.Message) -> int:
    """The request body's size, as far as it was taken when it streamed."""
    return request.body_source.taken if request.body_source is not None else len(request.body)


async def collect_body(connection: http2.Connection, stream: http2.Stream
                   ) -> tuple[bytes, list[tuple[str, str]]]:
    """A streamed request's body and trailers, whole (for an HTTP/1.1 upstream)."""
    body = bytearray()
    while data := await connection.read(stream):
        body += data
        if len(body) > http2.MAX_BODY:
            raise http2.StreamError(f"body larger than {http2.MAX_BODY} bytes")
    if stream.error:
        raise http2.StreamError(stream.error)
    return bytes(body), list(stream.trailers)
