"""HTTP/1.1 connections on asyncio protocols, for the native proxy's hot path.

Bytes go from the transport straight into the connection's parser (``http1``) and whole
messages come out: no stream buffer in between, and the task serving the connection wakes
once per message rather than once per read. The same class serves both sides: downstream
it hands out requests (:meth:`Http1Connection.next`), upstream it exchanges a request for
its response (:meth:`Http1Connection.exchange`, which skips 1xx answers and keeps one
timer for the whole wait).

A downstream connection starts *raw* (bytes kept as they come) until the proxy knows the
protocol from the first bytes; one that turns out to speak HTTP/2, or that upgrades
(WebSocket, CONNECT), is handed over as asyncio streams (:meth:`Http1Connection.streams`)
with every byte not yet consumed, so the code that pipes or multiplexes reads on
unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from pilotfish.core.native import http1

READ_SIZE = 65536
# A streamed body's parts held before reading from the peer pauses until they are taken.
BODY_BUFFER = 1024 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Http1Connection(asyncio.Protocol):
    def __init__(self, parser: http1.Parser, raw: bool = False) -> None:
        self.parser = parser
        self.transport: asyncio.Transport | None = None
        self._raw: bytearray | None = bytearray() if raw else None  # bytes not parsed yet
        self._waiter: asyncio.Future[None] | None = None  # the serving task, waiting
        self._drained: asyncio.Future[None] | None = None  # a writer waiting for room
        self._paused = False  # the transport's write buffer is over its high mark
        self._ended = False  # no more bytes will come
        self._error: Exception | None = None  # bytes that were not HTTP/1.1
        self._late = False  # an exchange's answer took longer than its timeout
        # The running exchange's deadline (loop time), and the timer that checks it. The
        # timer is left armed when an exchange ends early, and moved on when it fires
        # while a later exchange runs: keep-alive exchanges with the same timeout arm
        # about one timer per timeout, not one per request.
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.taken = 0  # of the streamed message's body, so far (`chunk`)
        self.opened = time.monotonic()  # for the cluster's max_connection_duration
        self._discard = False  # lingering (`linger`): what comes is dropped
        # The loop the connection runs on, asked once: on Python 3.11 every
        # ``asyncio.get_running_loop()`` makes a getpid system call, and the serving task
        # waits twice a request.
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def adopt(cls, writer: asyncio.StreamWriter, parser: http1.Parser) -> Http1Connection:
        """Take over a connection just opened as streams, before anything was read from
        it (an upstream connection: the server speaks only once asked)."""
        connection = cls(parser)
        transport: Any = writer.transport
        transport.set_protocol(connection)
        connection.transport = transport
        return connection

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._discard:
            return
        if self._raw is not None:
            self._raw += data
        elif self._error is None:
            try:
                self.parser.feed(data)
            except http1.ParseError as exc:
                self._error = exc
            if self.parser.continue_wanted:
                self.parser.continue_wanted = False
                if self.transport is not None:
                    self.transport.write(CONTINUE)
            if self.parser.upgraded:  # what follows is not HTTP/1.1: kept for the tunnel
                self._raw = bytearray()
            elif self.parser.streaming and self.transport is not None and \
                    sum(map(len, self.parser.chunks)) > BODY_BUFFER:
                self.transport.pause_reading()  # the taker is slower than the sender
        self._wake()

    def eof_received(self) -> bool:
        self._ended = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        self._wake()
        self.resume_writing()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    async def _wait(self, loop: asyncio.AbstractEventLoop) -> None:
        self._waiter = loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # -- what the proxy calls ----------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default) if self.transport else default

    def is_closing(self) -> bool:
        return self._ended or self.transport is None or self.transport.is_closing()

    async def first(self, enough: int = 1) -> bytes:
        """The bytes received so far, once there are ``enough`` (fewer: all there will
        be); they stay unconsumed until :meth:`parse` or :meth:`streams`."""
        assert self._raw is not None, "the connection is parsed already"
        loop = asyncio.get_running_loop()
        while len(self._raw) < enough and not self._ended:
            await self._wait(loop)
        return bytes(self._raw)

    def parse(self) -> None:
        """From now on bytes are HTTP/1.1 (the raw ones first)."""
        raw, self._raw = self._raw, None
        if raw:
            self.data_received(bytes(raw))

    async def next(self) -> http1.Message | None:
        """The next whole message; None once the peer has closed without one."""
        while True:
            message = self.parser.next()
            if message is not None:
                if message.streamed:  # its body comes from here, as it arrives
                    message.body_source, self.taken = self, 0
                return message
            if self._error is not None:
                raise self._error
            if self._ended:
                return None
            # (``_wait`` written out: once a request, a coroutine fewer)
            waiter = self._waiter = self._running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    async def exchange(self, data: bytes, head_only: bool = False,
                       timeout: float = 0.0, stream_over: int = 0) -> http1.Message:
        """Send a request; its final response (raises TimeoutError past ``timeout``
        seconds, EOFError when the peer closes first, ``http1.ParseError``). With
        ``stream_over``, a longer answer (or one of unknown length) comes back at its
        head, ``streamed``: its body from :meth:`chunk`."""
        loop = self._running_loop()
        self.parser.head_only = head_only
        self.parser.stream_over = stream_over
        self._late = False
        self.write(data)
        if timeout:
            deadline = self._deadline = loop.time() + timeout
            timer = self._timer
            if timer is None or timer.when() > deadline:
                if timer is not None:
                    timer.cancel()
                self._timer = loop.call_at(deadline, self._check_deadline)
        try:
            while True:
                message = self.parser.next()
                if message is not None:
                    if message.status >= 200:
                        return message
                    continue  # 1xx: the answer is still to come
                if self._error is not None:
                    raise self._error
                if self._ended:
                    raise EOFError("the upstream closed the connection")
                if self._late:
                    raise TimeoutError()
                waiter = self._waiter = loop.create_future()  # (``_wait`` written out)
                try:
                    await waiter
                finally:
                    self._waiter = None
        finally:
            self._deadline = None

    async def chunk(self) -> bytes:
        """The next part of a streamed message's body (``exchange`` or ``next`` returned
        its head); b"" once it has all come. Raises EOFError when the peer closes first."""
        loop = asyncio.get_running_loop()
        parser = self.parser
        while True:
            if parser.chunks:
                data = parser.chunks.popleft()
                if not parser.chunks and self.transport is not None:
                    self.transport.resume_reading()
                self.taken += len(data)
                return data
            if not parser.streaming:
                return b""
            if self._error is not None:
                raise self._error
            if self._ended:
                if parser.until_close:  # no length given: the close is the end
                    parser.streaming = False
                    return b""
                raise EOFError("the peer closed the connection in the body")
            await self._wait(loop)

    def _check_deadline(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return  # the exchange it was armed for ended in time, and none runs now
        loop = asyncio.get_running_loop()
        if loop.time() >= deadline:
            self._late = True
            self._wake()
        else:  # a later exchange runs: check again at its deadline
            self._timer = loop.call_at(deadline, self._check_deadline)

    def write(self, data: bytes) -> None:
        """Send ``data``; nothing once the connection is closed (its peer gone: `drain`
        says so to a writer that waits)."""
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(data)

    @property
    def must_drain(self) -> bool:
        """Whether :meth:`drain` has anything to do (wait, or say the peer is gone): the
        common answer, no, costs no coroutine."""
        return self._paused or self._ended

    async def drain(self) -> None:
        """Wait while the peer is slower than what was written to it."""
        if self._ended and self.transport is not None and self.transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        if self._paused:
            self._drained = self._running_loop().create_future()
            await self._drained

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def linger(self, seconds: float) -> None:
        """Before closing, as Envoy's delayed close: our side ended, what the peer still
        sends (the rest of an upload nobody reads) dropped until it closes too or
        ``seconds`` pass. Closing with unread bytes would reset the connection, and the
        answer just sent could be lost with it."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._discard = True
        self.parser.chunks.clear()
        transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while not self._ended:
                    await self._wait(loop)

    def streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The connection as asyncio streams from here on, holding the bytes not yet
        consumed (raw ones, or what follows an upgrade's head)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READ_SIZE, loop=loop)
        if self._raw:
            reader.feed_data(bytes(self._raw))
        self._raw = None
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport: Any = self.transport
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._paused:
            protocol.pause_writing()
        if self._ended:
            reader.feed_eof()
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
