"""Byte channels the native proxy pipes between: a TCP (or TLS) connection, or one HTTP/2
stream used as a tunnel (CONNECT). Either end of a pipe may be either, so a TCP proxy, a
CONNECT terminated and a CONNECT originated are the same two pipes.

:class:`SocketChannel` is a TCP connection that can also push its bytes to a consumer from
its transport's callbacks (``attach``): ``relay`` moves a tunnel's bytes that way, with no
task woken per message. :class:`Counted` counts a channel's bytes either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Protocol, cast

from pilotfish.core.native import http2

READ_SIZE = 65536


class Channel(Protocol):
    async def read(self) -> bytes:
        """The next bytes; b"" once the other side is done sending."""

    async def write(self, data: bytes) -> None: ...

    def end(self) -> None:
        """No more bytes from us (a half close: the other way may go on)."""

    async def close(self) -> None:
        """Let the transport go: after both ways ended, or to abandon what is left."""


class TcpChannel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def read(self) -> bytes:
        return await self.reader.read(READ_SIZE)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def end(self) -> None:
        with contextlib.suppress(Exception):
            if self.writer.can_write_eof():
                self.writer.write_eof()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


class Consumer(Protocol):
    """Who takes a :class:`SocketChannel`'s bytes as they arrive (``attach``)."""

    def received(self, data: bytes) -> None: ...

    def eof(self) -> None:
        """The peer is done sending (its half close)."""

    def drained(self) -> None:
        """What was written has gone out below the transport's high-water mark."""

    def lost(self) -> None:
        """The connection is gone (reset, aborted, or closed)."""


class SocketChannel(asyncio.Protocol):
    """A TCP connection as a :class:`Channel` (``read`` buffers up to ``limit`` bytes, then
    stops reading the socket until they are taken), or, once a consumer is attached, one
    whose bytes go to it straight from the transport's ``data_received``."""

    def __init__(self, limit: int = 4 * READ_SIZE) -> None:
        self.limit = limit
        self.transport: asyncio.Transport | None = None
        self.lost = False  # the connection is gone
        self.paused = False  # the transport's write buffer is above its high-water mark
        self._buffer = bytearray()
        self._eof = False
        self._reading = True
        self._waiter: asyncio.Future[None] | None = None  # a read() waiting for bytes
        self._drains: list[asyncio.Future[None]] = []  # write()s waiting for the buffer
        self._consumer: Consumer | None = None
        self._closed = asyncio.get_running_loop().create_future()

    @classmethod
    async def of(cls, sock: socket.socket) -> SocketChannel:
        """A channel on a connected (or accepted) socket."""
        _, channel = await asyncio.get_running_loop().create_connection(cls, sock=sock)
        return channel

    # -- the transport's callbacks ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: not a subclass

    def data_received(self, data: bytes) -> None:
        if self._consumer is not None:
            self._consumer.received(data)
            return
        self._buffer += data
        self._wake()
        if len(self._buffer) >= self.limit:
            self.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        if self._consumer is not None:
            self._consumer.eof()
        return True  # keep the connection: the other way may still be sending

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self._eof = True
        self._wake()
        for waiter in self._drains:
            if not waiter.done():
                waiter.set_result(None)
        self._drains.clear()
        if not self._closed.done():
            self._closed.set_result(None)
        if self._consumer is not None:
            self._consumer.lost()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        for waiter in self._drains:
            if not waiter.done():
                waiter.set_result(None)
        self._drains.clear()
        if self._consumer is not None:
            self._consumer.drained()

    @property
    def open(self) -> bool:
        """The transport can still be used (uvloop's raise once closed, even before
        ``connection_lost`` is called)."""
        return not self.lost and self.transport is not None and \
            not self.transport.is_closing()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- reading ------------------------------------------------------------------------------

    def pause_reading(self) -> None:
        if self._reading and self.open:
            assert self.transport is not None
            self._reading = False
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._reading and self.open:
            assert self.transport is not None
            self._reading = True
            self.transport.resume_reading()

    async def read(self) -> bytes:
        while not self._buffer and not self._eof:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = bytes(self._buffer)
        self._buffer.clear()
        self.resume_reading()
        return data

    def attach(self, consumer: Consumer | None) -> None:
        """Push every byte to ``consumer`` from now on (what is buffered first, then the
        end if it came); None goes back to buffering for ``read``."""
        self._consumer = consumer
        if consumer is None:
            return
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            consumer.received(data)
        if self.lost:
            consumer.lost()
        elif self._eof:
            consumer.eof()
        self.resume_reading()

    # -- writing ------------------------------------------------------------------------------

    def write_nowait(self, data: bytes) -> bool:
        """Write ``data``; whether the transport can take more now (False: wait for the
        consumer's ``drained``). Bytes for a connection that is gone are dropped."""
        if not self.open:
            return True
        assert self.transport is not None
        self.transport.write(data)
        return not self.paused

    async def write(self, data: bytes) -> None:
        if not self.open:
            raise ConnectionResetError("the connection is gone")
        assert self.transport is not None
        self.transport.write(data)
        if self.paused:
            waiter = asyncio.get_running_loop().create_future()
            self._drains.append(waiter)
            await waiter
            if self.lost:
                raise ConnectionResetError("the connection is gone")

    def end(self) -> None:
        if self.open:
            assert self.transport is not None
            with contextlib.suppress(Exception):
                if self.transport.can_write_eof():
                    self.transport.write_eof()

    def abort(self) -> None:
        """Reset the connection now (what is unsent is dropped)."""
        if self.transport is not None:
            self.transport.abort()

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            await asyncio.shield(self._closed)


class Counted:
    """A channel whose bytes are counted as they pass: ``on_read(n)`` for what is read
    from it, ``on_written(n)`` for what is written to it."""

    def __init__(self, inner: Channel, on_read: Callable[[int], object],
                 on_written: Callable[[int], object]) -> None:
        self.inner, self.on_read, self.on_written = inner, on_read, on_written

    async def read(self) -> bytes:
        data = await self.inner.read()
        if data:
            self.on_read(len(data))
        return data

    async def write(self, data: bytes) -> None:
        self.on_written(len(data))
        await self.inner.write(data)

    def end(self) -> None:
        self.inner.end()

    async def close(self) -> None:
        await self.inner.close()


class StreamChannel:
    """One HTTP/2 stream of an open tunnel."""

    def __init__(self, connection: http2.Connection, stream: http2.Stream) -> None:
        self.connection, self.stream = connection, stream
        self.ended = False

    async def read(self) -> bytes:
        data = await self.connection.read(self.stream)
        if not data and self.stream.error:  # reset, or the connection went: not an end
            raise http2.StreamError(self.stream.error)
        return data

    async def write(self, data: bytes) -> None:
        await self.connection.write(self.stream.id, data)

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.connection.end(self.stream.id)

    async def close(self) -> None:
        """Forget the stream; one not over both ways yet is reset (its peer learns the
        tunnel was abandoned, not finished)."""
        finished = self.ended and self.stream.ended.is_set()
        self.ended = True
        if not finished:
            self.connection.end(self.stream.id, reset=True)
        self.connection.release(self.stream.id)


async def pipe(source: Channel, sink: Channel,
               count: Callable[[int], None] | None = None) -> None:
    """Bytes from ``source`` to ``sink`` until ``source`` ends, then end ``sink``. A pipe
    cancelled does not end ``sink``: a half close would pass for the data's whole end, so
    whoever cancelled closes (or resets) it instead."""
    try:
        while data := await source.read():
            if count is not None:
                count(len(data))
            await sink.write(data)
    except (ConnectionError, OSError, http2.StreamError):
        pass
    except asyncio.CancelledError:
        raise
    sink.end()


async def splice(one: Channel, other: Channel, one_to_other: Callable[[int], None] | None = None,
                 other_to_one: Callable[[int], None] | None = None) -> None:
    """Both ways at once until both are done."""
    await asyncio.gather(pipe(one, other, one_to_other), pipe(other, one, other_to_one))
