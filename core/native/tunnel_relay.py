"""A tunnel (one HTTP/2 CONNECT stream) relayed to a TCP connection from the callbacks that
bring the bytes, with no task in between.

A relay of two pipes wakes a task for every message each way: the socket's reader hands the
bytes to a waiting task, which frames them onto the tunnel; the connection's reader queues a
DATA frame for another task, which writes it to the socket. At a moderate rate each of those
wake-ups is its own turn of the event loop, and their fixed cost, not the bytes, is most of
what a proxy spends on a small request. Here the socket's ``data_received`` frames its bytes
and writes them to the TLS transport at once, and a DATA frame is written to the socket in
the connection's read callback.

Backpressure is the same as the pipes', without awaiting:

- app → tunnel: bytes the peer's windows cannot take yet wait here (the socket stops being
  read) until a WINDOW_UPDATE opens them (``Connection.window_listeners``); the socket also
  stops being read while the TLS connection's write buffer is above ``TLS_HIGH_WATER``.
- tunnel → app: a DATA frame is acknowledged (the peer may send more) once the socket's
  transport is below its high-water mark; above it, the acknowledgement waits for the
  transport's ``resume_writing``. The peer's windows bound what can be buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from pilotfish.core.native import http2
from pilotfish.core.native.channels import SocketChannel, StreamChannel

TLS_HIGH_WATER = 1 << 20  # the tunnel's connection buffers this much unsent before we wait


class _Relay:
    """Both ways between ``tunnel`` and ``app``: an ``http2.Receiver`` for the tunnel's
    bytes and a ``channels.Consumer`` for the app's."""

    def __init__(self, tunnel: StreamChannel, app: SocketChannel,
                 to_tunnel: Callable[[int], object], to_app: Callable[[int], object]) -> None:
        self.tunnel, self.app = tunnel, app
        self.connection, self.stream_id = tunnel.connection, tunnel.stream.id
        self.to_tunnel, self.to_app = to_tunnel, to_app
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.outgoing = bytearray()  # the app's bytes the windows cannot take yet
        self.app_done = False  # the app sent its end (sent on once ``outgoing`` is out)
        self.tunnel_done = False  # the tunnel's end was passed to the app
        self.unacknowledged = 0  # what was written to the app while its buffer was full
        self.draining: asyncio.Task[None] | None = None  # waiting for TLS to drain
        self.buffered = tunnel.connection.writer.transport.get_write_buffer_size

    # -- the tunnel's side (http2.Receiver) -------------------------------------------------

    def data(self, data: bytes, length: int) -> None:
        if data:
            self.to_app(len(data))
        if self.app.write_nowait(data) and not self.unacknowledged:
            self.connection.acknowledge(self.stream_id, length)
        else:
            self.unacknowledged += length

    def ended(self, error: str) -> None:
        if error:  # reset, or the connection went: not an end to pass on
            self._finish()
            return
        self.tunnel_done = True
        self.app.end()
        self._check()

    # -- the app's side (channels.Consumer) -------------------------------------------------

    def received(self, data: bytes) -> None:
        self.to_tunnel(len(data))
        if not self.outgoing and not self.done.done():
            try:  # the usual case: the windows take it all at once
                sent = self.connection.send_nowait(self.stream_id, data)
            except http2.StreamError:  # reset, or the connection went
                self._finish()
                return
            if sent == len(data):
                self._sent()
                return
            data = data[sent:]
        self.outgoing += data
        self._send()

    def eof(self) -> None:
        self.app_done = True
        self._send()

    def drained(self) -> None:
        if self.unacknowledged:
            length, self.unacknowledged = self.unacknowledged, 0
            self.connection.acknowledge(self.stream_id, length)

    def lost(self) -> None:
        # nothing more can reach the app, and it sends nothing more
        self.tunnel_done = True
        self.eof()
        self._check()

    # -- moving the app's bytes ---------------------------------------------------------------

    def _send(self) -> None:
        if self.done.done():
            return
        if self.outgoing:
            try:
                sent = self.connection.send_nowait(self.stream_id, self.outgoing)
            except http2.StreamError:  # reset, or the connection went
                self._finish()
                return
            del self.outgoing[:sent]
        if self.outgoing:  # the windows are full: wait for an update
            self.app.pause_reading()
            self.connection.window_listeners.add(self._send)
            return
        self.connection.window_listeners.discard(self._send)
        self._sent()

    def _sent(self) -> None:
        """All the app's bytes so far are out: its end follows, and it is read again unless
        the TLS connection's buffer is too full."""
        if self.app_done and not self.tunnel.ended:
            self.tunnel.end()
        if self.draining is None and self.buffered() > TLS_HIGH_WATER:
            self.app.pause_reading()
            self.draining = asyncio.get_running_loop().create_task(self._drain())
        elif self.draining is None:
            self.app.resume_reading()
        self._check()

    async def _drain(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self.connection.writer.drain()
        self.draining = None
        self._send()

    def _check(self) -> None:
        if self.tunnel_done and self.tunnel.ended and not self.done.done():
            self.done.set_result(None)

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def detach(self) -> None:
        self.tunnel.stream.receiver = None
        self.app.attach(None)
        self.connection.window_listeners.discard(self._send)
        if self.draining is not None:
            self.draining.cancel()


def _uncounted(length: int) -> None:
    return None


async def relay(tunnel: StreamChannel, app: SocketChannel,
                to_tunnel: Callable[[int], object] = _uncounted,
                to_app: Callable[[int], object] = _uncounted) -> None:
    """Bytes both ways between ``tunnel`` and ``app`` until both ways ended, each half close
    passed on; a stream reset (or its connection gone) ends the relay at once, and so does
    the app's connection going. ``to_tunnel(n)`` and ``to_app(n)`` count the bytes each
    way. Closing both is the caller's."""
    moving = _Relay(tunnel, app, to_tunnel, to_app)
    try:
        tunnel.connection.attach(tunnel.stream, moving)
        app.attach(moving)
        await moving.done
    finally:
        moving.detach()
