"""Bodies passed on as they come through an HTTP/2 upstream (a port Istio speaks HTTP/2 to,
as with ``h2UpgradePolicy: UPGRADE``): a server-sent-events stream, a download and an
upload each longer than the native proxy would ever collect (16 MiB), an HTTP/1.1 client
on the other side; through a native gateway configured by real discovery."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import Iterator
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest

from pilotfish.testing.config import backend
from pilotfish.testing.http_wire import ThreadedServer, events_arrive_as_sent, head_and_rest
from pilotfish.testing.mesh import LocalMesh, Proxy
from pilotfish.testing.processes import free_port
from tests.integration.test_native_streaming import native_gateway

UPSTREAM = "127.0.21.8"
HUGE = bytes(range(256)) * (20 * 4096)  # 20 MiB


class H2Upstream(ThreadedServer):
    """An h2c server on its own thread: ``/sse`` sends an event, then waits for the test to
    say it arrived before the next; ``/huge`` 20 MiB with its length; ``/upload`` answers
    the size and digest of what it was sent."""

    def __init__(self, port: int) -> None:
        super().__init__(UPSTREAM, port, self.serve)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        window = asyncio.Event()
        bodies: dict[int, Any] = {}
        paths: dict[int, bytes] = {}
        tasks: set[asyncio.Task[None]] = set()

        async def send(stream_id: int, data: bytes, end: bool) -> None:
            view = memoryview(data)
            while view:
                room = min(conn.local_flow_control_window(stream_id),
                           conn.max_outbound_frame_size)
                if room <= 0:
                    window.clear()
                    await window.wait()
                    continue
                conn.send_data(stream_id, bytes(view[:room]))
                view = view[room:]
                writer.write(conn.data_to_send())
                await writer.drain()
            if end:
                conn.end_stream(stream_id)
                writer.write(conn.data_to_send())
                await writer.drain()

        async def answer(stream_id: int) -> None:
            path = paths[stream_id]
            if path == b"/sse":
                conn.send_headers(stream_id, [(":status", "200"),
                                              ("content-type", "text/event-stream")])
                for number in range(3):
                    await send(stream_id, b"data: %d\n\n" % number, end=False)
                    if number == 0:
                        await self.loop.run_in_executor(None, self.arrived.wait, 30)
                await send(stream_id, b"", end=True)
            elif path == b"/huge":
                conn.send_headers(stream_id, [(":status", "200"),
                                              ("content-length", str(len(HUGE)))])
                await send(stream_id, HUGE, end=True)
            else:
                digest, size = bodies[stream_id]
                text = b"%d %s" % (size, digest.hexdigest().encode())
                conn.send_headers(stream_id, [(":status", "200"),
                                              ("content-length", str(len(text)))])
                await send(stream_id, text, end=True)

        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        paths[event.stream_id] = dict(event.headers)[b":path"]
                        bodies[event.stream_id] = (hashlib.sha256(), 0)
                        if event.stream_ended is not None:
                            task = asyncio.ensure_future(answer(event.stream_id))
                            tasks.add(task)
                    elif isinstance(event, h2.events.DataReceived):
                        digest, size = bodies[event.stream_id]
                        digest.update(event.data)
                        bodies[event.stream_id] = (digest, size + len(event.data))
                        conn.acknowledge_received_data(event.flow_controlled_length,
                                                       event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        task = asyncio.ensure_future(answer(event.stream_id))
                        tasks.add(task)
                    elif isinstance(event, h2.events.WindowUpdated):
                        window.set()
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            for task in tasks:
                task.cancel()
            writer.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Proxy, H2Upstream]]:
    mesh = LocalMesh(tmp_path_factory.mktemp("native-streaming-h2"))
    upstream = H2Upstream(free_port())
    try:
        yield (*native_gateway(mesh, backend("streams", UPSTREAM, upstream.port,
                                             port_name="http2"), "/upload"), upstream)
    finally:
        mesh.stop()
        upstream.stop()


def test_server_sent_events_from_an_http2_upstream_arrive_as_they_are_sent(
        gateway: tuple[int, Proxy, H2Upstream]):
    port, _, upstream = gateway
    body = events_arrive_as_sent(port, upstream.arrived)
    assert b"data: 1" in body and b"data: 2" in body


def test_a_download_longer_than_the_proxy_holds_keeps_its_length(
        gateway: tuple[int, Proxy, H2Upstream]):
    port, _, _ = gateway
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"GET /huge HTTP/1.1\r\nhost: streams\r\n\r\n")
        head, body = head_and_rest(sock)
        assert b"content-length: %d" % len(HUGE) in head, head
        digest = hashlib.sha256(body)
        size = len(body)
        while size < len(HUGE):
            more = sock.recv(1 << 20)
            assert more
            digest.update(more)
            size += len(more)
    assert digest.digest() == hashlib.sha256(HUGE).digest()


def test_an_upload_longer_than_the_proxy_holds_goes_to_the_http2_upstream(
        gateway: tuple[int, Proxy, H2Upstream]):
    port, _, _ = gateway
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nhost: streams\r\ncontent-length: %d\r\n\r\n"
                     % len(HUGE))
        sock.sendall(HUGE)
        head, body = head_and_rest(sock)
        length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += sock.recv(65536)
    assert b" 200 " in head.split(b"\r\n")[0]
    assert body == b"%d %s" % (len(HUGE), hashlib.sha256(HUGE).hexdigest().encode())
