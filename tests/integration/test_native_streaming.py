"""Answers the native proxy passes on as they come rather than collecting them first: a
server-sent-events stream (chunked, never-ending until the server says), a download
longer than the proxy collects (its length kept), a body that ends at the close — to an
HTTP/1.1 client and to an HTTP/2 one (curl with prior knowledge), through a native
gateway configured by real discovery."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest

from pilotfish.testing.config import backend, documents, ingress_gateway
from pilotfish.testing.mesh import LocalMesh, Proxy
from pilotfish.testing.processes import free_port, http, wait_until

UPSTREAM = "127.0.21.7"
BIG = bytes(range(256)) * (3 * 4096)  # 3 MiB: past what the proxy collects (1 MiB)
ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: streams, namespace: default}
spec:
  hosts: ["*"]
  gateways: [edge]
  http: [{route: [{destination: {host: streams, port: {number: 80}}}]}]
"""


class Upstream:
    """An HTTP/1.1 server on its own thread: ``/sse`` sends an event, then waits for the
    test to say it arrived before sending the next (a proxy that collected the answer would
    never deliver the first); ``/big`` 3 MiB with its length; ``/close`` a body that ends
    when the connection does; anything else a short answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.arrived = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(5)

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._serve, UPSTREAM, self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                if path == b"/sse":
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                 b"transfer-encoding: chunked\r\n\r\n")
                    for number in range(3):
                        event = b"data: %d\n\n" % number
                        writer.write(b"%x\r\n%b\r\n" % (len(event), event))
                        await writer.drain()
                        if number == 0:
                            await self.loop.run_in_executor(None, self.arrived.wait, 30)
                    writer.write(b"0\r\n\r\n")
                elif path == b"/big":
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(BIG))
                    writer.write(BIG)
                elif path == b"/close":
                    writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
                    await writer.drain()
                    writer.close()
                    return
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Proxy, Upstream]]:
    mesh = LocalMesh(tmp_path_factory.mktemp("native-streaming"))
    upstream = Upstream(free_port())
    try:
        port = free_port()
        mesh.write("mesh.yaml", documents(backend("streams", UPSTREAM, upstream.port),
                                          ingress_gateway(port), ROUTE))
        mesh.start_discovery()
        proxy = mesh.start_proxy("gw-1", "default", labels={"istio": "ingressgateway"},
                                 extra=["--proxy", "native"])
        wait_until(lambda: http(f"http://127.0.0.1:{port}/", timeout=2).status == 200, 15,
                   what="HTTP through the native gateway")
        yield port, proxy, upstream
    finally:
        mesh.stop()
        upstream.stop()


def _head_and_rest(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, data
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.lower(), rest


def test_server_sent_events_arrive_as_they_are_sent(gateway: tuple[int, Proxy, Upstream]):
    port, _, upstream = gateway
    upstream.arrived.clear()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /sse HTTP/1.1\r\nhost: streams\r\n\r\n")
        head, body = _head_and_rest(sock)
        assert b" 200 " in head.split(b"\r\n")[0] and b"transfer-encoding: chunked" in head
        while b"data: 0" not in body:  # the upstream sends no more until this arrives
            body += sock.recv(65536)
        upstream.arrived.set()
        while not body.endswith(b"0\r\n\r\n"):
            more = sock.recv(65536)
            assert more, body
            body += more
    assert b"data: 1" in body and b"data: 2" in body


def test_a_long_download_keeps_its_length_and_the_connection(
        gateway: tuple[int, Proxy, Upstream]):
    port, proxy, _ = gateway
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for _ in range(2):  # one downstream connection, kept alive after a streamed answer
            sock.sendall(b"GET /big HTTP/1.1\r\nhost: streams\r\n\r\n")
            head, body = _head_and_rest(sock)
            assert b"content-length: %d" % len(BIG) in head, head
            while len(body) < len(BIG):
                more = sock.recv(1 << 20)
                assert more
                body += more
            assert hashlib.sha256(body).digest() == hashlib.sha256(BIG).digest()
    # the upstream connection went back to the pool once the body had all come
    stats = http(f"{proxy.admin}/stats").body.decode()
    opened = [int(line.split(": ")[1]) for line in stats.splitlines()
              if line.startswith("cluster.outbound|80||streams") and
              line.split(": ")[0].endswith(".upstream_cx_total")]
    assert opened and opened[0] <= 2, stats


def test_a_body_that_ends_at_the_close_is_passed_on_chunked(
        gateway: tuple[int, Proxy, Upstream]):
    port, _, _ = gateway
    answer = http(f"http://127.0.0.1:{port}/close", timeout=5)
    assert (answer.status, answer.body) == (200, b"until the end")


def test_an_http2_client_gets_streamed_answers_too(gateway: tuple[int, Proxy, Upstream]):
    port, _, upstream = gateway
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-m", "10",
                          f"http://127.0.0.1:{port}/big"], capture_output=True, check=True)
    assert hashlib.sha256(out.stdout).digest() == hashlib.sha256(BIG).digest()
    upstream.arrived.set()  # no waiting: this checks the stream, not its timing
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-m", "10",
                          f"http://127.0.0.1:{port}/sse"], capture_output=True, check=True)
    assert out.stdout == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
