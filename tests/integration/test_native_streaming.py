"""Bodies the native proxy passes on as they come rather than collecting them first: a
server-sent-events stream (chunked, never-ending until the server says), a download
longer than the proxy collects (its length kept), a body that ends at the close — to an
HTTP/1.1 client and to an HTTP/2 one (curl with prior knowledge); and uploads longer than
it collects, with their length or chunked, ``Expect: 100-continue`` answered by the proxy,
an upstream that refuses before reading, a client that gives up half-way — through a
native gateway configured by real discovery."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from pilotfish.testing.config import backend, documents, ingress_gateway
from pilotfish.testing.http_wire import (
    ThreadedServer,
    events_arrive_as_sent,
    head_and_rest,
    whole_answer,
)
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


class Upstream(ThreadedServer):
    """An HTTP/1.1 server on its own thread: ``/sse`` sends an event, then waits for the
    test to say it arrived before sending the next (a proxy that collected the answer would
    never deliver the first); ``/big`` 3 MiB with its length; ``/close`` a body that ends
    when the connection does; anything else a short answer."""

    def __init__(self, port: int) -> None:
        self.uploading = threading.Event()  # an upload's first 2 MiB reached the upstream
        self.uploads: list[tuple[bytes, str]] = []  # (the head, how the body ended)
        super().__init__(UPSTREAM, port, self.serve)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                if path == b"/upload":
                    digest, size, ended = await self._read_body(reader, head.lower())
                    self.uploads.append((head.lower(), ended))
                    if ended != "whole":
                        return
                    answer = b"%d %s" % (size, digest.hexdigest().encode())
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b"
                                 % (len(answer), answer))
                elif path == b"/refuse":
                    writer.write(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n"
                                 b"connection: close\r\n\r\n")
                    await writer.drain()
                    # a lingering close, as servers make one: closing with the body unread
                    # would reset the connection, and the answer could be lost with it
                    writer.write_eof()
                    while await asyncio.wait_for(reader.read(65536), 5):
                        pass
                    return
                elif path == b"/sse":
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

    async def _read_body(self, reader: asyncio.StreamReader, head: bytes
                         ) -> tuple[Any, int, str]:
        """The body's digest and size, and "whole" or "cut" (the peer closed in it)."""
        digest, size = hashlib.sha256(), 0
        chunked = b"transfer-encoding: chunked" in head
        length = 0 if chunked else int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
        try:
            while True:
                if chunked:
                    want = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    if want == 0:
                        await reader.readuntil(b"\r\n")
                        return digest, size, "whole"
                    data = await reader.readexactly(want)
                    await reader.readexactly(2)
                else:
                    if size == length:
                        return digest, size, "whole"
                    data = await reader.read(min(65536, length - size))
                    if not data:
                        return digest, size, "cut"
                digest.update(data)
                size += len(data)
                if size >= 2 << 20:
                    self.uploading.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            return digest, size, "cut"


def native_gateway(mesh: LocalMesh, streams: str, probe: str = "/") -> tuple[int, Proxy]:
    """A native gateway routing everything to the ``streams`` backend (its YAML), once it
    answers ``probe``: (its port, the proxy)."""
    port = free_port()
    mesh.write("mesh.yaml", documents(streams, ingress_gateway(port), ROUTE))
    mesh.start_discovery()
    proxy = mesh.start_proxy("gw-1", "default", labels={"istio": "ingressgateway"},
                             extra=["--proxy", "native"])
    wait_until(lambda: http(f"http://127.0.0.1:{port}{probe}", timeout=2).status == 200, 15,
               what="HTTP through the native gateway")
    return port, proxy


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Proxy, Upstream]]:
    mesh = LocalMesh(tmp_path_factory.mktemp("native-streaming"))
    upstream = Upstream(free_port())
    try:
        yield (*native_gateway(mesh, backend("streams", UPSTREAM, upstream.port)), upstream)
    finally:
        mesh.stop()
        upstream.stop()


def test_server_sent_events_arrive_as_they_are_sent(gateway: tuple[int, Proxy, Upstream]):
    port, _, upstream = gateway
    body = events_arrive_as_sent(port, upstream.arrived)
    assert b"data: 1" in body and b"data: 2" in body


def test_a_long_download_keeps_its_length_and_the_connection(
        gateway: tuple[int, Proxy, Upstream]):
    port, proxy, _ = gateway
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for _ in range(2):  # one downstream connection, kept alive after a streamed answer
            sock.sendall(b"GET /big HTTP/1.1\r\nhost: streams\r\n\r\n")
            head, body = head_and_rest(sock)
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


def _upload_head(port: int, path: str, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: streams", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_an_upload_passes_on_as_it_comes(gateway: tuple[int, Proxy, Upstream]):
    """3 MiB with its length: the upstream has the first 2 MiB before the client sends the
    rest (a proxy collecting the body first would wait for ever); then the same connection
    serves a chunked upload, its chunks re-framed as they come."""
    port, _, upstream = gateway
    upstream.uploading.clear()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_upload_head(port, "/upload", f"content-length: {len(BIG)}"))
        sock.sendall(BIG[:2 << 20])
        assert upstream.uploading.wait(10), "the first 2 MiB did not reach the upstream"
        sock.sendall(BIG[2 << 20:])
        head, body = whole_answer(sock)
        assert b" 200 " in head.split(b"\r\n")[0]
        assert body == b"%d %s" % (len(BIG), hashlib.sha256(BIG).hexdigest().encode())
        sock.sendall(_upload_head(port, "/upload", "transfer-encoding: chunked"))
        for start in range(0, len(BIG), 300_000):
            part = BIG[start:start + 300_000]
            sock.sendall(b"%x\r\n%b\r\n" % (len(part), part))
        sock.sendall(b"0\r\n\r\n")
        head, body = whole_answer(sock)
        assert body == b"%d %s" % (len(BIG), hashlib.sha256(BIG).hexdigest().encode())
    heads = [head for head, _ in upstream.uploads[-2:]]
    assert b"content-length: %d" % len(BIG) in heads[0]
    assert b"transfer-encoding: chunked" in heads[1]


def test_expect_100_continue_is_answered_by_the_proxy(gateway: tuple[int, Proxy, Upstream]):
    port, _, upstream = gateway
    body = BIG[:100_000]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_upload_head(port, "/upload", f"content-length: {len(body)}",
                                  "expect: 100-continue"))
        interim = sock.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        _, answer = whole_answer(sock)
        assert answer.startswith(b"%d " % len(body))
    assert b"expect" not in upstream.uploads[-1][0]  # the proxy's to answer, not passed on


def test_an_upstream_that_refuses_before_reading_is_answered_and_the_rest_not_sent(
        gateway: tuple[int, Proxy, Upstream]):
    port, _, _ = gateway
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_upload_head(port, "/refuse", f"content-length: {len(BIG)}"))
        sock.sendall(BIG[:1 << 20])  # more than the proxy holds, less than announced
        head, _ = head_and_rest(sock)
        assert b" 413 " in head.split(b"\r\n")[0] and b"connection: close" in head
    assert http(f"http://127.0.0.1:{port}/", timeout=5).status == 200  # the proxy goes on


def test_a_client_giving_up_half_way_ends_the_upstream_request_too(
        gateway: tuple[int, Proxy, Upstream]):
    port, proxy, upstream = gateway
    upstream.uploading.clear()
    before = len(upstream.uploads)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_upload_head(port, "/upload", f"content-length: {len(BIG)}"))
        sock.sendall(BIG[:(2 << 20) + 1000])
        assert upstream.uploading.wait(10)
    wait_until(lambda: len(upstream.uploads) > before, 10, what="the upstream to see the end")
    assert upstream.uploads[-1][1] == "cut"
    assert http(f"http://127.0.0.1:{port}/", timeout=5).status == 200
    assert "connection failed" not in proxy.process.log(400)  # no error on the way


def test_an_http2_upload_streams_to_an_http1_upstream(gateway: tuple[int, Proxy, Upstream],
                                                      tmp_path):
    """20 MiB: more than the proxy would ever collect (16 MiB)."""
    port, _, upstream = gateway
    body = BIG * 7
    upload = tmp_path / "upload.bin"
    upload.write_bytes(body)
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-m", "20",
                          "--data-binary", f"@{upload}", f"http://127.0.0.1:{port}/upload"],
                         capture_output=True, check=True)
    assert out.stdout == b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())
    assert b"content-length: %d" % len(body) in upstream.uploads[-1][0]
