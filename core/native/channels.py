"""Byte channels the native proxy pipes between: a TCP (or TLS) connection, or one HTTP/2
stream used as a tunnel (CONNECT). Either end of a pipe may be either, so a TCP proxy, a
CONNECT terminated and a CONNECT originated are the same two pipes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

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
