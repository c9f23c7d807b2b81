"""HTTP/2 for the native proxy: the h2 library's state machine (sans-IO) driven over an
asyncio stream pair, for either side of a connection.

:class:`Connection` multiplexes streams. As a server (:meth:`Connection.serve`) it hands
each request to a handler once the request is whole, and the handler answers with
:meth:`Connection.respond`; as a client, :meth:`Connection.request` sends one request and
waits for its whole response, trailers included (gRPC's status travels in them). Data is
sent as the peer's flow-control windows allow, and what is received is acknowledged as it
is buffered, up to ``MAX_BODY`` a stream.

Requests and responses are the same :class:`~pilotfish.core.native.http1.Message` the
HTTP/1.1 path uses (the pseudo-headers become method, target and ``host``), so routing and
the filters do not care which protocol carried them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Protocol, cast

import attrs
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h2.stream

from pilotfish.core.native import h2_frames, http1

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_BODY = http1.MAX_BODY
READ_SIZE = 65536
WINDOW = 1 << 24  # what a stream and the connection may have in flight towards us
DEFAULT_FRAME = 16384  # HTTP/2's initial SETTINGS_MAX_FRAME_SIZE
MAX_STREAMS = 1024  # concurrent streams a peer may open towards us
# a Pushed connection stops reading while more than this waits to be sent (asyncio's own
# high-water mark for a transport, where the StreamWriter's drain would wait)
WRITE_HIGH_WATER = 1 << 16
# tuples, not sets: a tuple finds an enum member by identity, a set hashes it, which for an
# Enum is a call into Python on every frame of the fast path
_OPEN = (h2.connection.ConnectionState.CLIENT_OPEN, h2.connection.ConnectionState.SERVER_OPEN)
_RECEIVING = (h2.stream.StreamState.OPEN, h2.stream.StreamState.HALF_CLOSED_LOCAL)
_SENDING = (h2.stream.StreamState.OPEN, h2.stream.StreamState.HALF_CLOSED_REMOTE)
# Connection-specific headers HTTP/2 forbids (RFC 9113 §8.2.2); ``host`` is ``:authority``.
CONNECTION_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection",
                                "transfer-encoding", "upgrade", "host", "http2-settings"})


class StreamError(Exception):
    """A stream the peer reset, a connection that ended under it, or a tunnel refused
    (``status``: the answer's status, when one came)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Receiver(Protocol):
    """Who takes a tunnel's bytes as they arrive, in the connection's read callback, rather
    than from the stream's queue (``Connection.attach``): no task wakes for a frame."""

    def data(self, data: bytes, length: int) -> None:
        """``data`` came, ``length`` of the windows with it: acknowledge it
        (``Connection.acknowledge``) once it is taken, which is the sender's backpressure."""

    def ended(self, error: str) -> None:
        """The peer's side is over: cleanly (``error`` empty) or not."""


@attrs.define(eq=False)
class Stream:
    id: int
    headers: list[tuple[str, str]] = attrs.field(factory=list)
    body: bytearray = attrs.field(factory=bytearray)
    trailers: list[tuple[str, str]] = attrs.field(factory=list)
    ended: asyncio.Event = attrs.field(factory=asyncio.Event)  # the peer's side is done
    error: str = ""  # why it ended badly ("" : it did not)
    # a tunnel's stream (CONNECT): data as it comes, with its flow-controlled length,
    # acknowledged as it is read; (b"", 0) at the end
    tunnel: asyncio.Queue[tuple[bytes, int]] | None = None
    responded: asyncio.Event = attrs.field(factory=asyncio.Event)  # the answer's head came
    receiver: Receiver | None = None  # a tunnel's bytes pushed, not queued (``attach``)
    # h2's own stream, kept once attached on a ``fast_data`` connection: the DATA fast
    # path reads and moves its windows without looking it up for every frame
    h2_stream: Any = None

    def pseudo(self, name: str) -> str:
        return next((v for k, v in self.headers if k == name), "")

    def finish(self, error: str = "") -> None:
        """The peer's side is over (with ``error`` if it went wrong)."""
        if self.ended.is_set():
            return
        self.error = self.error or error
        self.ended.set()
        self.responded.set()
        if self.receiver is not None:
            self.receiver.ended(self.error)
        elif self.tunnel is not None:
            self.tunnel.put_nowait((b"", 0))


class Pushed(asyncio.StreamReaderProtocol):
    """A connection's protocol whose bytes go to its :class:`Connection` straight from the
    transport's ``data_received`` (held until it attaches), not through the StreamReader:
    reading then costs no task wake-up per message. The writer side is the usual
    StreamWriter's; the reader it is built with stays empty."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        super().__init__(reader)
        self._held = bytearray()
        self._over = False  # the peer's EOF, or the connection lost
        self._on_data: Callable[[bytes], None] | None = None
        self._on_over: Callable[[], None] | None = None

    def data_received(self, data: bytes) -> None:
        if self._on_data is not None:
            self._on_data(data)
        else:
            self._held += data

    def eof_received(self) -> bool:
        keep = bool(super().eof_received())
        self._ended()
        return keep

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._ended()

    def _ended(self) -> None:
        self._over = True
        if self._on_over is not None:
            self._on_over()

    def attach(self, on_data: Callable[[bytes], None] | None,
               on_over: Callable[[], None] | None) -> None:
        """Bytes to ``on_data`` from now on (what is held first), the end to ``on_over``;
        None, None to stop."""
        self._on_data, self._on_over = on_data, on_over
        if on_data is not None and self._held:
            held = bytes(self._held)
            self._held.clear()
            on_data(held)
        if on_over is not None and self._over:
            on_over()


def starts_h2(data: bytes) -> bool | None:
    """Whether a connection's first bytes are HTTP/2's preface (None: too few to tell)."""
    if len(data) < len(PREFACE):
        return None if PREFACE.startswith(data) else False
    return data.startswith(PREFACE)


def response_message(stream: Stream) -> http1.Message:
    """An answer's head as the router passes it on (its body and trailers to come)."""
    status = stream.pseudo(":status")
    return http1.Message([(k, v) for k, v in stream.headers if not k.startswith(":")],
                         status=int(status) if status.isdigit() else 502, version="2")


def request_message(stream: Stream) -> http1.Message:
    """A received request as the router sees one (``:authority`` becomes ``host``)."""
    headers = [(k, v) for k, v in stream.headers if not k.startswith(":")]
    authority = stream.pseudo(":authority")
    if authority and not any(k == "host" for k, _ in headers):
        headers.insert(0, ("host", authority))
    return http1.Message(headers, bytes(stream.body), stream.pseudo(":method"),
                         stream.pseudo(":path"), version="2", trailers=stream.trailers)


def _text(headers: Iterable[Any] | None) -> list[tuple[str, str]]:
    """Header pairs as text (h2 gives ``str`` with a header encoding set)."""
    return [(str(k), str(v)) for k, v in headers or ()]


def _fields(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k not in CONNECTION_HEADERS and
            not k.startswith(":") and not (k == "te" and v.lower() != "trailers")]


class Connection:
    """``stream_window`` and ``connection_window`` are what the peer may have in flight
    towards us on one stream and on the whole connection; ``max_frame`` the largest frame
    it may send (HBONE asks 4 MiB, 16 MiB and 1 MiB; the proxy's defaults are 16 MiB for
    both windows and HTTP/2's 16 KiB frames)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 client: bool, *, stream_window: int = WINDOW, connection_window: int = WINDOW,
                 max_frame: int = DEFAULT_FRAME, fast_data: bool = False) -> None:
        self.reader, self.writer = reader, writer
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=client, header_encoding="utf-8"))
        codes = h2.settings.SettingCodes
        settings = {codes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                    codes.MAX_HEADER_LIST_SIZE: http1.MAX_HEAD,
                    codes.INITIAL_WINDOW_SIZE: stream_window}
        if max_frame != DEFAULT_FRAME:
            settings[codes.MAX_FRAME_SIZE] = max_frame
        if client:
            settings[codes.ENABLE_PUSH] = 0
        self.h2.local_settings = h2.settings.Settings(client=client, initial_values=settings)
        # settings given as initial values are never "acknowledged" as changes, so h2 would
        # go on refusing frames past 16 KiB: it is told the larger limit here
        self.h2.max_inbound_frame_size = max_frame
        # tunnels' DATA frames past h2's machinery (``h2_frames``; HBONE asks for it)
        self.frames = h2_frames.FrameSplitter(not client, max_frame) if fast_data else None
        self.fast_frames = [0, 0]  # DATA frames taken in, sent out past h2 (tests look)
        self.connection_window = connection_window
        self.streams: dict[int, Stream] = {}
        self._windows = asyncio.Condition()
        # called, in the read callback, whenever a window may have opened (or the
        # connection ended): relays waiting to send without a task of their own
        self.window_listeners: set[Callable[[], None]] = set()
        self.closed = False
        self._reading: asyncio.Task[None] | None = None
        # which requests are passed on as they come (by their head) rather than whole
        self.streamed: Callable[[list[tuple[str, str]]], bool] = lambda headers: False

    # -- both sides ---------------------------------------------------------------------

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def start(self, received: bytes = b"") -> list[h2.events.Event]:
        """Send our preface and settings; take bytes already read off the socket."""
        self.h2.initiate_connection()
        if self.connection_window > 65535:
            self.h2.increment_flow_control_window(self.connection_window - 65535)
        events: list[h2.events.Event] = []
        for item in self._cut(received) if received else ():
            events += self.h2.receive_data(item if isinstance(item, bytes)
                                           else h2_frames.data_frame(item))
        self._flush()
        return events

    def _cut(self, data: bytes) -> Sequence[bytes | h2_frames.DataFrame]:
        """The bytes as h2 or the DATA fast path takes them."""
        return self.frames.feed(data) if self.frames is not None else (data,)

    @property
    def usable(self) -> bool:
        """Still open for new streams (a client's pool asks)."""
        if self.closed or self.writer.is_closing():
            return False
        limit = self.h2.remote_settings.max_concurrent_streams
        return self.h2.open_outbound_streams < limit

    async def receive(self, on_event: Callable[[h2.events.Event], None] = lambda e: None
                      ) -> None:
        """Read and act on what the peer sends (``on_event`` sees each event after the
        connection did) until the connection ends; every stream is finished then."""
        await self._read(on_event)

    def _feed(self, data: bytes, on_event: Callable[[h2.events.Event], None]) -> bool:
        """Act on bytes read; False once the connection cannot go on."""
        for item in self._cut(data):
            if type(item) is bytes:
                frames = item
            else:
                frame = cast(h2_frames.DataFrame, item)
                stream = self.streams.get(frame.stream_id)
                if stream is not None and stream.receiver is not None and \
                        stream.h2_stream is not None and \
                        self._consumed(stream.h2_stream, len(frame.payload)):
                    self.fast_frames[0] += 1
                    stream.receiver.data(frame.payload, len(frame.payload))
                    continue
                frames = h2_frames.data_frame(frame)
            try:
                events = self.h2.receive_data(frames)
            except h2.exceptions.ProtocolError:
                self._flush()  # the GOAWAY h2 queued
                return False
            for event in events:
                self._event(event, on_event)
            self._flush()
        return True

    def _consumed(self, stream: Any, length: int) -> bool:
        """Account a DATA frame taken past h2 in h2's receive windows (of h2's ``stream``),
        as h2 would; False (h2 is to take it, and refuse it if it must) unless the
        connection and the stream are open for it and both windows hold it."""
        if stream.state_machine.state not in _RECEIVING or \
                self.h2.state_machine.state not in _OPEN:
            return False
        connection_window = self.h2._inbound_flow_control_window_manager
        stream_window = stream._inbound_window_manager
        if length > min(connection_window.current_window_size,
                        stream_window.current_window_size):
            return False
        connection_window.window_consumed(length)
        stream_window.window_consumed(length)
        return True

    def _sent_fast(self, stream: Any, data: bytes) -> bool:
        """Send one DATA frame the windows hold past h2 (``fast_data``) on h2's
        ``stream``, accounted in h2's send windows as h2 would; False (h2 is to send it)
        unless the stream is open for it."""
        if stream.state_machine.state not in _SENDING or \
                self.h2.state_machine.state not in _OPEN or self.writer.is_closing():
            return False
        self.h2.outbound_flow_control_window -= len(data)
        stream.outbound_flow_control_window -= len(data)
        head = h2_frames.data_header(len(data), stream.stream_id)
        if self.h2._data_to_send:  # what h2 queued goes first, in order
            head = self.h2.data_to_send() + head
        self.writer.write(head + data)
        self.fast_frames[1] += 1
        return True

    def _acknowledged(self, stream: Any, length: int) -> None:
        """h2's ``acknowledge_received_data`` for a fast-path stream (h2's ``stream``):
        the same window managers and the same rule for when a WINDOW_UPDATE is due (about
        half a window consumed, so rarely), without h2's frame objects on every call."""
        if self.h2.state_machine.state not in _OPEN:
            return
        update = b""
        increment = self.h2._inbound_flow_control_window_manager.process_bytes(length)
        if increment:
            update = h2_frames.window_update(0, increment)
        if stream.open:  # h2 hands nothing back to a closed stream either
            increment = stream._inbound_window_manager.process_bytes(length)
            if increment:
                update += h2_frames.window_update(stream.stream_id, increment)
        if update and not self.writer.is_closing():
            self.writer.write(self.h2.data_to_send() + update)

    async def _read(self, on_event: Callable[[h2.events.Event], None]) -> None:
        protocol = self.writer.transport.get_protocol()
        try:
            if isinstance(protocol, Pushed):
                await self._read_pushed(protocol, on_event)
                return
            while not self.closed:
                data = await self.reader.read(READ_SIZE)
                if not data or not self._feed(data, on_event):
                    break
                await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._close("the connection closed")

    async def _read_pushed(self, protocol: Pushed,
                           on_event: Callable[[h2.events.Event], None]) -> None:
        """``_read`` for a :class:`Pushed` connection: the bytes are acted on in the
        transport's callback; while what we have written waits to go out (the writer
        would block in ``drain``), the socket is not read."""
        loop = asyncio.get_running_loop()
        over: asyncio.Future[None] = loop.create_future()
        draining: list[asyncio.Task[None]] = []
        transport = cast(asyncio.Transport, self.writer.transport)  # it reads, too
        buffered = transport.get_write_buffer_size

        def end(error: BaseException | None = None) -> None:
            if not over.done():
                if error is None:
                    over.set_result(None)
                else:
                    over.set_exception(error)

        async def drain() -> None:
            try:
                await self.writer.drain()
            except (ConnectionError, OSError) as exc:
                end(exc)
            else:
                draining.clear()
                if not transport.is_closing():
                    transport.resume_reading()

        def on_data(data: bytes) -> None:
            try:
                if self.closed or not self._feed(data, on_event):
                    end()
                    return
            except BaseException as exc:  # the reader's own failure, as the loop would raise
                end(exc)
                return
            if not draining and buffered() > WRITE_HIGH_WATER:
                transport.pause_reading()
                draining.append(loop.create_task(drain()))

        try:
            protocol.attach(on_data, end)
            await over
        finally:
            protocol.attach(None, None)
            for task in draining:
                task.cancel()

    def _close(self, why: str) -> None:
        self.closed = True
        for stream in self.streams.values():
            stream.finish(why)
        self._wake()

    def _wake(self) -> None:
        for listener in list(self.window_listeners):
            listener()

        async def notify() -> None:
            async with self._windows:
                self._windows.notify_all()
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(notify())

    def _event(self, event: h2.events.Event,
               on_event: Callable[[h2.events.Event], None]) -> None:
        if isinstance(event, (h2.events.RequestReceived, h2.events.ResponseReceived)):
            stream = self.streams.setdefault(event.stream_id, Stream(event.stream_id))
            stream.headers = _text(event.headers)
            stream.responded.set()
            if isinstance(event, h2.events.RequestReceived) and (
                    stream.pseudo(":method") == "CONNECT" or self.streamed(stream.headers)):
                stream.tunnel = asyncio.Queue()
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.streams.get(event.stream_id) or Stream(event.stream_id)
            stream.trailers = _text(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id) or Stream(event.stream_id)
            if stream.receiver is not None:
                stream.receiver.data(event.data or b"", event.flow_controlled_length)
                return
            if stream.tunnel is not None:
                stream.tunnel.put_nowait((event.data or b"", event.flow_controlled_length))
                return
            stream.body += event.data or b""
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if len(stream.body) > MAX_BODY:
                self.h2.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                stream.finish(f"body larger than {MAX_BODY} bytes")
                return
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id) or Stream(event.stream_id)
            stream.finish()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.get(event.stream_id) or Stream(event.stream_id)
            stream.finish(f"stream reset by the peer (error {event.error_code})")
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self._wake()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._close(f"the peer ended the connection (error {event.error_code})")
        on_event(event)

    async def _send_data(self, stream_id: int, data: bytes, end: bool) -> None:
        view = memoryview(data)
        while view:
            window = min(self.h2.local_flow_control_window(stream_id),
                         self.h2.max_outbound_frame_size)
            if window <= 0:
                async with self._windows:
                    if self.closed:
                        raise StreamError("the connection closed")
                    await self._windows.wait()
                continue
            self.h2.send_data(stream_id, bytes(view[:window]))
            view = view[window:]
            self._flush()
            await self.writer.drain()
        if end:
            self.h2.end_stream(stream_id)
            self._flush()

    async def _send(self, stream_id: int, head: list[tuple[str, str]], body: bytes,
                    trailers: Sequence[tuple[str, str]] = ()) -> None:
        self.h2.send_headers(stream_id, head, end_stream=not body and not trailers)
        self._flush()
        if body:
            await self._send_data(stream_id, body, end=not trailers)
        if trailers:
            self.h2.send_headers(stream_id, _fields(trailers), end_stream=True)
            self._flush()
        await self.writer.drain()

    # -- server -------------------------------------------------------------------------

    async def serve(self, handle: Callable[[Stream], Coroutine[Any, Any, None]],
                    received: bytes = b"") -> None:
        """Answer requests until the client goes; each whole request runs ``handle``."""
        tasks: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()

        def dispatch(stream: Stream) -> None:
            if stream.error:
                return
            task = loop.create_task(handle(stream))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        def on_event(event: h2.events.Event) -> None:
            stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
            if stream is None:
                return
            if isinstance(event, h2.events.RequestReceived) and stream.tunnel is not None:
                dispatch(stream)  # a tunnel starts with its head
            elif isinstance(event, h2.events.StreamEnded) and stream.tunnel is None:
                dispatch(stream)  # the request is whole

        for event in self.start(received):
            self._event(event, on_event)
        self._flush()
        try:
            await self._read(on_event)
        finally:
            for task in tasks:
                task.cancel()

    async def respond(self, stream_id: int, response: http1.Message,
                      head_request: bool = False) -> None:
        """Send one answer (status, headers, body, trailers) on a request's stream."""
        head = [(":status", str(response.status)), *_fields(response.headers)]
        if response.status >= 200 and response.status not in (204, 304):
            head = [(k, v) for k, v in head if k != "content-length"]
            head.append(("content-length", str(len(response.body))))
        try:
            await self._send(stream_id, head, b"" if head_request else response.body,
                             response.trailers)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass  # the client gave up on this stream
        finally:
            self.streams.pop(stream_id, None)

    # -- tunnels (CONNECT), either side ---------------------------------------------------

    async def read(self, stream: Stream) -> bytes:
        """The next bytes of a tunnel's stream (b"" at its end)."""
        assert stream.tunnel is not None
        data, length = await stream.tunnel.get()
        self.acknowledge(stream.id, length)
        return data

    def acknowledge(self, stream_id: int, length: int) -> None:
        """``length`` of a stream's received data is consumed: the peer may send more (h2
        sends a WINDOW_UPDATE once enough is consumed, not for every frame)."""
        if length and not self.closed:
            stream = self.streams.get(stream_id)
            if stream is not None and stream.h2_stream is not None:
                self._acknowledged(stream.h2_stream, length)
                return
            with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
                self.h2.acknowledge_received_data(length, stream_id)
                self._flush()

    def attach(self, stream: Stream, receiver: Receiver) -> None:
        """From now on a tunnel's bytes go to ``receiver`` as they come; what was queued
        before goes to it first, and its end if the peer's side is already over."""
        queued = stream.tunnel
        while queued is not None and not queued.empty():
            data, length = queued.get_nowait()
            if data or length:
                receiver.data(data, length)
        stream.receiver = receiver
        if self.frames is not None:
            stream.h2_stream = self.h2.streams.get(stream.id)
        if stream.ended.is_set():
            receiver.ended(stream.error)

    def send_nowait(self, stream_id: int, data: bytes | bytearray) -> int:
        """Send as much of ``data`` as the windows allow now, in frames, and flush: how
        many bytes went (the rest waits for a window: ``window_listeners``)."""
        if self.closed:
            raise StreamError("the connection closed")
        sent = 0
        stream = self.streams.get(stream_id)
        fast = stream.h2_stream if stream is not None else None
        if fast is not None and data and \
                len(data) <= min(self.h2.outbound_flow_control_window,
                                 fast.outbound_flow_control_window,
                                 self.h2.max_outbound_frame_size) and \
                self._sent_fast(fast, data if isinstance(data, bytes) else bytes(data)):
            return len(data)  # the usual case on a tunnel: one frame, past h2
        try:
            window = min(self.h2.local_flow_control_window(stream_id),
                         self.h2.max_outbound_frame_size)
            if len(data) <= window:  # one frame, no slicing
                if data:
                    self.h2.send_data(stream_id,
                                      data if isinstance(data, bytes) else bytes(data))
                return len(data)
            with memoryview(data) as view:
                while sent < len(view):
                    window = min(self.h2.local_flow_control_window(stream_id),
                                 self.h2.max_outbound_frame_size)
                    if window <= 0:
                        break
                    chunk = bytes(view[sent:sent + window])
                    self.h2.send_data(stream_id, chunk)
                    sent += len(chunk)
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError, KeyError) as exc:
            raise StreamError(str(exc) or type(exc).__name__) from None
        finally:
            self._flush()
        return sent

    async def write(self, stream_id: int, data: bytes) -> None:
        try:
            await self._send_data(stream_id, data, end=False)
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError) as exc:
            raise StreamError(str(exc) or type(exc).__name__) from None

    def end(self, stream_id: int, reset: bool = False) -> None:
        """Our side of a stream is done (``reset``: abandoned)."""
        with contextlib.suppress(h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError,
                                 KeyError):
            if reset:
                self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            else:
                self.h2.end_stream(stream_id)
            self._flush()

    def release(self, stream_id: int) -> None:
        """Forget a tunnel's stream once both sides are done with it."""
        self.streams.pop(stream_id, None)

    async def accept(self, stream_id: int, status: int = 200,
                     headers: Sequence[tuple[str, str]] = (), end: bool | None = None
                     ) -> None:
        """Send an answer's head: a CONNECT's (a 2xx keeps the stream open as the tunnel),
        or a streamed response's, its body to follow (``end``: none follows)."""
        self.h2.send_headers(stream_id, [(":status", str(status)), *_fields(headers)],
                             end_stream=status >= 300 if end is None else end)
        self._flush()
        await self.writer.drain()

    async def finish(self, stream_id: int, trailers: Sequence[tuple[str, str]] = ()) -> None:
        """End our side of a streamed message, with its trailers if it has any."""
        if not trailers:
            self.end(stream_id)
            return
        try:
            self.h2.send_headers(stream_id, _fields(trailers), end_stream=True)
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError) as exc:
            raise StreamError(str(exc) or type(exc).__name__) from None
        self._flush()
        await self.writer.drain()

    def open(self, request: http1.Message, scheme: str = "http") -> Stream:
        """Start a request whose body will follow (:meth:`write`, :meth:`finish`); its
        answer comes on the returned stream as it arrives (``responded``, :meth:`read`)."""
        if self.closed:
            raise StreamError("the connection closed")
        stream_id = self.h2.get_next_available_stream_id()
        stream = self.streams[stream_id] = Stream(stream_id, tunnel=asyncio.Queue())
        self.h2.send_headers(stream_id, [
            (":method", request.method), (":scheme", scheme),
            (":authority", request.header("host") or ""), (":path", request.target or "/"),
            *_fields(request.headers)])
        self._flush()
        return stream

    async def connect(self, authority: str, headers: Sequence[tuple[str, str]] = ()
                      ) -> Stream:
        """Open a tunnel (``CONNECT authority``) on a new stream; it is ready when the
        answer's status is 2xx (``StreamError`` otherwise)."""
        if self.closed:
            raise StreamError("the connection closed")
        stream_id = self.h2.get_next_available_stream_id()
        stream = self.streams[stream_id] = Stream(stream_id, tunnel=asyncio.Queue())
        self.h2.send_headers(stream_id, [(":method", "CONNECT"), (":authority", authority),
                                         *_fields(headers)])
        self._flush()
        try:
            await self.writer.drain()
            await stream.responded.wait()
        except BaseException:  # cancelled (a timeout): the stream is abandoned
            self.end(stream_id, reset=True)
            self.streams.pop(stream_id, None)
            raise
        status = stream.pseudo(":status")
        if stream.error or not status.startswith("2"):
            # our side is still open: reset it, so the stream stops counting as open
            self.end(stream_id, reset=True)
            self.streams.pop(stream_id, None)
            raise StreamError(stream.error or f"the tunnel was refused ({status})",
                              int(status) if status.isdigit() else None)
        return stream

    # -- client -------------------------------------------------------------------------

    def run(self) -> None:
        """Start a client connection: preface out, responses read in the background."""
        self.start()
        self._reading = asyncio.get_running_loop().create_task(self.receive())

    async def request(self, request: http1.Message, scheme: str = "http") -> http1.Message:
        """Send ``request`` on a new stream; its whole response (``StreamError`` if the
        stream or the connection ends first)."""
        if self.closed:
            raise StreamError("the connection closed")
        stream_id = self.h2.get_next_available_stream_id()
        stream = self.streams[stream_id] = Stream(stream_id)
        authority = request.header("host") or ""
        head = [(":method", request.method), (":scheme", scheme),
                (":authority", authority), (":path", request.target or "/"),
                *_fields(request.headers)]
        if request.body:
            head.append(("content-length", str(len(request.body))))
        try:
            await self._send(stream_id, head, request.body, request.trailers)
            await stream.ended.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
                self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
                self._flush()
            raise
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError) as exc:
            raise StreamError(str(exc) or type(exc).__name__) from None
        finally:
            self.streams.pop(stream_id, None)
        if stream.error:
            raise StreamError(stream.error)
        answer = response_message(stream)
        answer.body, answer.trailers = bytes(stream.body), stream.trailers
        return answer

    async def close(self) -> None:
        self.closed = True
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection()
            self._flush()
        if self._reading is not None:
            self._reading.cancel()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
