"""core/http.py's server, now on asyncio's streams: started by anyio's task groups as before,
on real sockets (TCP, unix, TLS), keep-alive, streamed bodies cleaned up, errors that name
the address."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from pilotfish.core.http import HttpServer, Request, Response
from pilotfish.testing.mesh_ca import MeshCA


async def _echo(request: Request) -> Response:
    return Response.text(f"{request.method} {request.path} {request.query} {request.body!r} "
                         f"from {request.peer_host}\n")


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes) -> bytes:
    """One request and its whole (content-length) answer on an open connection."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head + await reader.readexactly(length)


@pytest.mark.anyio
async def test_an_anyio_group_starts_it_and_it_keeps_connections_alive() -> None:
    async with anyio.create_task_group() as group:
        port = await group.start(HttpServer({"/echo": _echo}).serve, "127.0.0.1:0")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        first = await _exchange(reader, writer, b"POST /echo?a=1 HTTP/1.1\r\nhost: x\r\n"
                                                b"content-length: 2\r\n\r\nhi")
        second = await _exchange(reader, writer, b"GET /nowhere HTTP/1.1\r\nhost: x\r\n\r\n")
        writer.close()
        group.cancel_scope.cancel()
    assert first.startswith(b"HTTP/1.1 200 ")
    assert first.endswith(b"POST /echo {'a': '1'} b'hi' from 127.0.0.1\n")
    assert second.startswith(b"HTTP/1.1 404 ") and b"known paths:\n/echo\n" in second


@pytest.mark.anyio
async def test_cancelling_the_server_closes_its_connections() -> None:
    async with anyio.create_task_group() as group:
        port = await group.start(HttpServer({}).serve, "127.0.0.1:0")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)  # accepted: a connection task waits for a request
        group.cancel_scope.cancel()
    with anyio.fail_after(2):
        assert await reader.read() == b""
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


@pytest.mark.anyio
async def test_a_busy_port_is_an_error_naming_the_address() -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{taken.getsockname()[1]}"
    try:
        with pytest.raises(OSError, match=f"cannot listen on {address}: "):
            await HttpServer({}).serve(address)
    finally:
        taken.close()


@pytest.mark.anyio
async def test_a_streamed_body_is_closed_when_the_client_goes(tmp_path: Path) -> None:
    closed = asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"event\n"
                await asyncio.sleep(0.01)
        finally:
            await asyncio.sleep(0.01)  # a clean-up that awaits still runs to its end
            closed.set()

    async def watch(request: Request) -> Response:
        return Response(stream=events())

    socket_path = tmp_path / "http.sock"
    async with anyio.create_task_group() as group:
        await group.start(HttpServer({"/watch": watch}).serve_unix, str(socket_path))
        assert socket_path.stat().st_mode & 0o777 == 0o600
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
        writer.write(b"GET /watch HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower()
        assert b"event" in await reader.readuntil(b"event\n")
        writer.close()
        with anyio.fail_after(5):
            await closed.wait()
        group.cancel_scope.cancel()
    assert not socket_path.exists()  # removed on the way out


@pytest.mark.anyio
async def test_it_speaks_tls_when_given_a_context(tmp_path: Path) -> None:
    ca = MeshCA()
    cert = ca.issue("default", "web")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    (tmp_path / "chain.pem").write_bytes(cert.chain_pem)
    (tmp_path / "key.pem").write_bytes(cert.key_pem)
    server.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(cadata=ca.roots_pem.decode())
    client.check_hostname = False
    async with anyio.create_task_group() as group:
        port = await group.start(lambda task_status: HttpServer({"/echo": _echo}).serve(
            "127.0.0.1:0", ssl_context=server, task_status=task_status))
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        answer = await _exchange(reader, writer, b"GET /echo HTTP/1.1\r\nhost: x\r\n\r\n")
        plain_reader, plain_writer = await asyncio.open_connection("127.0.0.1", port)
        plain_writer.write(b"GET /echo HTTP/1.1\r\nhost: x\r\n\r\n")  # not TLS: refused
        with anyio.fail_after(5):
            refused = await plain_reader.read()
        writer.close()
        plain_writer.close()
        group.cancel_scope.cancel()
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"from 127.0.0.1\n")
    assert b"HTTP/1.1 200" not in refused
