"""HTTP/1.1 connections on asyncio protocols, for the native proxy's hot path.

Bytes go from the transport straight into the connection's parser (``http1_codec``) and whole
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
from collections.abc import Callable
from typing import Any, Protocol

from pilotfish.core.native import http1, http1_codec

READ_SIZE = 65536
# A streamed body's parts held before reading from the peer pauses until they are taken.
BODY_BUFFER = 1024 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# What an upstream exchange ends with: the final answer, or why none came.
Result = http1.Message | Exception


class Handback(Protocol):
    """A request the callback path started and hands to the serving task to finish."""

    @property
    def request(self) -> http1.Message:
        """The request, as it came."""


class Http1Connection(asyncio.Protocol):
    def __init__(self, parser: http1_codec.Parser, raw: bool = False) -> None:
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
        # The callback path (see `pump`). Downstream: ``serve`` takes a whole request
        # from ``data_received`` (True) or leaves it to the task (False); ``busy`` while
        # its answer is not written yet; ``handed`` what it gives the task to finish;
        # ``held`` when the answer filled the write buffer (the next request waits for
        # room). Upstream: ``answered`` gets the final answer of a request `send` sent.
        self.serve: Callable[[http1.Message], bool] | None = None
        self.busy = False
        self.held = False
        self.handed: Handback | None = None
        self.finished = False  # the callback path ended the connection (`finish`)
        self.answered: Callable[[Result], None] | None = None

    @classmethod
    def adopt(cls, writer: asyncio.StreamWriter, parser: http1_codec.Parser) -> Http1Connection:
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
            if self.serve is not None:
                self.pump()
                return
        self._wake()

    def eof_received(self) -> bool:
        self._ended = True
        self._wake_someone()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        self._wake_someone()
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
        if self.held:  # the callback path waited for room before the next request
            self.held = self.busy = False
            self.pump()

    def _wake(self) -> None:
        if self.answered is not None:  # an exchange `send` started: answered from here
            result = self._result()
            if result is not None:
                answered, self.answered = self.answered, None
                self._deadline = None
                answered(result)
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_someone(self) -> None:
        """The peer closed: the callback path's pump sees to it while it serves, else the
        task waiting is woken."""
        if self.serve is not None and not self.busy and self.answered is None:
            self.pump()
        else:
            self._wake()

    # -- the callback path -------------------------------------------------------------------

    def pump(self) -> None:
        """Hand whole requests to ``serve`` one at a time, from the protocol's callbacks,
        while it takes them: a request served this way costs no task wake-up and no
        future. What it leaves (and an error, or the peer's close) wakes the task, which
        serves it the ordinary way. The request in flight keeps the rest waiting, so
        answers go out in order."""
        serve, parser = self.serve, self.parser
        while serve is not None and not self.busy:
            message = parser.peek()
            if message is None:
                if self._error is not None or self._ended:
                    self._wake()
                return
            if message.streamed:
                self._wake()
                return
            parser.next()
            self.busy = True
            if not serve(message):
                self.busy = False
                parser.unread(message)
                self._wake()
                return

    def served(self) -> None:
        """The callback path wrote its answer: on to the next request (once the answer
        has left, when it filled the write buffer)."""
        if self._paused and not self._ended:
            self.held = True
            return
        self.busy = False
        self.pump()

    def hand_back(self, handed: Handback) -> None:
        """The task finishes this request (`next` returns it; `take_handed` the rest)."""
        self.handed = handed
        self._wake()

    def finish(self) -> None:
        """The callback path is done with the connection (its last answer written, or
        the client gone): it closes, and the task's `next` returns None."""
        self.finished = True
        self.busy = False
        self.close()
        self._wake()

    def take_handed(self) -> Handback | None:
        handed, self.handed = self.handed, None
        return handed

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
            if self.handed is not None:
                return self.handed.request
            if self.finished:
                return None
            if not self.busy:  # (else the callback path serves a request: its answer first)
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
        loop = self._start(data, head_only, timeout, stream_over)
        try:
            while True:
                result = self._result()
                if result is not None:
                    if isinstance(result, Exception):
                        raise result
                    return result
                waiter = self._waiter = loop.create_future()  # (``_wait`` written out)
                try:
                    await waiter
                finally:
                    self._waiter = None
        finally:
            self._deadline = None

    def send(self, data: bytes, answered: Callable[[Result], None], head_only: bool = False,
             timeout: float = 0.0, stream_over: int = 0) -> None:
        """:meth:`exchange` without a task: ``answered`` is called from the protocol's
        callbacks with the final response, or with what :meth:`exchange` would raise."""
        self._start(data, head_only, timeout, stream_over)
        self.answered = answered
        if self._ended or self._error is not None:
            self._wake()

    def _start(self, data: bytes, head_only: bool, timeout: float,
               stream_over: int) -> asyncio.AbstractEventLoop:
        """Send a request, and arm the timer for its answer's deadline."""
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
        return loop

    def _result(self) -> Result | None:
        """How the exchange under way ended (None: not yet): its final response (1xx
        answers skipped), or the error to raise."""
        parser = self.parser
        while True:
            message = parser.next()
            if message is None:
                break
            if message.status >= 200:
                return message
        if self._error is not None:
            return self._error
        if self._ended:
            return EOFError("the upstream closed the connection")
        if self._late:
            return TimeoutError()
        return None

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
        loop = self._running_loop()
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
