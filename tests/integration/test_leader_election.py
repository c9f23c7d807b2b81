"""Two ``pilotfish discovery --kubeconfig`` replicas on one cluster (the test kit's fake API
server, driven by the official client) elect one leader per Lease, as istiod's do: the
``istio-gateway-status-leader``'s writes the Gateway API status back to the objects (and
only it), the ``istio-namespace-controller-election``'s the root ConfigMaps. A rebuild that
changes no status writes nothing and a status write rebuilds nothing; a spec change is
written with its new generation; a leader stopped hands its Leases over at once, one killed
after the lease runs out, and the new leader keeps writing.

Leases last 3 s here (Istio's are 30 s): renewed within 1.5 s, tried every 0.75 s.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import kubernetes
import pytest

from pilotfish.core.gateway_api.status import CONTROLLER
from pilotfish.testing.kube import FakeKubeApi
from pilotfish.testing.mesh import LocalMesh
from pilotfish.testing.processes import Process, http, wait_until
from tests.integration.conftest import KubeCluster

NS = "shop"
GROUP = "gateway.networking.k8s.io"
LEASE = 3.0
STATUS_LEASE, NAMESPACE_LEASE = "istio-gateway-status-leader", \
    "istio-namespace-controller-election"


def gateway(port: int = 8080) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": NS},
            "spec": {"gatewayClassName": "istio", "listeners": [
                {"name": "http", "port": port, "protocol": "HTTP"}]}}


ROUTE = {"apiVersion": f"{GROUP}/v1", "kind": "HTTPRoute",
         "metadata": {"name": "web", "namespace": NS},
         "spec": {"parentRefs": [{"name": "gw"}],
                  "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}}
SEEDED = [
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": NS},
     "spec": {"ports": [{"name": "http", "port": 80}], "selector": {"app": "web"}}},
    # The Gateway's router, as Istio's deployment controller labels it: its address.
    {"apiVersion": "v1", "kind": "Pod",
     "metadata": {"name": "gw-router", "namespace": NS,
                  "labels": {"gateway.networking.k8s.io/gateway-name": "gw"}},
     "spec": {"containers": [{"name": "istio-proxy", "image": "proxy"}]},
     "status": {"phase": "Running", "podIP": "10.1.0.7",
                "conditions": [{"type": "Ready", "status": "True"}]}},
]


@attrs.define
class Cluster:
    api: FakeKubeApi
    custom: kubernetes.client.CustomObjectsApi
    coordination: kubernetes.client.CoordinationV1Api
    core: kubernetes.client.CoreV1Api
    meshes: tuple[LocalMesh, LocalMesh]
    replicas: list[Process]

    def start(self, index: int) -> Process:
        process = self.meshes[index].start_discovery(
            kubeconfig=self.api.kubeconfig, extra=["--lease-duration", str(LEASE)],
            extra_env={"POD_NAME": f"replica-{index}"})
        if index < len(self.replicas):
            self.replicas[index] = process
        return process

    def holder(self, lease: str) -> int | None:
        """Which replica holds a Lease (None: nobody)."""
        try:
            found = self.coordination.read_namespaced_lease(lease, "istio-system")
        except kubernetes.client.ApiException:
            return None
        holder = found.spec.holder_identity or ""
        return int(holder.split("_")[0].removeprefix("replica-")) if holder else None

    def transitions(self, lease: str) -> int:
        return int(self.coordination.read_namespaced_lease(
            lease, "istio-system").spec.lease_transitions or 0)

    def leases(self, index: int) -> dict[str, Any]:
        return http(f"{self.meshes[index].debug}/debug/leases").json()

    def leading(self, index: int) -> set[str]:
        return {lease["name"] for lease in self.leases(index)["leases"] if lease["leading"]}

    def status(self, plural: str, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, "v1", NS, plural,
                                                        name).get("status") or {}

    def gateway_conditions(self) -> dict[str, tuple[str, str, int]]:
        return {c["type"]: (c["status"], c["reason"], c["observedGeneration"])
                for c in self.status("gateways", "gw").get("conditions") or ()}

    def status_patches(self) -> int:
        return sum(self.api.requests("PATCH", plural, "status")
                   for plural in ("gateways", "httproutes", "gatewayclasses"))

    def pushes(self, index: int) -> int:
        return int(http(f"{self.meshes[index].debug}/debug/push_status").json()["pushes"])


@pytest.fixture
def cluster(tmp_path: Path, kube_cluster: KubeCluster) -> Iterator[Cluster]:
    api, custom, core = kube_cluster.api, kube_cluster.custom, kube_cluster.core
    with LocalMesh(tmp_path / "one") as one, LocalMesh(tmp_path / "two") as two:
        core.create_namespace({"metadata": {"name": NS}})
        api.seed(*SEEDED)
        custom.create_namespaced_custom_object(GROUP, "v1", NS, "gateways", gateway())
        custom.create_namespaced_custom_object(GROUP, "v1", NS, "httproutes", ROUTE)
        found = Cluster(api, custom, kubernetes.client.CoordinationV1Api(kube_cluster.client),
                        core, (one, two), [])
        found.replicas = [found.start(0)]
        found.replicas.append(found.start(1))
        yield found


def test_one_replica_writes_status_and_root_configmaps_and_hands_over(cluster):
    c = cluster
    for lease in (STATUS_LEASE, NAMESPACE_LEASE):
        wait_until(lambda lease=lease: c.holder(lease) is not None, 10, what=f"{lease} held")
    leader = c.holder(STATUS_LEASE)
    assert leader is not None
    other = 1 - leader
    wait_until(lambda: STATUS_LEASE in c.leading(leader), 5, what="the leader to know it")
    assert STATUS_LEASE not in c.leading(other)
    namespace_leader = c.holder(NAMESPACE_LEASE)
    assert namespace_leader is not None
    assert NAMESPACE_LEASE not in c.leading(1 - namespace_leader)

    # The leader writes the Gateway's and the route's status, with observedGeneration.
    wait_until(lambda: c.gateway_conditions() == {
        "Accepted": ("True", "Accepted", 1), "Programmed": ("True", "Programmed", 1)},
        10, what="the Gateway's status")
    gw = c.status("gateways", "gw")
    assert gw["addresses"] == [{"type": "IPAddress", "value": "10.1.0.7"}]
    assert [listener["attachedRoutes"] for listener in gw["listeners"]] == [1]
    assert all(cond["lastTransitionTime"] for cond in gw["conditions"])
    wait_until(lambda: c.status("httproutes", "web").get("parents"), 5,
               what="the route's parents")
    (parent,) = c.status("httproutes", "web")["parents"]
    assert parent["controllerName"] == CONTROLLER
    assert parent["parentRef"]["name"] == "gw"
    assert {(cond["type"], cond["status"], cond["observedGeneration"])
            for cond in parent["conditions"]} == {("Accepted", "True", 1),
                                                  ("ResolvedRefs", "True", 1)}
    assert c.leases(leader)["gatewayStatus"]["writes"] >= 2
    assert c.leases(other)["gatewayStatus"]["writes"] == 0

    # The root ConfigMaps, by the namespace controller's leader alone: one create each.
    wait_until(lambda: c.core.read_namespaced_config_map("istio-ca-root-cert", NS), 10,
               what="the root ConfigMap")
    creates = c.api.requests("POST", "configmaps")
    listed = c.core.list_config_map_for_all_namespaces(
        field_selector="metadata.name=istio-ca-root-cert").items
    assert creates == len(listed)

    # A status write is no change to the store: nothing is rebuilt, nothing written again.
    patches, pushes = c.status_patches(), [c.pushes(0), c.pushes(1)]
    time.sleep(1.0)
    assert c.status_patches() == patches
    assert [c.pushes(0), c.pushes(1)] == pushes
    # A rebuild that changes no status writes nothing.
    c.core.create_namespaced_service(NS, {"metadata": {"name": "unrelated"},
                                          "spec": {"ports": [{"port": 81}]}})
    wait_until(lambda: c.pushes(leader) > pushes[leader], 5, what="a rebuild")
    time.sleep(0.5)
    assert c.status_patches() == patches

    # A spec change: its new generation in the status.
    c.custom.patch_namespaced_custom_object(GROUP, "v1", NS, "gateways", "gw",
                                            {"spec": gateway(8081)["spec"]})
    wait_until(lambda: c.gateway_conditions()["Accepted"][2] == 2, 10,
               what="observedGeneration 2")

    # The leader stopped: it hands its Leases back, the other takes over at once.
    transitions = c.transitions(STATUS_LEASE)
    c.replicas[leader].signal(signal.SIGTERM)
    stopped = time.monotonic()
    wait_until(lambda: c.holder(STATUS_LEASE) == other, LEASE, interval=0.05,
               what="the other replica to take the released lease")
    assert time.monotonic() - stopped < LEASE * 0.6  # a try later, not a lease later
    assert c.transitions(STATUS_LEASE) == transitions + 1
    wait_until(lambda: c.holder(NAMESPACE_LEASE) == other, LEASE, what="both leases")
    c.replicas[leader].stop()
    c.custom.patch_namespaced_custom_object(GROUP, "v1", NS, "gateways", "gw",
                                            {"spec": gateway(8082)["spec"]})
    wait_until(lambda: c.gateway_conditions()["Accepted"][2] == 3, 10,
               what="the new leader to write observedGeneration 3")

    # The stopped replica back; the leader killed: its lease runs out, then it is taken.
    c.start(leader)
    time.sleep(LEASE / 4 * 2)
    assert c.holder(STATUS_LEASE) == other  # a running leader keeps its lease
    c.replicas[other].signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: c.holder(STATUS_LEASE) == leader, LEASE * 3, interval=0.05,
               what="the lease to run out and be taken")
    waited = time.monotonic() - killed
    assert LEASE * 0.7 < waited < LEASE * 2.5, waited
    c.custom.patch_namespaced_custom_object(GROUP, "v1", NS, "gateways", "gw",
                                            {"spec": gateway(8083)["spec"]})
    wait_until(lambda: c.gateway_conditions()["Accepted"][2] == 4, 10,
               what="the replica that took over to write observedGeneration 4")
