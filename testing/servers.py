"""Small TCP servers for tests that need a peer of a kind no app here is (a TLS backend, a
CONNECT proxy, an ext_authz service): the accept loop in a daemon thread, one handler call
per connection. And the dialer the HBONE tests hand their pools."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Callable


def serve(address: str, port: int, handle: Callable[[socket.socket], None]) -> socket.socket:
    """Listen on ``address:port`` and call ``handle`` with each connection (closed after
    it; errors of one connection end only that one). Close the returned socket to stop."""
    listener = socket.create_server((address, port))

    def loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed: the test is over
            with conn, contextlib.suppress(OSError, ssl.SSLError):
                handle(conn)

    threading.Thread(target=loop, daemon=True).start()
    return listener


def read_head(conn: socket.socket) -> bytes:
    """An HTTP request's head (through the blank line), and whatever followed it."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(4096)
        if not chunk:
            break
        head += chunk
    return head


async def tcp_connect(destination: tuple[str, int]) -> socket.socket:
    """A connected non-blocking socket, as an HBONE pool's dialer gives one."""
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, destination)
    return sock
