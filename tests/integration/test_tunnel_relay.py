"""The direct relay (``core/native/tunnel_relay.py``) as ztunnel uses it on both ends of an
HBONE tunnel: an app's TCP connection relayed into a pooled tunnel on the client side, the
tunnel relayed to an upstream's TCP connection on the server side, both as
``channels.SocketChannel`` counted by ``channels.Counted``. Real sockets, real mutual TLS,
on asyncio's loop and on uvloop (ztunnel's): bytes both ways past the HBONE windows, each
half close passed on, a slow reader held by the flow-control window rather than by
buffering, and a connection reset on one side ending the relay on the other."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import uvloop

from pilotfish.core.native import channels, hbone
from pilotfish.core.native.channels import Channel
from pilotfish.testing.mesh_ca import MeshCA
from pilotfish.testing.servers import tcp_connect

CA = MeshCA()
DB = CA.issue("shop", "db")
WEB = CA.issue("shop", "web")
AUTHORITY = "10.0.0.5:8080"
LOOPS = ["asyncio", "uvloop"]


def run(loop: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    runner = asyncio.run if loop == "asyncio" else uvloop.run
    runner(asyncio.wait_for(main(), 30))


@attrs.define
class Counts:
    """Bytes counted by one side's ``Counted`` channels."""

    read: int = 0  # from the app
    written: int = 0  # to the app

    def add_read(self, n: int) -> None:
        self.read += n

    def add_written(self, n: int) -> None:
        self.written += n


@attrs.define
class Path:
    """An app → client relay → HBONE → server relay → upstream path on loopback."""

    address: tuple[str, int]  # where the app connects
    client: Counts = attrs.field(factory=Counts)
    server: Counts = attrs.field(factory=Counts)
    client_sockets: list[channels.SocketChannel] = attrs.field(factory=list)
    tunnels: list[hbone.PooledChannel] = attrs.field(factory=list)
    relays_done: int = 0
    done: asyncio.Event = attrs.field(factory=asyncio.Event)  # both relays of a tunnel

    def one_done(self) -> None:
        self.relays_done += 1
        if self.relays_done == 2:
            self.done.set()


def client_context() -> ssl.SSLContext:
    return hbone.client_context(WEB.chain_pem, WEB.key_pem, CA.roots_pem)


@asynccontextmanager
async def relayed(upstream: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                     Awaitable[None]]) -> AsyncIterator[Path]:
    loop = asyncio.get_running_loop()
    app = await asyncio.start_server(upstream, "127.0.0.1", 0)
    upstream_port = app.sockets[0].getsockname()[1]
    hbone_listener = socket.socket()
    hbone_listener.bind(("127.0.0.1", 0))
    hbone_listener.listen()
    front = socket.socket()
    front.bind(("127.0.0.1", 0))
    front.listen()
    front.setblocking(False)
    path = Path(front.getsockname())
    context = hbone.server_context(DB.chain_pem, DB.key_pem, CA.roots_pem)
    key = hbone.PoolKey(WEB.spiffe_id, (DB.spiffe_id,), "127.0.0.1",
                        hbone_listener.getsockname())

    class Upstream(channels.Counted):
        async def close(self) -> None:
            await super().close()
            path.one_done()

    async def handler(request: hbone.TunnelRequest) -> Channel | int:
        sock = await tcp_connect(("127.0.0.1", upstream_port))
        return Upstream(await channels.SocketChannel.of(sock), path.server.add_written,
                        path.server.add_read)

    async def outbound(conn: socket.socket, pool: hbone.HbonePool) -> None:
        tunnel = await pool.open(key, AUTHORITY, (), client_context, tcp_connect)
        assert isinstance(tunnel, hbone.PooledChannel)
        path.tunnels.append(tunnel)
        own = await channels.SocketChannel.of(conn)
        path.client_sockets.append(own)
        try:
            await hbone.relay(tunnel, channels.Counted(own, path.client.add_read,
                                                       path.client.add_written))
        finally:
            await tunnel.close()
            await own.close()
            path.one_done()

    async def accept(pool: hbone.HbonePool) -> None:
        tasks: set[asyncio.Task[None]] = set()
        while True:
            conn, _ = await loop.sock_accept(front)
            task = loop.create_task(outbound(conn, pool))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async with hbone.HbonePool() as pool:
        serving = loop.create_task(hbone.serve(hbone_listener, lambda local: context, handler))
        accepting = loop.create_task(accept(pool))
        try:
            yield path
        finally:
            for task in (serving, accepting):
                task.cancel()
            await asyncio.gather(serving, accepting, return_exceptions=True)
            for sock in (hbone_listener, front):
                sock.close()
            app.close()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.write_eof()
    await writer.drain()
    writer.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_twenty_mib_each_way_at_once_through_both_relays(loop: str) -> None:
    payload = bytes(range(256)) * (20 * 4096)  # 20 MiB: five of HBONE's stream windows

    async def main() -> None:
        async with relayed(echo) as path:
            reader, writer = await asyncio.open_connection(*path.address)

            async def send() -> None:
                for at in range(0, len(payload), 1 << 18):
                    writer.write(payload[at:at + (1 << 18)])
                    await writer.drain()
                writer.write_eof()

            _, received = await asyncio.gather(send(), reader.read())
            assert received == payload
            await asyncio.wait_for(path.done.wait(), 5)
            writer.close()
            # counted as they passed, each side from its app's point of view
            assert path.client == Counts(read=len(payload), written=len(payload))
            assert path.server == Counts(read=len(payload), written=len(payload))
            # the DATA frames went past h2's machinery both ways (``h2_frames``)
            taken, sent = path.tunnels[0].connection.fast_frames
            assert taken > 10 and sent > 10, (taken, sent)

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_each_half_close_is_passed_on_and_the_relays_end_when_both_did(loop: str) -> None:
    async def count_then_answer(reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        received = await reader.read()  # until the app's half close arrives
        writer.write(f"got {len(received)}".encode())
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with relayed(count_then_answer) as path:
            reader, writer = await asyncio.open_connection(*path.address)
            writer.write(b"x" * 1000)
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 5) == b"got 1000"
            await asyncio.wait_for(path.done.wait(), 5)
            writer.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_slow_reader_is_held_by_the_window_not_by_buffering(loop: str) -> None:
    """The upstream sends 24 MiB to an app that reads nothing for a while: what waits in
    the relay for the app is bounded by HBONE's stream window (the data it did not
    acknowledge), not by what the upstream would send; then everything arrives."""
    payload = bytes(range(256)) * (24 * 4096)

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with relayed(flood) as path:
            reader, writer = await asyncio.open_connection(*path.address)
            writer.write(b"go")  # the tunnel opens with the first connection
            await writer.drain()
            await asyncio.sleep(1.0)
            assert path.client_sockets
            transport = path.client_sockets[0].transport
            assert transport is not None
            held = transport.get_write_buffer_size()
            assert held <= hbone.STREAM_WINDOW + hbone.MAX_FRAME, held
            assert path.client.written < len(payload)  # the upstream was stopped
            assert await asyncio.wait_for(reader.read(), 10) == payload
            writer.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_an_upstream_reset_ends_the_apps_connection(loop: str) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(10)
        writer.transport.abort()

    async def main() -> None:
        async with relayed(reset) as path:
            reader, writer = await asyncio.open_connection(*path.address)
            writer.write(b"hello")
            await writer.drain()
            # the app hears the end at once (the tunnel's end, then its reset)...
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            # ...and once it closes too, both relays are over
            await asyncio.wait_for(path.done.wait(), 5)

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_socket_channel_buffers_until_attached_then_pushes(loop: str) -> None:
    """Read as a channel, a socket stops being read past its limit; a consumer attached
    later gets what was buffered first, then the end."""
    async def main() -> None:
        got: list[bytes] = []
        ended = asyncio.Event()

        @attrs.define
        class Collect:
            def received(self, data: bytes) -> None:
                got.append(data)

            def eof(self) -> None:
                ended.set()

            def drained(self) -> None:
                return None

            def lost(self) -> None:
                ended.set()

        one, other = socket.socketpair()
        one.setblocking(False)
        channel = await channels.SocketChannel.of(one)
        channel.limit = 4
        other.sendall(b"first")
        assert await channel.read() == b"first"
        other.sendall(b"0123456789")
        await asyncio.sleep(0.1)  # buffered past the limit: reading paused
        other.sendall(b"later")
        other.shutdown(socket.SHUT_WR)
        await asyncio.sleep(0.1)
        channel.attach(Collect())
        await asyncio.wait_for(ended.wait(), 5)
        assert b"".join(got) == b"0123456789later"
        await channel.write(b"back")
        channel.end()
        assert other.recv(10) == b"back"
        await channel.close()
        other.close()

    run(loop, main)
