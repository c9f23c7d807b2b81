"""The native proxy's HTTP/2 connection, both sides over a real loopback socket."""

from __future__ import annotations

import asyncio

from pilotfish.core.native import http1, http2


async def _pair(handle):  # type: ignore[no-untyped-def]
    served: list[asyncio.Task[None]] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        preface = await reader.readexactly(len(http2.PREFACE))
        assert http2.starts_h2(preface)
        connection = http2.Connection(reader, writer, client=False)
        task = asyncio.current_task()
        assert task is not None
        served.append(task)
        await connection.serve(lambda stream: handle(connection, stream), preface)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = http2.Connection(reader, writer, client=True)
    client.run()
    return server, client


def test_requests_multiplex_with_bodies_past_the_windows_and_trailers():
    async def handle(connection: http2.Connection, stream: http2.Stream) -> None:
        request = http2.request_message(stream)
        if request.target == "/slow":
            await asyncio.sleep(0.3)
        await connection.respond(stream.id, http1.Message(
            [("content-type", "application/grpc"), ("x-path", request.target),
             ("x-host", request.header("host") or "")],
            request.body[::-1], status=200, trailers=[("grpc-status", "0")]))

    async def main() -> None:
        server, client = await _pair(handle)
        big = bytes(range(256)) * 20_000  # 5 MB: many frames and window updates
        slow = asyncio.create_task(client.request(http1.Message(
            [("host", "svc")], b"", "GET", "/slow")))
        fast = await client.request(http1.Message([("host", "svc")], big, "POST", "/big"))
        assert not slow.done()  # the fast one overtook it on the same connection
        assert fast.status == 200 and fast.body == big[::-1]
        assert fast.trailers == [("grpc-status", "0")]
        assert fast.header("x-path") == "/big" and fast.header("x-host") == "svc"
        assert (await slow).header("x-path") == "/slow"
        await client.close()
        server.close()

    asyncio.run(main())


def test_a_reset_stream_fails_only_its_request():
    async def handle(connection: http2.Connection, stream: http2.Stream) -> None:
        if stream.pseudo(":path") == "/reset":
            connection.h2.reset_stream(stream.id)
            connection.writer.write(connection.h2.data_to_send())
            return
        await connection.respond(stream.id, http1.Message([], b"ok", status=200))

    async def main() -> None:
        server, client = await _pair(handle)
        try:
            await client.request(http1.Message([("host", "a")], b"", "GET", "/reset"))
        except http2.StreamError as exc:
            assert "reset" in str(exc)
        else:
            raise AssertionError("a reset stream answered")
        ok = await client.request(http1.Message([("host", "a")], b"", "GET", "/"))
        assert ok.body == b"ok" and client.usable
        await client.close()
        server.close()

    asyncio.run(main())


def test_the_preface_is_told_from_http1():
    assert http2.starts_h2(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00") is True
    assert http2.starts_h2(b"PRI * HT") is None
    assert http2.starts_h2(b"GET / HTTP/1.1\r\n") is False
    assert http2.starts_h2(b"P") is None and http2.starts_h2(b"PO") is False
