"""pilotfish's echo-basic against real clients on loopback: curl for HTTP/1.1, h2c and
TLS h2 (ALPN), grpcio for the GrpcEcho service, TLS sockets for the TCP line protocol,
RFC 6455 frames written by hand for the WebSocket echo."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pilotfish.demo.echo_grpc import SERVICE, messages
from pilotfish.testing.certs import self_signed
from pilotfish.testing.processes import Process, free_port, wait_until

ECHO = [sys.executable, "-m", "pilotfish.demo.echo_basic"]
HOST = "abc.example.com"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("echo-certs")
    cert, key = self_signed(HOST)
    (folder / "crt").write_bytes(cert)
    (folder / "key").write_bytes(key)
    return folder


def start(tmp: Path, env: dict[str, str], ports: list[int]) -> Process:
    process = Process("echo", ECHO, tmp / "echo.log").start(
        {"POD_NAME": "echo-1", "NAMESPACE": "infra", **env})

    def up() -> bool:
        process.check_running()
        for port in ports:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) != 0:
                    return False
        return True

    wait_until(up, 15, what="echo-basic to listen")
    return process


@pytest.fixture(scope="module")
def http_echo(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[dict[str, int]]:
    ports = {"http": free_port(), "h2c": free_port(), "https": free_port()}
    process = start(tmp_path_factory.mktemp("echo-http"), {
        "HTTP_PORT": str(ports["http"]), "H2C_PORT": str(ports["h2c"]),
        "HTTPS_PORT": str(ports["https"]), "TLS_SERVER_CERT": str(certs / "crt"),
        "TLS_SERVER_PRIVKEY": str(certs / "key")}, list(ports.values()))
    yield ports
    process.stop()


def curl(*args: str) -> tuple[dict[str, str], dict[str, object]]:
    out = subprocess.run(["curl", "-s", "-i", "-m", "5", *args], capture_output=True,
                         text=True, check=True).stdout
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    headers = {k.lower(): v.strip() for k, _, v in
               (line.partition(":") for line in head.splitlines()[1:])}
    return headers, json.loads(body)


def test_http1(http_echo: dict[str, int]):
    headers, body = curl("-H", "X-Echo-Set-Header: X-Reply:yes",
                         f"http://127.0.0.1:{http_echo['http']}/one?x=1")
    assert body["proto"] == "HTTP/1.1" and body["path"] == "/one?x=1"
    assert body["pod"] == "echo-1" and body["namespace"] == "infra"
    assert body["httpPort"] == str(http_echo["http"]) and "tls" not in body
    assert headers["x-reply"] == "yes" and headers["content-type"] == "application/json"


def _frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame (RFC 6455 5.2)."""
    mask = os.urandom(4)
    size = (bytes([0x80 | len(payload)]) if len(payload) < 126
            else bytes([0x80 | 126]) + struct.pack("!H", len(payload)))
    return bytes([0x80 | opcode]) + size + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload))


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    reader = sock.makefile("rb")
    first, second = reader.read(2)
    assert first & 0x80 and not second & 0x80  # final, and servers do not mask
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", reader.read(2))
    return first & 0x0F, reader.read(size)


def test_websocket_echo(http_echo: dict[str, int]):
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", http_echo["http"]), timeout=5) as sock:
        sock.sendall(f"GET /ws HTTP/1.1\r\nHost: echo\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     "Sec-WebSocket-Version: 13\r\nOrigin: ws://gateway/t\r\n\r\n".encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += sock.recv(1)
        status, *lines = head.decode().strip().split("\r\n")
        assert status.startswith("HTTP/1.1 101")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        assert headers["sec-websocket-accept"] == accept
        sock.sendall(_frame(0x1, b"Websocket Support!"))
        assert _read_frame(sock) == (0x1, b"Websocket Support!")
        sock.sendall(_frame(0x2, bytes(range(200))))
        assert _read_frame(sock) == (0x2, bytes(range(200)))


def test_h2c_with_prior_knowledge(http_echo: dict[str, int]):
    _, body = curl("--http2-prior-knowledge", "-H", "x-one: 1",
                   f"http://127.0.0.1:{http_echo['h2c']}/two")
    assert body["proto"] == "HTTP/2.0" and body["headers"]["X-One"] == ["1"]
    assert body["host"] == f"127.0.0.1:{http_echo['h2c']}"


def test_https_with_alpn_h2_and_http1(http_echo: dict[str, int], certs: Path):
    port = http_echo["https"]
    for flag, proto, alpn in (("--http2", "HTTP/2.0", "h2"),
                              ("--http1.1", "HTTP/1.1", "http/1.1")):
        _, body = curl(flag, "--cacert", str(certs / "crt"), "--resolve",
                       f"{HOST}:{port}:127.0.0.1", f"https://{HOST}:{port}/tls")
        assert body["proto"] == proto
        assert body["tls"]["serverName"] == HOST and body["tls"]["negotiatedProtocol"] == alpn


def test_grpc_echo(tmp_path: Path, certs: Path):
    port, secure_port = free_port(), free_port()
    process = start(tmp_path, {"GRPC_ECHO_SERVER": "1", "HTTP_PORT": str(port),
                               "HTTPS_PORT": str(secure_port),
                               "TLS_SERVER_CERT": str(certs / "crt"),
                               "TLS_SERVER_PRIV_KEY": str(certs / "key")}, [port, secure_port])
    types = messages()
    try:
        def call(channel: grpc.Channel, method: str) -> object:
            stub = channel.unary_unary(
                f"/{SERVICE}/{method}", request_serializer=types["EchoRequest"].SerializeToString,
                response_deserializer=types["EchoResponse"].FromString)
            return stub(types["EchoRequest"](), metadata=[("x-asked", "yes")], timeout=5)

        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = call(channel, "EchoTwo")
            assert reply.assertions.fully_qualified_method == f"/{SERVICE}/EchoTwo"
            assert reply.assertions.context.pod == "echo-1"
            assert ("x-asked", "yes") in [(h.key, h.value) for h in reply.assertions.headers]
            with pytest.raises(grpc.RpcError) as failed:
                call(channel, "EchoThree")
            assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED
        credentials = grpc.ssl_channel_credentials((certs / "crt").read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{secure_port}", credentials, options=[
                ("grpc.ssl_target_name_override", HOST)]) as channel:
            reply = call(channel, "Echo")
            assert reply.assertions.tls_assertions.negotiated_protocol == "h2"
    finally:
        process.stop()


def test_tcp_echo_plain_and_tls(tmp_path: Path, certs: Path):
    port, tls_port = free_port(), free_port()
    process = start(tmp_path, {"TCP_ECHO_SERVER": "1", "TCP_PORT": str(port),
                               "TLS_PORT": str(tls_port), "TLS_SERVER_CERT": str(certs / "crt"),
                               "TLS_SERVER_PRIV_KEY": str(certs / "key")}, [port, tls_port])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
            lines = plain.makefile("rwb")
            assert lines.readline() == b"Gateway API Test TCP Server\n"
            lines.write(b"PING\nTEST\n")
            lines.flush()
            assert lines.readline() == b"PONG\n"
            body = json.loads(lines.readline())
            assert body["pod"] == "echo-1" and body["isTLS"] is False
        context = ssl.create_default_context(cafile=str(certs / "crt"))
        raw = socket.create_connection(("127.0.0.1", tls_port), timeout=5)
        with context.wrap_socket(raw, server_hostname=HOST) as secure:
            lines = secure.makefile("rwb")
            lines.readline()
            lines.write(b"TEST\n")
            lines.flush()
            body = json.loads(lines.readline())
            assert body["isTLS"] is True and body["tls"]["serverName"] == HOST
            assert body["tls"]["version"] == "TLS 1.3"
    finally:
        process.stop()


def test_every_request_is_logged_as_echo_basic_logs_it(tmp_path: Path):
    # The suite's mirror tests find a mirrored request by this line in the backend's log.
    port = free_port()
    process = start(tmp_path, {"HTTP_PORT": str(port), "H2C_PORT": str(free_port())}, [port])
    try:
        curl(f"http://127.0.0.1:{port}/mirror?id=1")
        wait_until(lambda: "Echoing back request made to /mirror?id=1 to client (127.0.0.1:"
                   in (tmp_path / "echo.log").read_text(), 5, what="the request's log line")
    finally:
        process.stop()
