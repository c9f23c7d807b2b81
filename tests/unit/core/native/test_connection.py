"""HTTP/1.1 connections on asyncio protocols (``core/native/connection.py``), over real
loopback sockets: requests out of a downstream connection, exchanges upstream with their
timeouts, and the hand-over to streams for HTTP/2 and upgrades."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from pilotfish.core.native import http1, http1_codec
from pilotfish.core.native.connection import Http1Connection

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _upstream(serve: Serve) -> tuple[Http1Connection, asyncio.Server]:
    """A server running ``serve`` and a connection to it adopted as the proxy does."""
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    return Http1Connection.adopt(writer, http1_codec.Parser(response=True)), server


async def _answer_after(delays: list[float], reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
    """Answer each request after the next of ``delays`` (a 100 Continue first)."""
    for delay in delays:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(delay)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n"
                     b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
    await reader.read()


REQUEST = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"


def test_exchanges_skip_1xx_and_keep_the_connection() -> None:
    async def main() -> None:
        connection, server = await _upstream(
            lambda r, w: _answer_after([0, 0, 0], r, w))
        async with server:
            for _ in range(3):
                response = await connection.exchange(REQUEST, timeout=5)
                assert (response.status, response.body) == (200, b"ok")
            connection.close()
    asyncio.run(main())


def test_a_slow_answer_times_out_and_a_timer_left_armed_does_not_fire_late() -> None:
    async def main() -> None:
        # The first exchange (5 s allowed) ends at once and leaves its timer armed; the
        # second has 0.2 s and must get a timer of its own, earlier.
        connection, server = await _upstream(
            lambda r, w: _answer_after([0, 1.0], r, w))
        async with server:
            assert (await connection.exchange(REQUEST, timeout=5)).status == 200
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError):
                await connection.exchange(REQUEST, timeout=0.2)
            assert loop.time() - started < 0.9
            connection.close()
    asyncio.run(main())


def test_an_exchange_outlives_the_deadline_of_an_earlier_one() -> None:
    async def main() -> None:
        # Three quick exchanges of 0.3 s each, then one that takes 0.25 s: it starts after
        # the first exchange's deadline would have passed, so a timer moved on (not the
        # first one's) must judge it.
        connection, server = await _upstream(
            lambda r, w: _answer_after([0, 0, 0, 0.25], r, w))
        async with server:
            for _ in range(3):
                assert (await connection.exchange(REQUEST, timeout=0.3)).status == 200
            await asyncio.sleep(0.1)
            assert (await connection.exchange(REQUEST, timeout=0.3)).status == 200
            connection.close()
    asyncio.run(main())


def test_the_upstream_closing_first_is_an_eof() -> None:
    async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async def main() -> None:
        connection, server = await _upstream(close)
        async with server:
            with pytest.raises(EOFError):
                await connection.exchange(REQUEST, timeout=5)
            assert connection.is_closing()
    asyncio.run(main())


async def _downstream(client: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                       Awaitable[None]],
                      serve: Callable[[Http1Connection], Awaitable[None]]) -> None:
    """A listening Http1Connection (raw at first, as the proxy's) and ``client`` on it."""
    done = asyncio.get_running_loop().create_future()

    async def accepted(connection: Http1Connection) -> None:
        try:
            await serve(connection)
        finally:
            connection.close()
            done.set_result(None)

    def factory() -> Http1Connection:
        connection = Http1Connection(http1_codec.Parser(), raw=True)
        asyncio.get_running_loop().call_soon(
            lambda: asyncio.ensure_future(accepted(connection)))
        return connection

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    async with server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1])
        await client(reader, writer)
        await done
        writer.close()


def test_pipelined_requests_come_out_in_order_and_answers_go_back() -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /1 HTTP/1.1\r\nhost: a\r\n\r\nGET /2 HTTP/1.1\r\nhost: a\r\n\r\n"
                     b"POST /3 HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabc")
        writer.write_eof()
        assert await reader.read() == b"/1/2/3abc"

    async def serve(connection: Http1Connection) -> None:
        assert (await connection.first()).startswith(b"G")
        connection.parse()
        while (request := await connection.next()) is not None:
            connection.write(request.target.encode() + request.body)
            await connection.drain()

    asyncio.run(_downstream(client, serve))


def test_bytes_after_an_upgrade_reach_the_streams_unparsed() -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /ws HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\n"
                     b"upgrade: websocket\r\n\r\nfirst")
        await writer.drain()
        assert await reader.readexactly(5) == b"first"
        writer.write(b"\x00\x01not http")
        writer.write_eof()
        assert await reader.read() == b"\x00\x01not http"

    async def serve(connection: Http1Connection) -> None:
        await connection.first()
        connection.parse()
        request = await connection.next()
        assert request is not None and request.upgrade is not None
        reader, writer = connection.streams()
        writer.write(request.upgrade)  # what came with the head, then the rest as it comes
        while data := await reader.read(100):
            writer.write(data)
        await writer.drain()

    asyncio.run(_downstream(client, serve))


def test_http2_bytes_are_handed_over_whole() -> None:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(preface + b"frames")
        writer.write_eof()
        assert await reader.read() == preface + b"frames"

    async def serve(connection: Http1Connection) -> None:
        await connection.first(len(preface))
        reader, writer = connection.streams()
        writer.write(await reader.read())
        await writer.drain()

    asyncio.run(_downstream(client, serve))


def test_bytes_that_are_not_http_are_an_error() -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\x16\x03\x01 not http at all\r\n\r\n")
        await writer.drain()
        await reader.read()

    async def serve(connection: Http1Connection) -> None:
        await connection.first()
        connection.parse()
        with pytest.raises(http1.ParseError):
            await connection.next()

    asyncio.run(_downstream(client, serve))


def test_a_streamed_body_is_read_only_as_fast_as_it_is_taken() -> None:
    body = b"x" * (3 << 20)

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        await reader.read()

    async def main() -> None:
        connection, server = await _upstream(big)
        async with server:
            head = await connection.exchange(REQUEST, timeout=5, stream_over=1024)
            assert head.streamed and head.body == b""
            await asyncio.sleep(0.3)  # nothing taken: past the buffer, reading stops
            assert connection.transport is not None
            assert not connection.transport.is_reading()  # type: ignore[attr-defined]
            received = 0
            while data := await connection.chunk():
                received += len(data)
            assert received == len(body)
            assert connection.transport.is_reading()  # type: ignore[attr-defined]
            connection.close()
    asyncio.run(main())
