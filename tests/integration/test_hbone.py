"""HBONE between pilotfish's own client and server, over real sockets and real mutual TLS
with SPIFFE certificates signed the way pilotfish's CA signs them: tunnels carry bytes both
ways with half-closes, share pooled connections up to ``max_streams``, refuse the wrong
server identity, surface the server's refusals, and end with their connection."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest

from pilotfish.core.native import channels, hbone, http1, http2
from pilotfish.core.native.channels import Channel
from pilotfish.testing.mesh_ca import MeshCA
from pilotfish.testing.servers import tcp_connect

CA = MeshCA()
DB = CA.issue("shop", "db")
WEB = CA.issue("shop", "web")
AUTHORITY = "10.0.0.5:8080"


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 30))


def client_context() -> ssl.SSLContext:
    return hbone.client_context(WEB.chain_pem, WEB.key_pem, CA.roots_pem)


@attrs.define
class Server:
    """``serve()`` on a loopback port; counts the connections it accepted (one server
    context asked for each) and keeps every request its handler heard."""

    port: int
    upstream_port: int
    accepted: int = 0
    requests: list[hbone.TunnelRequest] = attrs.field(factory=list)
    answer: int | None = None  # refuse every tunnel with this status
    fail: bool = False  # the handler raises
    serving: asyncio.Task[None] | None = None  # serve(), to cancel

    def key(self, identities: tuple[str, ...] = (DB.spiffe_id,)) -> hbone.PoolKey:
        return hbone.PoolKey(WEB.spiffe_id, identities, "127.0.0.1", ("127.0.0.1", self.port))


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.write_eof()  # the half close comes back
    await writer.drain()
    writer.close()


@asynccontextmanager
async def hbone_server(upstream: Callable[..., Awaitable[None]] = echo
                       ) -> AsyncIterator[Server]:
    app = await asyncio.start_server(upstream, "127.0.0.1", 0)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    server = Server(listener.getsockname()[1], app.sockets[0].getsockname()[1])
    context = hbone.server_context(DB.chain_pem, DB.key_pem, CA.roots_pem)

    def context_for(local: tuple[str, int]) -> ssl.SSLContext:
        assert local == ("127.0.0.1", server.port)
        server.accepted += 1
        return context

    async def handler(request: hbone.TunnelRequest) -> Channel | int:
        server.requests.append(request)
        if server.fail:
            raise RuntimeError("the handler's own bug")
        if server.answer is not None:
            return server.answer
        reader, writer = await asyncio.open_connection("127.0.0.1", server.upstream_port)
        return channels.TcpChannel(reader, writer)

    task = server.serving = asyncio.get_running_loop().create_task(
        hbone.serve(listener, context_for, handler))
    try:
        yield server
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        listener.close()
        app.close()


async def read_all(channel: Channel) -> bytes:
    out = bytearray()
    while data := await channel.read():
        out += data
    return bytes(out)


def test_a_tunnel_carries_bytes_and_the_request_facts() -> None:
    async def main() -> None:
        async with hbone_server() as server, hbone.HbonePool() as pool:
            sources: list[tuple[str, int]] = []

            async def connect(destination: tuple[str, int]) -> socket.socket:
                sock = await tcp_connect(destination)
                sources.append(sock.getsockname())
                return sock

            headers = [("forwarded", hbone.forwarded(("10.0.0.9", 41000))),
                       ("baggage", hbone.baggage(namespace="shop", workload_name="web")),
                       ("traceparent", hbone.traceparent())]
            tunnel = await pool.open(server.key(), AUTHORITY, headers, client_context, connect)
            assert isinstance(tunnel, hbone.PooledChannel)
            # no Nagle delay on the caller's socket (a tunnel's end waited 40 ms without)
            raw = tunnel.connection.writer.get_extra_info("socket")
            assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            await tunnel.write(b"hello")
            tunnel.end()
            assert await read_all(tunnel) == b"hello"
            await tunnel.close()
            request, = server.requests
            assert request.authority == AUTHORITY
            assert request.peer_identities == (WEB.spiffe_id,)
            assert request.local == ("127.0.0.1", server.port)
            assert request.peer == sources[0]
            assert request.headers == tuple(headers)
            assert request.header("forwarded") == 'for="10.0.0.9:41000"'

    run(main)


def test_twenty_mib_each_way_at_once_with_hbone_windows() -> None:
    payload = bytes(range(256)) * (20 * 4096)  # 20 MiB

    async def main() -> None:
        async with hbone_server() as server, hbone.HbonePool() as pool:
            tunnel = await pool.open(server.key(), AUTHORITY, (), client_context, tcp_connect)
            assert isinstance(tunnel, hbone.PooledChannel)
            # the server's settings as they came over the wire
            remote = tunnel.connection.h2.remote_settings
            assert remote.initial_window_size == hbone.STREAM_WINDOW == 4 << 20
            assert remote.max_frame_size == hbone.MAX_FRAME == 1 << 20

            async def send() -> None:
                view = memoryview(payload)
                for at in range(0, len(payload), 1 << 18):
                    await tunnel.write(bytes(view[at:at + (1 << 18)]))
                tunnel.end()

            _, received = await asyncio.gather(send(), read_all(tunnel))
            assert received == payload
            await tunnel.close()

    run(main)


def test_half_close_each_way() -> None:
    """The client's EOF reaches the app, which still answers; the app's EOF then ends the
    client's reading: the tunnel ends when both sides did."""
    async def count_then_answer(reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        received = await reader.read()  # until the client's half close arrives
        writer.write(f"got {len(received)}".encode())
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with hbone_server(count_then_answer) as server, hbone.HbonePool() as pool:
            tunnel = await pool.open(server.key(), AUTHORITY, (), client_context, tcp_connect)
            await tunnel.write(b"x" * 1000)
            tunnel.end()
            assert await read_all(tunnel) == b"got 1000"
            await tunnel.close()
            assert pool.statistics() == hbone.PoolStatistics(connections=1, streams=0)

    run(main)


def test_concurrent_tunnels_share_one_connection() -> None:
    async def main() -> None:
        async with hbone_server() as server, hbone.HbonePool() as pool:
            async def one(index: int) -> bytes:
                tunnel = await pool.open(server.key(), AUTHORITY, (), client_context,
                                         tcp_connect)
                await tunnel.write(f"tunnel {index}".encode())
                tunnel.end()
                try:
                    return await read_all(tunnel)
                finally:
                    await tunnel.close()

            answers = await asyncio.gather(*(one(i) for i in range(20)))
            assert answers == [f"tunnel {i}".encode() for i in range(20)]
            assert server.accepted == 1
            assert len(server.requests) == 20

    run(main)


def test_more_tunnels_than_max_streams_open_a_second_connection() -> None:
    async def main() -> None:
        async with hbone_server() as server, hbone.HbonePool(max_streams=3) as pool:
            tunnels = await asyncio.gather(*(
                pool.open(server.key(), AUTHORITY, (), client_context, tcp_connect)
                for _ in range(4)))
            assert server.accepted == 2
            assert pool.statistics() == hbone.PoolStatistics(connections=2, streams=4)
            for tunnel in tunnels:
                tunnel.end()
                assert await read_all(tunnel) == b""
                await tunnel.close()
            # a freed stream is reused: no third connection
            again = await pool.open(server.key(), AUTHORITY, (), client_context, tcp_connect)
            await again.close()
            assert server.accepted == 2
            # another destination identity is another pool entry
            other = server.key((DB.spiffe_id, "spiffe://cluster.local/ns/shop/sa/db-v2"))
            third = await pool.open(other, AUTHORITY, (), client_context, tcp_connect)
            await third.close()
            assert server.accepted == 3

    run(main)


def test_a_server_that_is_not_the_expected_identity_is_refused() -> None:
    async def main() -> None:
        async with hbone_server() as server, hbone.HbonePool() as pool:
            wrong = server.key(("spiffe://cluster.local/ns/shop/sa/payments",))
            with pytest.raises(hbone.HboneError) as caught:
                await pool.open(wrong, AUTHORITY, (), client_context, tcp_connect)
            assert caught.value.status is None
            assert DB.spiffe_id in str(caught.value)
            assert "sa/payments" in str(caught.value)
            assert server.requests == []  # no CONNECT was sent
            assert pool.statistics() == hbone.PoolStatistics(connections=0, streams=0)

    run(main)


@pytest.mark.parametrize("status", [401, 503])
def test_a_refusal_surfaces_with_its_status(status: int) -> None:
    async def main() -> None:
        async with hbone_server() as server, hbone.HbonePool() as pool:
            server.answer = status
            with pytest.raises(hbone.HboneError) as caught:
                await pool.open(server.key(), AUTHORITY, (), client_context, tcp_connect)
            assert caught.value.status == status
            # the refused stream is not left counting against the connection
            assert pool.statistics() == hbone.PoolStatistics(connections=1, streams=0)
            server.answer = None
            tunnel = await pool.open(server.key(), AUTHORITY, (), client_context, tcp_connect)
            assert isinstance(tunnel, hbone.PooledChannel)
            assert tunnel.connection.h2.open_outbound_streams == 1  # HTTP/2's count too
            await tunnel.close()
            assert server.accepted == 1

    run(main)


def test_a_handler_that_fails_answers_503_and_the_connection_goes_on() -> None:
    async def main() -> None:
        async with hbone_server() as server, hbone.HbonePool() as pool:
            server.fail = True
            with pytest.raises(hbone.HboneError) as caught:
                await pool.open(server.key(), AUTHORITY, (), client_context, tcp_connect)
            assert caught.value.status == 503
            server.fail = False
            tunnel = await pool.open(server.key(), AUTHORITY, (), client_context, tcp_connect)
            await tunnel.close()
            assert server.accepted == 1

    run(main)


def test_non_connect_requests_and_bad_authorities_get_400() -> None:
    async def main() -> None:
        async with hbone_server() as server, hbone.HbonePool() as pool:
            with pytest.raises(hbone.HboneError) as caught:
                await pool.open(server.key(), "no-port", (), client_context, tcp_connect)
            assert caught.value.status == 400
            reader, writer = await asyncio.open_connection(
                sock=await tcp_connect(("127.0.0.1", server.port)), ssl=client_context(),
                server_hostname="")
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
            assert writer.get_extra_info("ssl_object").version() == "TLSv1.3"
            connection = http2.Connection(reader, writer, client=True)
            connection.run()
            answer = await connection.request(http1.Message(
                [("host", AUTHORITY)], b"", "GET", "/"))
            assert answer.status == 400
            await connection.close()
            assert server.requests == []

    run(main)


def test_a_client_certificate_from_another_mesh_gets_no_tunnel() -> None:
    stranger_ca = MeshCA()
    stranger = stranger_ca.issue("shop", "web")

    def context() -> ssl.SSLContext:  # trusts our server, but its own cert is a stranger's
        return hbone.client_context(stranger.chain_pem, stranger.key_pem, CA.roots_pem)

    async def main() -> None:
        async with hbone_server() as server, hbone.HbonePool() as pool:
            with pytest.raises(hbone.HboneError):
                await pool.open(server.key(), AUTHORITY, (), context, tcp_connect)
            assert server.requests == []

    run(main)


def test_idle_connections_are_closed_after_the_idle_timeout() -> None:
    async def main() -> None:
        async with hbone_server() as server, hbone.HbonePool(idle_timeout=0.2) as pool:
            tunnel = await pool.open(server.key(), AUTHORITY, (), client_context, tcp_connect)
            await asyncio.sleep(0.4)  # busy: not idle, kept
            assert pool.statistics().connections == 1
            tunnel.end()
            await read_all(tunnel)
            await tunnel.close()
            for _ in range(50):
                await asyncio.sleep(0.05)
                if pool.statistics().connections == 0:
                    break
            assert pool.statistics().connections == 0
            again = await pool.open(server.key(), AUTHORITY, (), client_context, tcp_connect)
            await again.close()
            assert server.accepted == 2

    run(main)


def test_a_connection_that_dies_is_dropped_and_its_tunnels_end() -> None:
    async def main() -> None:
        app = await asyncio.start_server(echo, "127.0.0.1", 0)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        context = hbone.server_context(DB.chain_pem, DB.key_pem, CA.roots_pem)

        async def handler(request: hbone.TunnelRequest) -> Channel:
            reader, writer = await asyncio.open_connection(*app.sockets[0].getsockname()[:2])
            return channels.TcpChannel(reader, writer)

        def start() -> asyncio.Task[Any]:
            return asyncio.get_running_loop().create_task(
                hbone.serve(listener, lambda local: context, handler))

        key = hbone.PoolKey(WEB.spiffe_id, (DB.spiffe_id,), "127.0.0.1", ("127.0.0.1", port))
        async with hbone.HbonePool() as pool:
            serving = start()
            tunnel = await pool.open(key, AUTHORITY, (), client_context, tcp_connect)
            serving.cancel()  # the server goes, and its connections with it
            await asyncio.gather(serving, return_exceptions=True)
            with pytest.raises(http2.StreamError):
                await read_all(tunnel)
            await tunnel.close()
            for _ in range(50):
                if pool.statistics().connections == 0:
                    break
                await asyncio.sleep(0.02)
            assert pool.statistics().connections == 0
            serving = start()
            again = await pool.open(key, AUTHORITY, (), client_context, tcp_connect)
            await again.write(b"back")
            again.end()
            assert await read_all(again) == b"back"
            await again.close()
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
        listener.close()
        app.close()

    run(main)


def test_an_abandoned_tunnel_closes_its_upstream() -> None:
    closed = asyncio.Event

    async def main() -> None:
        upstream_done = closed()

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # returns when the tunnel's upstream side goes
            upstream_done.set()
            writer.close()

        async with hbone_server(hold) as server, hbone.HbonePool() as pool:
            tunnel = await pool.open(server.key(), AUTHORITY, (), client_context, tcp_connect)
            await tunnel.write(b"partial")
            await tunnel.close()  # no end(): a reset, not a half close
            await asyncio.wait_for(upstream_done.wait(), 5)
            assert pool.statistics().streams == 0

    run(main)


def test_relay_joins_an_app_connection_to_a_tunnel_and_ends_when_the_tunnel_breaks() -> None:
    """An outbound path as ztunnel's: an app connection relayed into a pooled tunnel. The
    app never closes its side; when the server goes, the relay ends at once and the app's
    connection is closed."""
    async def main() -> None:
        received = asyncio.Queue[bytes]()

        async def app_upstream(reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
            received.put_nowait(await reader.read(100))
            await reader.read()

        relayed = asyncio.Event()
        async with hbone_server(app_upstream) as server, hbone.HbonePool() as pool:
            async def outbound(reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
                tunnel = await pool.open(server.key(), AUTHORITY, (), client_context,
                                         tcp_connect)
                assert isinstance(tunnel, hbone.PooledChannel)
                app = channels.TcpChannel(reader, writer)
                try:
                    await hbone.relay(tunnel, app)
                finally:
                    await tunnel.close()
                    await app.close()
                    relayed.set()

            front = await asyncio.start_server(outbound, "127.0.0.1", 0)
            reader, writer = await asyncio.open_connection(*front.sockets[0].getsockname()[:2])
            writer.write(b"abc")
            await writer.drain()
            assert await asyncio.wait_for(received.get(), 5) == b"abc"
            assert server.serving is not None
            server.serving.cancel()  # the server goes, the app's side still open
            await asyncio.wait_for(relayed.wait(), 5)
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            front.close()

    run(main)


def test_the_server_certificate_is_chosen_by_local_address_and_may_be_awaited() -> None:
    """One listener answering for several addresses, as ztunnel answers for each pod with
    that pod's certificate: 127.0.0.1 is db, 127.0.0.2 is reviews, 127.0.0.3 has none."""
    reviews = CA.issue("shop", "reviews")
    contexts = {"127.0.0.1": hbone.server_context(DB.chain_pem, DB.key_pem, CA.roots_pem),
                "127.0.0.2": hbone.server_context(reviews.chain_pem, reviews.key_pem,
                                                  CA.roots_pem)}

    async def main() -> None:
        app = await asyncio.start_server(echo, "127.0.0.1", 0)
        listener = socket.socket()
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        port = listener.getsockname()[1]
        asked: list[tuple[str, int]] = []

        async def context_for(local: tuple[str, int]) -> ssl.SSLContext:
            asked.append(local)
            await asyncio.sleep(0)  # as a certificate fetched on demand would
            return contexts[local[0]]  # KeyError: no workload there

        async def handler(request: hbone.TunnelRequest) -> Channel:
            reader, writer = await asyncio.open_connection(*app.sockets[0].getsockname()[:2])
            return channels.TcpChannel(reader, writer)

        serving = asyncio.get_running_loop().create_task(
            hbone.serve(listener, context_for, handler))
        async with hbone.HbonePool() as pool:
            for ip, identity in (("127.0.0.1", DB.spiffe_id),
                                 ("127.0.0.2", reviews.spiffe_id)):
                key = hbone.PoolKey(WEB.spiffe_id, (identity,), "127.0.0.1", (ip, port))
                tunnel = await pool.open(key, AUTHORITY, (), client_context, tcp_connect)
                await tunnel.write(ip.encode())
                tunnel.end()
                assert await read_all(tunnel) == ip.encode()
                await tunnel.close()
            nobody = hbone.PoolKey(WEB.spiffe_id, (DB.spiffe_id,), "127.0.0.1",
                                   ("127.0.0.3", port))
            with pytest.raises(hbone.HboneError):
                await pool.open(nobody, AUTHORITY, (), client_context, tcp_connect)
        assert asked == [("127.0.0.1", port), ("127.0.0.2", port), ("127.0.0.3", port)]
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        listener.close()
        app.close()

    run(main)
