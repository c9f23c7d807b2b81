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


class StreamChannel:
    """One HTTP/2 stream of an open tunnel."""

    def __init__(self, connection: http2.Connection, stream: http2.Stream) -> None:
        self.connection, self.stream = connection, stream
        self.ended = False

    async def read(self) -> bytes:
        return await self.connection.read(self.stream)

    async def write(self, data: bytes) -> None:
        await self.connection.write(self.stream.id, data)

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.connection.end(self.stream.id)


async def pipe(source: Channel, sink: Channel,
               count: Callable[[int], None] | None = None) -> None:
    """Bytes from ``source`` to ``sink`` until ``source`` ends, then end ``sink``."""
    try:
        while data := await source.read():
            if count is not None:
                count(len(data))
            await sink.write(data)
    except (ConnectionError, OSError, http2.StreamError):
        pass
    finally:
        sink.end()


async def splice(one: Channel, other: Channel, one_to_other: Callable[[int], None] | None = None,
                 other_to_one: Callable[[int], None] | None = None) -> None:
    """Both ways at once until both are done."""
    await asyncio.gather(pipe(one, other, one_to_other), pipe(other, one, other_to_one))
