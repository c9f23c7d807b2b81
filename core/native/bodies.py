"""Bodies passed on as they come: an upload from an HTTP/1.1 connection or an HTTP/2
stream sent to an HTTP/1.1 upstream while its answer is awaited, or to an HTTP/2 upstream
on its stream; an HTTP/2 upstream's long answer read from its stream as the client takes
it (`H2Answer`), a short one whole.
"""

from __future__ import annotations

import asyncio

from pilotfish.core.native import http1, http1_codec, http2
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
    chunked = http1_codec.chunked_body(request)
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
            response = await connection.exchange(http1_codec.request_bytes(request), False, limit,
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


async def send_h2_body(connection: http2.Connection, stream_id: int,
                       request: http1.Message) -> None:
    """A request's body on its HTTP/2 stream (a streamed one as it comes), then the end
    of the stream with its trailers; stream flow control paces it."""
    source = request.body_source
    if source is None:
        if request.body:
            await connection.write(stream_id, request.body)
    else:
        try:
            while data := await source.chunk():
                await connection.write(stream_id, data)
        except (EOFError, http1.ParseError) as exc:
            connection.end(stream_id, reset=True)
            raise DownstreamGone(str(exc)) from exc
    await connection.finish(stream_id, request.trailers)


def long_answer(answer: http1.Message, over: int) -> bool:
    """Whether an answer's body is passed on as it comes: longer than ``over``, or of a
    length not given (a stream that may never end: server-sent events)."""
    if answer.status < 200 or answer.status in (204, 304):
        return False
    length = answer.header("content-length") or ""
    return not length.isdigit() or int(length) > over


async def read_h2_answer(connection: http2.Connection, stream: http2.Stream) -> bytes:
    """A short answer's whole body (``BodyTooLarge`` past ``MAX_BODY``)."""
    parts, size = [], 0
    while data := await connection.read(stream):
        size += len(data)
        if size > http1.MAX_BODY:
            raise BodyTooLarge(f"answer larger than {http1.MAX_BODY} bytes")
        parts.append(data)
    if stream.error:
        raise http2.StreamError(stream.error)
    return b"".join(parts)


class H2Answer:
    """The rest of an HTTP/2 upstream's answer, read from its stream as it is taken; the
    stream is let go at its end, and reset when the rest is not wanted."""

    def __init__(self, connection: http2.Connection, stream: http2.Stream) -> None:
        self.connection, self.stream = connection, stream
        self.taken = 0

    async def chunk(self) -> bytes:
        data = await self.connection.read(self.stream)
        if not data:
            self.connection.release(self.stream.id)
            if self.stream.error:
                raise EOFError(self.stream.error)
        self.taken += len(data)
        return data

    def close(self) -> None:
        self.connection.end(self.stream.id, reset=True)
        self.connection.release(self.stream.id)
