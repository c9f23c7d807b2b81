"""Two ``pilotfish discovery --kubeconfig`` replicas on one cluster (the test kit's fake API
server, driven by the official client), behind one address as a Service puts them: they
serve a proxy the same config, and a real Envoy that loses its replica reconnects to the
other (its replica stopped, or killed) and resyncs without being sent again what it holds,
while requests through it keep succeeding; a change made afterwards reaches it through the
survivor. Over plaintext xDS (15010), and over mutual TLS (15012) through the agent's
relay, the agent's identity from a service-account token both replicas review and its
certificate from their shared root."""

from __future__ import annotations

import contextlib
import itertools
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import kubernetes
import pytest
import yaml

from pilotfish.testing.config import backend, documents, ingress_gateway, routes_to
from pilotfish.testing.kube import service_account
from pilotfish.testing.mesh import LocalMesh, Proxy
from pilotfish.testing.processes import Process, free_port, http, wait_until
from tests.integration.conftest import KubeCluster

pytestmark = pytest.mark.envoy

NS = "shop"
VS = ("networking.istio.io", "v1", NS, "virtualservices")
READY = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}


@attrs.define
class Balancer:
    """What a Service's ClusterIP does for the agent: each new connection goes to one of the
    replicas in turn, skipping one that refuses it (kube-proxy drops an endpoint once its
    pod is gone); a connection ends when its replica does."""

    ports: list[int]
    listener: socket.socket = attrs.field(init=False)
    turn: Iterator[int] = attrs.field(init=False, factory=itertools.count)

    def __attrs_post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            first = next(self.turn)
            for i in range(len(self.ports)):
                port = self.ports[(first + i) % len(self.ports)]
                try:
                    upstream = socket.create_connection(("127.0.0.1", port), timeout=1)
                except OSError:
                    continue
                upstream.settimeout(None)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pump, args=(a, b), daemon=True).start()
                break
            else:
                client.close()

    def close(self) -> None:
        self.listener.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for s in (source, sink):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)


@attrs.define
class Replicas:
    custom: kubernetes.client.CustomObjectsApi
    meshes: tuple[LocalMesh, LocalMesh]
    discoveries: tuple[Process, Process]
    gateway: Proxy
    url: str

    def serves(self) -> str:
        response = http(self.url, timeout=2)
        return str(response.json()["service"]) if response.status == 200 else str(
            response.status)

    def connected(self) -> int:
        """Which replica the gateway's ADS stream is on."""
        return wait_until(lambda: next(([i] for i, mesh in enumerate(self.meshes)
                                        if self.discoveries[i].running and mesh.syncz()), None),
                          10, what="the gateway to connect to a replica")[0]

    def served(self, replica: int, proxy_id: str) -> Any:
        """What a replica serves the proxy, from its debug config dump."""
        mesh = self.meshes[replica]
        return http(f"{mesh.debug}/debug/config_dump?proxyID={proxy_id}").json()

    def envoy_versions(self) -> dict[str, str]:
        """Each dynamic resource Envoy holds, with the version it was given."""
        out = {}
        for section in self.gateway.config_dump()["configs"]:
            for key, entries in section.items():
                if not key.startswith("dynamic_") or not isinstance(entries, list):
                    continue
                for entry in entries:
                    state = entry.get("active_state", entry)
                    name = entry.get("name") or next(
                        (v.get("name") or v.get("cluster_name") for v in state.values()
                         if isinstance(v, dict)), "")
                    out[f"{key}/{name}"] = str(state.get("version_info", ""))
        return out


    def updates(self) -> dict[str, int]:
        """Envoy's count of accepted xDS answers, per subscription (CDS, LDS, each RDS and
        EDS one)."""
        text = http(f"{self.gateway.admin}/stats?filter=update_success$").body.decode()
        return {name: int(value) for name, _, value in
                (line.partition(": ") for line in text.splitlines() if line)
                if not name.startswith("cluster.xds-grpc")}


@pytest.fixture
def replicas(tmp_path: Path, kube_cluster: KubeCluster, request: pytest.FixtureRequest
             ) -> Iterator[Replicas]:
    secure = getattr(request, "param", "plaintext") == "mtls"
    app_port, gateway_port = free_port(), free_port()
    api, custom = kube_cluster.api, kube_cluster.custom
    with LocalMesh(tmp_path / "one") as one, LocalMesh(tmp_path / "two") as two:
        kube_cluster.core.create_namespace({"metadata": {"name": NS}})
        objects = list(yaml.safe_load_all(documents(
            backend("alpha", "127.0.31.1", app_port, namespace=NS, port=9080),
            backend("beta", "127.0.31.2", app_port, namespace=NS, port=9080),
            ingress_gateway(gateway_port, name="gw", namespace=NS))))
        for obj in objects:
            if obj["kind"] == "Pod":
                obj["status"] |= READY
        api.seed(*objects)  # as controllers and kubelets would
        custom.create_namespaced_custom_object(*VS, routes_to("alpha"))
        discoveries = (one.start_discovery(kubeconfig=api.kubeconfig),
                       two.start_discovery(kubeconfig=api.kubeconfig))
        balancer = Balancer([one.secure_port, two.secure_port] if secure else
                            [one.xds_port, two.xds_port])
        try:
            one.start_apps([f"alpha:v1@127.0.31.1:{app_port}",
                            f"beta:v1@127.0.31.2:{app_port}"])
            gateway = one.start_proxy("gw", NS, labels={"istio": "ingressgateway"},
                                      discovery=balancer.address,
                                      extra=identity(tmp_path, kube_cluster, balancer.address)
                                      if secure else ())
            found = Replicas(custom, (one, two), discoveries, gateway,
                             f"http://127.0.0.1:{gateway_port}/")
            wait_until(lambda: found.serves() == "alpha", 10, what="the gateway to route")
            yield found
        finally:
            balancer.close()


def identity(folder: Path, cluster: KubeCluster, address: str) -> list[str]:
    """The agent's flags for mTLS xDS through ``address``: a projected token the replicas
    review (TokenReview), and the root they publish in the namespace."""
    token = folder / "token"
    token.write_text(cluster.api.add_token(service_account(NS, "default", pod="gw")))
    root = wait_until(lambda: (cluster.core.read_namespaced_config_map(
        "istio-ca-root-cert", NS).data or {}).get("root-cert.pem"), 15,
        what="the root published in the namespace")
    (folder / "root-cert.pem").write_text(root)
    return ["--service-account", "default", "--token-file", str(token), "--root-cert",
            str(folder / "root-cert.pem"), "--ca-address", address, "--xds-tls"]


@attrs.define
class Traffic:
    """Requests through the gateway, one after another, until stopped."""

    replicas: Replicas
    sent: int = 0
    failed: list[str] = attrs.Factory(list)
    running: bool = True
    thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        while self.running:
            self.sent += 1
            try:
                answer = self.replicas.serves()
            except OSError as error:
                answer = repr(error)
            if answer not in ("alpha", "beta"):
                self.failed.append(answer)

    def stop(self) -> None:
        self.running = False
        if self.thread is not None:
            self.thread.join(5)


@pytest.mark.parametrize(("replicas", "end"), [
    ("plaintext", signal.SIGTERM), ("plaintext", signal.SIGKILL), ("mtls", signal.SIGTERM)],
    ids=["stopped", "killed", "stopped-mtls"], indirect=["replicas"])
def test_a_proxy_fails_over_to_the_other_replica_without_losing_a_request(
        replicas: Replicas, end: signal.Signals):
    first = replicas.connected()
    proxy_id = replicas.meshes[first].wait_synced(replicas.meshes[first].syncz()[0]["proxy"])[
        "proxy"]
    before = replicas.served(first, proxy_id)
    held, updates = replicas.envoy_versions(), replicas.updates()
    traffic = Traffic(replicas).start()
    try:
        time.sleep(0.5)
        stopped = time.monotonic()
        replicas.discoveries[first].signal(end)
        replicas.discoveries[first].stop()
        other = 1 - first
        assert replicas.connected() == other
        replicas.meshes[other].wait_synced(proxy_id, timeout=30)
        resynced = time.monotonic() - stopped

        # The survivor serves the proxy what the stopped replica did, versions included, so
        # Envoy (which told it what it held) keeps every resource as it was.
        assert replicas.served(other, proxy_id) == before
        assert replicas.envoy_versions() == held
        # Told what Envoy holds (delta xDS), the survivor resends none of it: only the
        # wildcard types (CDS, LDS) get their first answer, every route and endpoint none.
        after = replicas.updates()
        assert {n for n in after if after[n] != updates[n]} == {
            "cluster_manager.cds.update_success", "listener_manager.lds.update_success"}

        changed = time.monotonic()
        replicas.custom.patch_namespaced_custom_object(*VS, "shop",
                                                       {"spec": routes_to("beta")["spec"]})
        wait_until(lambda: replicas.serves() == "beta", 5,
                   what="a change after the failover to reach Envoy")
        landed = time.monotonic() - changed
        time.sleep(0.3)
    finally:
        traffic.stop()
    assert traffic.failed == []
    assert traffic.sent > 50
    print(f"failover ({end.name}): {traffic.sent} requests, {len(traffic.failed)} failed; "
          f"resynced on the other replica {resynced * 1000:.0f} ms after the stop; "
          f"a change then reached Envoy in {landed * 1000:.0f} ms")
