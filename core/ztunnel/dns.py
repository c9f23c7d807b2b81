"""ztunnel's DNS proxy on 15053 in each pod: the sockets' side of ``ambient.dns``.

The in-pod rules redirect the app's DNS (UDP and TCP port 53) here. Each query is decided
by ``ambient.dns.decide`` for the pod's namespace; what the mesh does not hold goes to the
upstream resolvers from inside the pod's network namespace, on a socket marked 1337 so the
in-pod rules let it out instead of redirecting it back here — the same transport the
client used (a truncated UDP answer makes the client ask again over TCP). No upstream
answers within the timeout, or none is configured: SERVFAIL, so the client moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Sequence
from typing import Any

from pilotfish.core.ambient import dns
from pilotfish.core.ambient.state import WorkloadState
from pilotfish.core.native.sockets import in_netns
from pilotfish.core.ztunnel.inpod import MARK

log = logging.getLogger("pilotfish.ztunnel.dns")

PORT = 53
FORWARD_TIMEOUT = 5.0  # Istio's DNS_FORWARD_TIMEOUT, for all the upstreams together
MAX_IN_FLIGHT = 256  # per pod and transport; further UDP queries are dropped (clients retry)
TCP_IDLE = 10.0  # a TCP client that sends nothing for this long is closed


class DnsProxy:
    """What every pod's 15053 shares: the mesh's names and the upstream resolvers."""

    def __init__(self, state: WorkloadState, upstreams: Sequence[str] = (),
                 domain: str = "cluster.local", timeout: float = FORWARD_TIMEOUT) -> None:
        self.state = state
        self.upstreams = tuple(upstreams)
        self.domain = domain
        self.timeout = timeout
        self.counts = {"answered": 0, "forwarded": 0, "formerr": 0, "servfail": 0}

    def statistics(self) -> dict[str, int]:
        return dict(self.counts)

    async def handle(self, data: bytes, namespace: str, netns_fd: int,
                     tcp: bool) -> bytes | None:
        """The answer to one query from a pod in ``namespace`` (None: nothing to send)."""
        decision = dns.decide(self.state, data, namespace, self.domain,
                              None if tcp else dns.UDP_LIMIT)
        if decision is None:
            self.counts["formerr"] += 1
            return None
        if isinstance(decision, dns.Reply):
            key = "formerr" if decision.wire[3] & 0xF == dns.FORMERR else "answered"
            self.counts[key] += 1
            return decision.wire
        self.counts["forwarded"] += 1
        answer = await self.forward(decision.query.wire, netns_fd, tcp)
        if answer is None:
            self.counts["servfail"] += 1
            return dns.response(decision.query, dns.SERVFAIL)
        return answer

    async def forward(self, data: bytes, netns_fd: int, tcp: bool) -> bytes | None:
        """The first upstream's answer to ``data``, asked from the pod's namespace."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout):
                for server in self.upstreams:
                    try:
                        if tcp:
                            return await _ask_tcp(server, data, netns_fd)
                        return await _ask_udp(server, data, netns_fd)
                    except (OSError, asyncio.IncompleteReadError) as exc:
                        log.debug("upstream %s: %s", server, exc)
        return None

    # -- the pod's two sockets --------------------------------------------------------

    async def serve_udp(self, sock: socket.socket, namespace: str, netns_fd: int) -> None:
        # A datagram endpoint, not sock_recvfrom: uvloop (ztunnel's loop) has no
        # sock_recvfrom/sock_sendto.
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue(MAX_IN_FLIGHT)

        class Receiver(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                with contextlib.suppress(asyncio.QueueFull):  # too many: dropped, as UDP
                    queue.put_nowait((data, addr))

        transport, _ = await loop.create_datagram_endpoint(Receiver, sock=sock)
        in_flight: set[asyncio.Task[None]] = set()
        try:
            async with asyncio.TaskGroup() as group:
                while True:
                    data, client = await queue.get()
                    if len(in_flight) >= MAX_IN_FLIGHT:
                        continue
                    task = group.create_task(self._udp_one(transport, data, client,
                                                           namespace, netns_fd))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
        finally:
            transport.close()

    async def _udp_one(self, transport: asyncio.DatagramTransport, data: bytes,
                       client: tuple[str, int], namespace: str, netns_fd: int) -> None:
        try:
            answer = await self.handle(data, namespace, netns_fd, tcp=False)
            if answer is not None and not transport.is_closing():
                transport.sendto(answer, client)
        except Exception:  # one query's failure is that query's
            log.exception("DNS query from %s in %s failed", client, namespace)

    async def serve_tcp(self, listener: socket.socket, namespace: str, netns_fd: int) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as group:
            while True:
                conn, _ = await loop.sock_accept(listener)
                group.create_task(self._tcp_client(conn, namespace, netns_fd))

    async def _tcp_client(self, conn: socket.socket, namespace: str, netns_fd: int) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
        except OSError:
            conn.close()
            return
        try:
            while True:
                try:
                    size = struct.unpack("!H", await asyncio.wait_for(
                        reader.readexactly(2), TCP_IDLE))[0]
                    data = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE)
                except (TimeoutError, asyncio.IncompleteReadError, OSError):
                    return
                answer = await self.handle(data, namespace, netns_fd, tcp=True)
                if answer is None:
                    return
                writer.write(struct.pack("!H", len(answer)) + answer)
                await writer.drain()
        except Exception:
            log.exception("DNS over TCP in %s failed", namespace)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _family(server: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in server else socket.AF_INET


async def _marked(netns_fd: int, server: str, kind: socket.SocketKind) -> socket.socket:
    def make() -> socket.socket:
        sock = socket.socket(_family(server), kind)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, MARK)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    return await in_netns(netns_fd, make)


async def _ask_udp(server: str, data: bytes, netns_fd: int) -> bytes:
    loop = asyncio.get_running_loop()
    sock = await _marked(netns_fd, server, socket.SOCK_DGRAM)
    try:
        # Connected: only the server's datagrams are read, and an ICMP "port unreachable"
        # fails the read at once instead of at the timeout.
        await loop.sock_connect(sock, (server, PORT))
        await loop.sock_sendall(sock, data)
        while True:
            answer = await loop.sock_recv(sock, 65535)
            if answer[:2] == data[:2]:
                return answer
    finally:
        sock.close()


async def _ask_tcp(server: str, data: bytes, netns_fd: int) -> bytes:
    loop = asyncio.get_running_loop()
    sock = await _marked(netns_fd, server, socket.SOCK_STREAM)
    try:
        await loop.sock_connect(sock, (server, PORT))
    except BaseException:
        sock.close()
        raise
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        return await reader.readexactly(size)
    finally:
        writer.close()
