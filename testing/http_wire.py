"""HTTP/1.1 read off a raw socket, for tests that must see when bytes arrive (a streamed
answer's first event before the rest is sent) rather than the whole answer at the end."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable


def head_and_rest(sock: socket.socket) -> tuple[bytes, bytes]:
    """An answer's head (lower-cased) and what has come of its body so far."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, data
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.lower(), rest


def whole_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """An answer with a Content-Length: its head and all its body."""
    head, body = head_and_rest(sock)
    length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        more = sock.recv(65536)
        assert more
        body += more
    return head, body


def events_arrive_as_sent(port: int, arrived: threading.Event) -> bytes:
    """``GET /sse`` through ``127.0.0.1:port`` from an upstream that sends its first event,
    then waits for ``arrived`` before the next ones: the first must reach the client on
    its own (a proxy that collected the answer would never deliver it). The whole chunked
    body."""
    arrived.clear()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /sse HTTP/1.1\r\nhost: streams\r\n\r\n")
        head, body = head_and_rest(sock)
        assert b" 200 " in head.split(b"\r\n")[0] and b"transfer-encoding: chunked" in head
        while b"data: 0" not in body:  # the upstream sends no more until this arrives
            more = sock.recv(65536)
            assert more, body
            body += more
        arrived.set()
        while not body.endswith(b"0\r\n\r\n"):
            more = sock.recv(65536)
            assert more, body
            body += more
    return body


class ThreadedServer:
    """A test's own asyncio TCP server on a thread of its own (its connections handled by
    ``serve``), so a synchronous test can talk to it; ``arrived`` is set by the test when a
    streamed event reached the client."""

    def __init__(self, address: str, port: int,
                 serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                 Awaitable[None]]) -> None:
        self.address, self.port, self._handler = address, port, serve
        self.arrived = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(5)

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._handler, self.address, self.port)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
