"""ztunnel's DNS proxy in a real network namespace with Istio's in-pod rules, DNS capture on:
the pod's app sends plain DNS to its resolv.conf's nameserver; the rules redirect it to
ztunnel's 15053 in the pod (this process holds the sockets).

Proves: a mesh name is answered by ztunnel from discovery's state over UDP and TCP (the
upstream resolver never sees it), whatever server the app asked; other names are forwarded
to the upstream resolver from the pod's own address, on a socket the rules do not redirect
back, and its answer reaches the app over either transport; a malformed query gets FORMERR
and the proxy keeps answering; with no upstream reachable the app gets SERVFAIL at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from pilotfish.core.ambient import dns
from pilotfish.core.ambient.state import WorkloadState
from pilotfish.core.ambient.zds import WorkloadInfo
from pilotfish.core.native import loop
from pilotfish.core.native.sockets import in_netns
from pilotfish.core.ztunnel.certs import IdentityCerts
from pilotfish.core.ztunnel.dns import DnsProxy
from pilotfish.core.ztunnel.metrics import Metrics
from pilotfish.core.ztunnel.proxy import Ztunnel
from pilotfish.interceptors.ambient_rules import inpod_plan
from pilotfish.interceptors.ambient_settings import AmbientSettings
from pilotfish.testing.mesh_ca import MeshCA
from tests.integration.test_ztunnel import load_state

BRIDGE = "pfdns-br"
POD, POD_IP = "pfdns-a", "10.249.0.2"
UPSTREAM, UPSTREAM_IP = "pfdns-up", "10.249.0.53"
SILENT_IP = "10.249.0.99"  # the upstream's namespace holds it, but nothing listens on it
VIP = "10.249.1.10"
EXTERNAL = "192.0.2.7"  # what the upstream resolver answers for every name

MESH = f"""apiVersion: v1
kind: Namespace
metadata: {{name: shop, labels: {{istio.io/dataplane-mode: ambient}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {POD}, namespace: shop, labels: {{app: client}}}}
spec: {{serviceAccountName: client, nodeName: node-a, containers: [{{name: app}}]}}
status: {{phase: Running, podIP: {POD_IP}, conditions: [{{type: Ready, status: "True"}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: shop}}
spec: {{clusterIP: {VIP}, selector: {{app: echo}}, ports: [{{port: 80}}]}}
"""
LATER = """---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.example.com]
  addresses: [240.240.0.5]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: STATIC
  endpoints: [{address: 10.9.9.9}]
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture(scope="module")
def network() -> Iterator[dict[str, int]]:
    """The pod (in-pod rules with DNS capture) and an upstream resolver's namespace on a
    bridge; their netns fds by name."""
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
    for name in (POD, UPSTREAM):
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "link", "set", BRIDGE, "up")
    plan = inpod_plan(AmbientSettings(enable_ipv6=False, redirect_dns=True))
    fds = {}
    try:
        for index, (name, ip) in enumerate(((POD, POD_IP), (UPSTREAM, UPSTREAM_IP))):
            sh("ip", "netns", "add", name)
            sh("ip", "link", "add", f"pfdns{index}", "type", "veth", "peer", "name", "eth0",
               "netns", name)
            sh("ip", "link", "set", f"pfdns{index}", "master", BRIDGE, "up")
            sh("ip", "-n", name, "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "-n", name, "link", "set", "eth0", "up")
            sh("ip", "-n", name, "link", "set", "lo", "up")
            fds[name] = os.open(f"/run/netns/{name}", os.O_RDONLY)
        sh("ip", "-n", UPSTREAM, "addr", "add", f"{SILENT_IP}/24", "dev", "eth0")
        subprocess.run(["ip", "netns", "exec", POD, "iptables-restore"], check=True,
                       input=plan.restore_v4().encode(), capture_output=True)
        for route in plan.routes:
            sh("ip", "netns", "exec", POD, "ip", *route)
        yield fds
    finally:
        for fd in fds.values():
            os.close(fd)
        for name in (POD, UPSTREAM):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


class Upstream:
    """A resolver in its own namespace answering every A query with ``EXTERNAL``, over UDP
    and TCP, recording who asked what."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.asked: list[tuple[str, str, str]] = []  # (transport, client IP, name)
        self.sockets: list[socket.socket] = []
        self.task: asyncio.Task[None] | None = None

    def answer(self, data: bytes, transport: str, client: str) -> bytes:
        query = dns.parse_query(data)
        self.asked.append((transport, client, query.question.name))
        return dns.response(query, dns.NOERROR, [EXTERNAL])

    async def start(self) -> None:
        def make(kind: socket.SocketKind) -> socket.socket:
            sock = socket.socket(socket.AF_INET, kind)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((UPSTREAM_IP, 53))
            if kind == socket.SOCK_STREAM:
                sock.listen()
            sock.setblocking(False)
            return sock

        udp = await in_netns(self.fd, lambda: make(socket.SOCK_DGRAM))
        tcp = await in_netns(self.fd, lambda: make(socket.SOCK_STREAM))
        self.sockets = [udp, tcp]
        self.task = asyncio.get_running_loop().create_task(self._udp(udp))
        await asyncio.start_server(self._tcp, sock=tcp)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        for sock in self.sockets:
            sock.close()

    async def _udp(self, sock: socket.socket) -> None:
        # A datagram endpoint: uvloop has no sock_recvfrom/sock_sendto.
        upstream = self

        class Server(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: Any) -> None:
                self.transport.sendto(  # type: ignore[attr-defined]
                    upstream.answer(data, "udp", addr[0]), addr)

        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            Server, sock=sock)
        try:
            await asyncio.Event().wait()
        finally:
            transport.close()

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        answer = self.answer(await reader.readexactly(size), "tcp",
                             writer.get_extra_info("peername")[0])
        writer.write(struct.pack("!H", len(answer)) + answer)
        await writer.drain()
        writer.close()


async def udp_ask(fd: int, server: str, data: bytes) -> bytes:
    """A query as the pod's app sends it (no mark: the rules redirect it)."""

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(5)
        return sock

    def ask(sock: socket.socket) -> tuple[bytes, Any]:  # blocking, on a thread
        sock.sendto(data, (server, 53))
        return sock.recvfrom(65535)

    sock = await in_netns(fd, make)
    try:
        answer, source = await asyncio.to_thread(ask, sock)
        assert source == (server, 53)  # the answer seems to come from the server asked
        return answer
    finally:
        sock.close()


async def tcp_ask(fd: int, server: str, data: bytes) -> bytes:
    def make() -> socket.socket:
        sock = socket.socket()
        sock.setblocking(False)
        return sock

    sock = await in_netns(fd, make)
    await asyncio.get_running_loop().sock_connect(sock, (server, 53))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))[0]
        return await reader.readexactly(size)
    finally:
        writer.close()


def found(answer: bytes, query_id: int) -> tuple[int, list[str]]:
    answer_id, rcode, addresses = dns.answer_of(answer)
    assert answer_id == query_id
    return rcode, addresses


def test_mesh_names_answered_in_the_pod_others_forwarded(network: dict[str, int]) -> None:
    async def main() -> None:
        ca = MeshCA()

        async def sign(csr: str, ttl: float, identity: str) -> list[str]:
            return ca.sign_csr(csr, identity, ttl)

        state = WorkloadState()
        load_state(state, MESH)
        certs = IdentityCerts(sign)
        proxy = DnsProxy(state, [UPSTREAM_IP], timeout=2.0)
        ztunnel = Ztunnel(state, certs, Metrics(), dns=proxy)
        upstream = Upstream(network[UPSTREAM])
        pod = network[POD]
        await upstream.start()
        await ztunnel.add("uid-a", WorkloadInfo(POD, "shop", "client"), os.dup(pod))
        try:
            # A mesh name, by the name a Kubernetes client sends first, both transports,
            # to the resolver or to an address where nothing listens.
            for ask in (udp_ask, tcp_ask):
                for server in (UPSTREAM_IP, SILENT_IP):
                    answer = await ask(pod, server,
                                       dns.query("echo.shop.svc.cluster.local", dns.A, 1))
                    assert found(answer, 1) == (dns.NOERROR, [VIP])
            assert upstream.asked == []
            # Known to ztunnel only once discovery says so.
            answer = await udp_ask(pod, UPSTREAM_IP, dns.query("api.example.com", dns.A, 2))
            assert found(answer, 2) == (dns.NOERROR, [EXTERNAL])
            load_state(state, MESH + LATER)
            answer = await udp_ask(pod, UPSTREAM_IP, dns.query("api.example.com", dns.A, 3))
            assert found(answer, 3) == (dns.NOERROR, ["240.240.0.5"])
            # Anything else: forwarded from the pod's address, over the client's transport.
            answer = await udp_ask(pod, UPSTREAM_IP, dns.query("example.org", dns.A, 4))
            assert found(answer, 4) == (dns.NOERROR, [EXTERNAL])
            answer = await tcp_ask(pod, UPSTREAM_IP, dns.query("example.net", dns.A, 5))
            assert found(answer, 5) == (dns.NOERROR, [EXTERNAL])
            assert upstream.asked == [("udp", POD_IP, "api.example.com"),
                                      ("udp", POD_IP, "example.org"),
                                      ("tcp", POD_IP, "example.net")]
            # Malformed: FORMERR with the query's id, and the proxy answers on.
            bad = struct.pack("!HHHHHH", 6, 0, 1, 0, 0, 0) + b"\x3fshort"
            assert found(await udp_ask(pod, UPSTREAM_IP, bad), 6)[0] == dns.FORMERR
            assert found(await tcp_ask(pod, UPSTREAM_IP, bad), 6)[0] == dns.FORMERR
            answer = await udp_ask(pod, UPSTREAM_IP, dns.query("echo", dns.A, 7))
            assert found(answer, 7) == (dns.NOERROR, [VIP])
            # No upstream answering: SERVFAIL, at once (the port is unreachable).
            proxy.upstreams = (SILENT_IP,)
            started = asyncio.get_running_loop().time()
            answer = await udp_ask(pod, UPSTREAM_IP, dns.query("example.com", dns.A, 8))
            assert found(answer, 8) == (dns.SERVFAIL, [])
            assert asyncio.get_running_loop().time() - started < 1.0
            assert proxy.statistics() == {"answered": 6, "forwarded": 4, "formerr": 2,
                                          "servfail": 1}
        finally:
            await ztunnel.close()
            await certs.close()
            await upstream.stop()

    loop.run(main())  # on ztunnel's own loop (uvloop)
