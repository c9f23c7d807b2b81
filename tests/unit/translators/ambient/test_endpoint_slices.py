"""A Service without a selector, its endpoints written in EndpointSlices: ztunnel gets a
Workload per address that is not a pod's, as istiod makes them, and routes the Service's
VIP to them (plain TCP: they have no identity)."""

from __future__ import annotations

import ipaddress

from pilotfish.core import push_context
from pilotfish.core.ambient import workload_pb2 as pb
from pilotfish.core.ambient.outbound import Direct, route
from pilotfish.core.ambient.state import WorkloadState
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.xds import types
from pilotfish.core.xds.types import resource_name
from pilotfish.core.yamlload import load_text
from pilotfish.translators.ambient.addresses import addresses

CONFIG = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {serviceAccountName: client, containers: [{name: app}]}
status: {phase: Running, podIP: 10.0.1.5}
---
apiVersion: v1
kind: Service
metadata: {name: legacy-db, namespace: shop}
spec:
  clusterIP: 10.96.0.50
  ports: [{name: sql, port: 5432}, {name: admin, port: 9000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: legacy-db-abc, namespace: shop, labels: {kubernetes.io/service-name: legacy-db}}
addressType: IPv4
ports: [{name: sql, port: 15432, protocol: TCP}, {name: admin, port: 9000, protocol: UDP}]
endpoints:
- addresses: [192.168.50.7]
- addresses: [192.168.50.8]
  conditions: {ready: false}
- addresses: [10.0.1.5]
  targetRef: {kind: Pod, name: client, namespace: shop}
- addresses: [not-an-ip]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: loose, namespace: shop}
addressType: IPv4
ports: [{name: sql, port: 5432}]
endpoints: [{addresses: [192.168.60.1]}]
"""
UID = "Kubernetes/discovery.k8s.io/EndpointSlice/shop/legacy-db-abc/"


def built() -> dict[str, pb.Address]:
    objects, errors = load_text(CONFIG, "slices.yaml")
    assert not errors, errors
    push = push_context.build(objects, MeshSettings(), "v1")
    return {resource_name(a): a for a in addresses(push)}


def test_a_workload_per_address_that_is_not_a_pods() -> None:
    found = built()
    slices = sorted(name for name in found if "EndpointSlice" in name)
    # the pod's endpoint, the address that is none, and the slice of no Service: left out
    assert slices == [UID + "192.168.50.7", UID + "192.168.50.8"]
    ready = found[UID + "192.168.50.7"].workload
    assert (ready.name, ready.namespace, ready.service_account) == ("legacy-db-abc", "shop", "")
    assert [str(ipaddress.ip_address(a)) for a in ready.addresses] == ["192.168.50.7"]
    assert ready.network_mode == pb.HOST_NETWORK and ready.status == pb.HEALTHY
    assert ready.tunnel_protocol == pb.NONE
    # the Service's port of the slice port's name, to the slice's number; TCP only
    assert dict(ready.services) == {"shop/legacy-db.shop.svc.cluster.local": pb.PortList(
        ports=[pb.Port(service_port=5432, target_port=15432)])}
    assert found[UID + "192.168.50.8"].workload.status == pb.UNHEALTHY


def test_ztunnel_routes_the_vip_to_the_ready_address() -> None:
    state = WorkloadState()
    for name, address in built().items():
        state.apply(types.ADDRESS, name, address.SerializeToString())
    client = state.workload_by_ip("10.0.1.5")
    assert client is not None
    decided = route(state, client, ("10.96.0.50", 5432))
    assert isinstance(decided, Direct), decided
    assert decided.address == ("192.168.50.7", 15432)
