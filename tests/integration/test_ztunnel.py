"""ztunnel's data path in real network namespaces, with Istio's in-pod rules installed: two
ambient pods on a bridge, ztunnel (in this process) holding their listeners inside their
namespaces, certificates from a real CA, state from what discovery's generators send.

Proves: a client in pod A reaching a service VIP is carried by HBONE to pod B's 15008 and
delivered to its app with A's address as the source; the bridge sees only TLS between the
pods; Istio's TCP metrics count it on both sides; an L4 DENY by principal refuses it; a
plaintext connection reaches the app through 15006 and is refused once STRICT applies.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from pilotfish.core import push_context
from pilotfish.core.ambient.state import ADDRESS, AUTHORIZATION, WorkloadState
from pilotfish.core.ambient.zds import WorkloadInfo
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.native import loop
from pilotfish.core.native.sockets import in_netns
from pilotfish.core.xds.types import resource_name
from pilotfish.core.yamlload import load_text
from pilotfish.core.ztunnel.certs import IdentityCerts
from pilotfish.core.ztunnel.metrics import Metrics
from pilotfish.core.ztunnel.proxy import Ztunnel
from pilotfish.interceptors.ambient_rules import inpod_plan
from pilotfish.interceptors.ambient_settings import AmbientSettings
from pilotfish.testing.mesh_ca import MeshCA
from pilotfish.testing.wire import capture
from pilotfish.translators.ambient import authorization, peer_authentication
from pilotfish.translators.ambient.addresses import addresses

BRIDGE = "pfzt-br"
PODS = {"pfzt-a": ("client", "10.248.0.2", "sleep"), "pfzt-b": ("server", "10.248.0.3", "echo")}
VIP = "10.248.1.10"
PLAIN = ("pfzt-c", "10.248.0.4")  # outside the mesh: no rules, no ztunnel


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture(scope="module")
def network() -> Iterator[dict[str, int]]:
    """Two namespaces on a bridge with Istio's in-pod rules; their netns fds by name."""
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
    for name in PODS:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "link", "set", BRIDGE, "up")
    plan = inpod_plan(AmbientSettings(enable_ipv6=False, redirect_dns=False))
    fds = {}
    try:
        for index, (name, (_, ip, _)) in enumerate(PODS.items()):
            sh("ip", "netns", "add", name)
            sh("ip", "link", "add", f"pfzt{index}", "type", "veth", "peer", "name", "eth0",
               "netns", name)
            sh("ip", "link", "set", f"pfzt{index}", "master", BRIDGE, "up")
            sh("ip", "-n", name, "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "-n", name, "link", "set", "eth0", "up")
            sh("ip", "-n", name, "link", "set", "lo", "up")
            sh("ip", "-n", name, "route", "add", "10.248.1.0/24", "dev", "eth0")
            subprocess.run(["ip", "netns", "exec", name, "iptables-restore"], check=True,
                           input=plan.restore_v4().encode(), capture_output=True)
            for route in plan.routes:
                sh("ip", "netns", "exec", name, "ip", *route)
            fds[name] = os.open(f"/run/netns/{name}", os.O_RDONLY)
        name, ip = PLAIN
        sh("ip", "netns", "add", name)
        sh("ip", "link", "add", "pfzt9", "type", "veth", "peer", "name", "eth0", "netns", name)
        sh("ip", "link", "set", "pfzt9", "master", BRIDGE, "up")
        sh("ip", "-n", name, "addr", "add", f"{ip}/24", "dev", "eth0")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
        fds[name] = os.open(f"/run/netns/{name}", os.O_RDONLY)
        yield fds
    finally:
        for fd in fds.values():
            os.close(fd)
        for name in [*PODS, PLAIN[0]]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


def mesh_yaml(extra: str = "") -> str:
    docs = ["apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: "
            "{istio.io/dataplane-mode: ambient}}"]
    for name, (account, ip, app) in PODS.items():
        docs.append(f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, labels: {{app: {app}}}}}
spec: {{serviceAccountName: {account}, nodeName: node-a,
        containers: [{{name: app, ports: [{{containerPort: 8080}}]}}]}}
status: {{phase: Running, podIP: {ip}, conditions: [{{type: Ready, status: "True"}}]}}""")
    docs.append(f"""apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: shop}}
spec: {{clusterIP: {VIP}, selector: {{app: echo}}, ports: [{{port: 80, targetPort: 8080}}]}}""")
    if extra:
        docs.append(extra)
    return "\n---\n".join(docs)


def load_state(state: WorkloadState, config: str) -> None:
    """What discovery's generators make of ``config``, applied as ztunnel's stream would."""
    objects, errors = load_text(config, "mesh.yaml")
    assert not errors, errors
    push = push_context.build(objects, MeshSettings(), "v1")
    wanted: dict[tuple[str, str], bytes] = {}
    for address in addresses(push):
        wanted[(ADDRESS, resource_name(address))] = address.SerializeToString()
    root = push.mesh.root_namespace
    for policy in [*authorization.authorizations(push.security.authorization_policies, root),
                   *peer_authentication.authorizations(push.security.peer_authentications,
                                                       root)]:
        wanted[(AUTHORIZATION, resource_name(policy))] = policy.SerializeToString()
    for type_url, name in [(ADDRESS, w.uid) for w in state.workloads()] + \
            [(AUTHORIZATION, f"{p.namespace}/{p.name}") for p in state.policies()]:
        if (type_url, name) not in wanted:
            state.apply(type_url, name, None)
    for (type_url, name), value in wanted.items():
        state.apply(type_url, name, value)


class Harness:
    def __init__(self, fds: dict[str, int]) -> None:
        self.fds = fds
        self.ca = MeshCA()
        self.state = WorkloadState()
        self.metrics = Metrics()
        self.signed: list[str] = []
        self.certs = IdentityCerts(self.sign)
        self.ztunnel = Ztunnel(self.state, self.certs, self.metrics)
        self.seen: list[tuple[str, int]] = []

    async def sign(self, csr: str, ttl: float, identity: str) -> list[str]:
        self.signed.append(identity)
        return self.ca.sign_csr(csr, identity, ttl)

    async def echo_server(self) -> socket.socket:
        """An app in pod B on 8080 that echoes, recording its clients' addresses."""

        def make() -> socket.socket:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", 8080))
            sock.listen()
            sock.setblocking(False)
            return sock

        listener = await in_netns(self.fds["pfzt-b"], make)

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.seen.append(writer.get_extra_info("peername"))
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        await asyncio.start_server(serve, sock=listener)
        return listener

    async def call(self, pod: str, address: tuple[str, int], payload: bytes) -> bytes:
        """Connect from inside ``pod`` as its app would (no mark: redirected to 15001)."""

        def make() -> socket.socket:
            sock = socket.socket()
            sock.setblocking(False)
            return sock

        sock = await in_netns(self.fds[pod], make)
        await asyncio.get_running_loop().sock_connect(sock, address)
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            writer.write(payload)
            writer.write_eof()
            return await asyncio.wait_for(reader.read(), 10)
        except OSError:  # refused: closed (or reset) before or after the payload
            return b""
        finally:
            writer.close()

    async def start(self, config: str) -> None:
        load_state(self.state, config)
        for name, (account, _, _) in PODS.items():
            await self.ztunnel.add(f"uid-{name}", WorkloadInfo(name, "shop", account),
                                   os.dup(self.fds[name]))


def run(coroutine: Any) -> Any:
    """On the loop ztunnel runs on (uvloop)."""
    return loop.run(coroutine)


def samples(metrics: Metrics, name: str, **labels: str) -> int:
    return sum(value for key, value in metrics.counters[name].items()
               if all(dict(key).get(k) == v for k, v in labels.items()))


def test_service_vip_over_hbone_with_the_clients_address(network: dict[str, int]) -> None:
    async def main() -> None:
        harness = Harness(network)
        await harness.start(mesh_yaml())
        listener = await harness.echo_server()
        try:
            wire: dict[str, object] = {}
            loop = asyncio.get_running_loop()
            sniff = loop.run_in_executor(None, lambda: wire.update(
                capture_in("pfzt0", 15008, 3.0, b"hello-ambient")))
            await asyncio.sleep(0.3)
            assert await harness.call("pfzt-a", (VIP, 80), b"hello-ambient" * 100) == \
                b"hello-ambient" * 100
            await sniff
            assert harness.seen[-1][0] == PODS["pfzt-a"][1]  # the client's own address
            assert wire["tls_records"] and not wire["marker"]
            client = "spiffe://cluster.local/ns/shop/sa/client"
            server = "spiffe://cluster.local/ns/shop/sa/server"
            assert set(harness.signed) == {client, server}
            for reporter in ("source", "destination"):
                assert samples(harness.metrics, "istio_tcp_connections_opened",
                               reporter=reporter, source_principal=client,
                               connection_security_policy="mutual_tls") == 1
                assert samples(harness.metrics, "istio_tcp_sent_bytes",
                               reporter=reporter) == 1300
            assert samples(harness.metrics, "istio_tcp_connections_opened", reporter="source",
                           destination_service="echo.shop.svc.cluster.local") == 1
            assert harness.ztunnel.connections == {}
        finally:
            listener.close()
            await harness.ztunnel.close()
            await harness.certs.close()

    run(main())


def capture_in(interface: str, port: int, seconds: float, marker: bytes) -> dict[str, object]:
    return capture(interface, port, seconds, marker)


CLIENT = "spiffe://cluster.local/ns/shop/sa/client"
DENY_CLIENT = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-client, namespace: shop}
spec:
  selector: {matchLabels: {app: echo}}
  action: DENY
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}]}]"""
STRICT = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec: {mtls: {mode: STRICT}}"""


def test_l4_deny_by_principal_closes_the_connection(network: dict[str, int]) -> None:
    async def main() -> None:
        harness = Harness(network)
        await harness.start(mesh_yaml(DENY_CLIENT))
        listener = await harness.echo_server()
        try:
            assert await harness.call("pfzt-a", (VIP, 80), b"denied?") == b""
            assert harness.seen == []  # the app never saw it
            assert samples(harness.metrics, "istio_tcp_connections_failed",
                           reporter="destination", source_principal=CLIENT) == 1
            load_state(harness.state, mesh_yaml())  # the policy goes: allowed again
            assert await harness.call("pfzt-a", (VIP, 80), b"allowed") == b"allowed"
        finally:
            listener.close()
            await harness.ztunnel.close()
            await harness.certs.close()

    run(main())


def test_plaintext_from_outside_the_mesh_until_strict(network: dict[str, int]) -> None:
    async def main() -> None:
        harness = Harness(network)
        await harness.start(mesh_yaml())
        listener = await harness.echo_server()
        server = (PODS["pfzt-b"][1], 8080)
        try:
            assert await harness.call(PLAIN[0], server, b"plain") == b"plain"
            assert harness.seen[-1][0] == PLAIN[1]
            assert samples(harness.metrics, "istio_tcp_connections_opened",
                           reporter="destination", connection_security_policy="unknown") == 1
            load_state(harness.state, mesh_yaml(STRICT))
            assert await harness.call(PLAIN[0], server, b"plain") == b""
            assert len(harness.seen) == 1
            # HBONE from the ambient client still goes through under STRICT.
            assert await harness.call("pfzt-a", (VIP, 80), b"mtls") == b"mtls"
        finally:
            listener.close()
            await harness.ztunnel.close()
            await harness.certs.close()

    run(main())


def test_an_open_connection_is_cut_when_a_policy_now_denies_it(network: dict[str, int]
                                                               ) -> None:
    async def main() -> None:
        harness = Harness(network)
        await harness.start(mesh_yaml())
        listener = await harness.echo_server()

        def make() -> socket.socket:
            sock = socket.socket()
            sock.setblocking(False)
            return sock

        try:
            sock = await in_netns(network["pfzt-a"], make)
            await asyncio.get_running_loop().sock_connect(sock, (VIP, 80))
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(b"first")
            assert await asyncio.wait_for(reader.readexactly(5), 10) == b"first"
            assert harness.ztunnel.recheck() == 0  # nothing changed that denies it
            load_state(harness.state, mesh_yaml(DENY_CLIENT))
            assert harness.ztunnel.recheck() == 1
            try:
                rest = await asyncio.wait_for(reader.read(), 10)
            except ConnectionResetError:
                rest = b""
            assert rest == b""  # cut
            writer.close()
            # new connections are refused from the start
            assert await harness.call("pfzt-a", (VIP, 80), b"again") == b""
        finally:
            listener.close()
            await harness.ztunnel.close()
            await harness.certs.close()

    run(main())
