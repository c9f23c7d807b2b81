"""The push context → ztunnel's Address resources (Workload and Service), as istiod builds
them."""

from __future__ import annotations

import ipaddress

from pilotfish.core import push_context
from pilotfish.core.ambient import workload_pb2 as pb
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.xds.types import resource_name
from pilotfish.core.yamlload import load_text
from pilotfish.translators.ambient.addresses import addresses

CONFIG = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Pod
metadata:
  name: cart-7d9f8b6c5-x2x4z
  namespace: shop
  generateName: cart-7d9f8b6c5-
  labels: {app: cart, version: v2, pod-template-hash: 7d9f8b6c5,
           topology.istio.io/locality: eu-west1.eu-west1-b}
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: cart-7d9f8b6c5, controller: true}
spec:
  serviceAccountName: cart
  nodeName: node-a
  containers: [{name: app, ports: [{name: http, containerPort: 8080}]}]
status:
  phase: Running
  podIP: 10.0.1.5
  podIPs: [{ip: 10.0.1.5}, {ip: "fd00::5"}]
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: v1
kind: Pod
metadata:
  name: opted-out
  namespace: shop
  labels: {app: cart, istio.io/dataplane-mode: none}
spec: {nodeName: node-a, containers: [{name: app}]}
status: {phase: Running, podIP: 10.0.1.6}
---
apiVersion: v1
kind: Pod
metadata:
  name: with-sidecar
  namespace: shop
  labels: {app: cart, security.istio.io/tlsMode: istio}
  annotations: {sidecar.istio.io/status: '{"containers":["istio-proxy"]}'}
spec: {nodeName: node-b, containers: [{name: app}]}
status: {phase: Running, podIP: 10.0.1.7, conditions: [{type: Ready, status: "False"}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: db-0
  namespace: legacy
  labels: {app: db, istio.io/dataplane-mode: ambient, istio.io/use-waypoint: legacy-wp}
spec: {nodeName: node-b, serviceAccount: db, containers: [{name: db}]}
status: {phase: Running, podIP: 10.0.2.9}
---
apiVersion: v1
kind: Pod
metadata:
  name: waypoint-5b4c-abcde
  namespace: shop
  labels: {gateway.istio.io/managed: istio.io-mesh-controller,
           gateway.networking.k8s.io/gateway-name: waypoint}
spec: {nodeName: node-a, containers: [{name: istio-proxy}]}
status: {phase: Running, podIP: 10.0.1.30}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  trafficDistribution: PreferClose
  selector: {app: cart}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: grpc-admin, port: 9000, targetPort: 9000}
---
apiVersion: v1
kind: Service
metadata:
  name: waypoint
  namespace: shop
  labels: {gateway.istio.io/managed: istio.io-mesh-controller}
spec:
  clusterIP: 10.96.0.30
  selector: {gateway.networking.k8s.io/gateway-name: waypoint}
  ports: [{name: mesh, port: 15008}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: legacy, labels: {istio.io/use-waypoint: legacy-wp}}
spec:
  clusterIP: 10.96.0.20
  internalTrafficPolicy: Local
  selector: {app: db}
  ports: [{name: tcp-db, port: 5432}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: legacy-wp, namespace: legacy, labels: {istio.io/waypoint-for: all}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
status:
  addresses: [{type: Hostname, value: legacy-wp.legacy.svc.cluster.local}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: vm-1
  namespace: legacy
  labels: {app: db}
  annotations: {ambient.istio.io/redirection: enabled}
spec: {address: 192.168.7.1, serviceAccount: vm, network: vm-net, labels: {app: db}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: shop}
spec:
  hosts: [payments.example.com]
  addresses: [240.240.0.1, 10.40.0.0/16]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
  subjectAltNames: [spiffe://cluster.local/ns/shop/sa/payments]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: cart-only, namespace: shop}
spec: {selector: {matchLabels: {app: cart}}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: everywhere, namespace: istio-system}
spec: {selector: {matchLabels: {version: v2}}, action: DENY, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: namespace-wide, namespace: shop}
spec: {rules: [{}]}
"""


def generated() -> dict[str, pb.Address]:
    objects, errors = load_text(CONFIG, "ambient.yaml")
    assert not errors, errors
    push = push_context.build(objects, MeshSettings(), "v1")
    return {resource_name(address): address for address in addresses(push)}


def workload(name: str) -> pb.Workload:
    found = generated()[name]
    assert found.HasField("workload")
    return found.workload


def service(name: str) -> pb.Service:
    found = generated()[name]
    assert found.HasField("service")
    return found.service


def test_resources_are_named_as_istiod_names_them() -> None:
    assert sorted(generated()) == [
        "Kubernetes//Pod/legacy/db-0",
        "Kubernetes//Pod/shop/cart-7d9f8b6c5-x2x4z",
        "Kubernetes//Pod/shop/opted-out",
        "Kubernetes//Pod/shop/waypoint-5b4c-abcde",
        "Kubernetes//Pod/shop/with-sidecar",
        "Kubernetes/networking.istio.io/WorkloadEntry/legacy/vm-1",
        "legacy/db.legacy.svc.cluster.local",
        "shop/cart.shop.svc.cluster.local",
        "shop/payments.example.com",
        "shop/waypoint.shop.svc.cluster.local",
    ]


def test_an_ambient_pod_is_a_workload_with_its_identity_services_and_policies() -> None:
    cart = workload("Kubernetes//Pod/shop/cart-7d9f8b6c5-x2x4z")
    assert (cart.name, cart.namespace, cart.service_account, cart.node) == (
        "cart-7d9f8b6c5-x2x4z", "shop", "cart", "node-a")
    assert [str(ipaddress.ip_address(a)) for a in cart.addresses] == ["10.0.1.5", "fd00::5"]
    assert cart.tunnel_protocol == pb.HBONE
    assert cart.trust_domain == ""  # cluster.local: ztunnel's default, elided as istiod does
    assert (cart.canonical_name, cart.canonical_revision) == ("cart", "v2")
    assert (cart.workload_name, cart.workload_type) == ("cart", pb.DEPLOYMENT)
    assert (cart.locality.region, cart.locality.zone) == ("eu-west1", "eu-west1-b")
    assert cart.status == pb.HEALTHY and cart.cluster_id == "Kubernetes"
    # The named targetPort resolves to the pod's container port here.
    assert {key: [(p.service_port, p.target_port) for p in ports.ports]
            for key, ports in cart.services.items()} == {
        "shop/cart.shop.svc.cluster.local": [(80, 8080), (9000, 9000)]}
    # Selector policies only, of its namespace or the root; namespace-wide ones go apart.
    assert list(cart.authorization_policies) == ["istio-system/everywhere", "shop/cart-only"]
    # The namespace's waypoint is for services (the default): the workload has none.
    assert not cart.HasField("waypoint")


def test_pods_outside_ambient_keep_plain_tcp_or_their_sidecars_mtls() -> None:
    assert workload("Kubernetes//Pod/shop/opted-out").tunnel_protocol == pb.NONE
    sidecar = workload("Kubernetes//Pod/shop/with-sidecar")
    assert sidecar.tunnel_protocol == pb.LEGACY_ISTIO_MTLS
    assert sidecar.status == pb.UNHEALTHY
    assert (sidecar.workload_name, sidecar.workload_type) == ("with-sidecar", pb.POD)


def test_a_workload_uses_a_waypoint_for_workloads() -> None:
    db = workload("Kubernetes//Pod/legacy/db-0")
    assert db.tunnel_protocol == pb.HBONE and db.service_account == "db"
    # The Gateway's status has a hostname only, and no Service of that name: the hostname.
    assert db.waypoint.hostname.namespace == "legacy"
    assert db.waypoint.hostname.hostname == "legacy-wp.legacy.svc.cluster.local"
    assert db.waypoint.hbone_mtls_port == 15008


def test_a_waypoint_has_no_waypoint() -> None:
    assert not workload("Kubernetes//Pod/shop/waypoint-5b4c-abcde").HasField("waypoint")
    assert not service("shop/waypoint.shop.svc.cluster.local").HasField("waypoint")


def test_a_workload_entry_is_a_workload_of_its_network() -> None:
    vm = workload("Kubernetes/networking.istio.io/WorkloadEntry/legacy/vm-1")
    assert [str(ipaddress.ip_address(a)) for a in vm.addresses] == ["192.168.7.1"]
    assert (vm.network, vm.service_account) == ("vm-net", "vm")
    assert vm.tunnel_protocol == pb.HBONE  # the node agent marked it redirected
    assert dict(vm.services) == {"legacy/db.legacy.svc.cluster.local": pb.PortList(
        ports=[pb.Port(service_port=5432, target_port=5432)])}


def test_a_service_has_its_vips_ports_and_namespace_waypoint() -> None:
    cart = service("shop/cart.shop.svc.cluster.local")
    assert (cart.name, cart.namespace, cart.hostname) == (
        "cart", "shop", "cart.shop.svc.cluster.local")
    assert [(a.network, str(ipaddress.ip_address(a.address))) for a in cart.addresses] == [
        ("", "10.96.0.10")]
    assert [(p.service_port, p.target_port) for p in cart.ports] == [(80, 0), (9000, 9000)]
    assert cart.load_balancing.mode == pb.LoadBalancing.FAILOVER  # trafficDistribution
    # The namespace's waypoint, reached at its Service's VIP.
    assert str(ipaddress.ip_address(cart.waypoint.address.address)) == "10.96.0.30"
    assert cart.waypoint.hbone_mtls_port == 15008


def test_a_service_label_names_its_waypoint() -> None:
    db = service("legacy/db.legacy.svc.cluster.local")
    assert db.waypoint.hostname.hostname == "legacy-wp.legacy.svc.cluster.local"
    assert list(db.load_balancing.routing_preference) == [pb.LoadBalancing.NODE]
    assert db.load_balancing.mode == pb.LoadBalancing.STRICT


def test_a_service_entry_host_is_a_service_with_its_addresses() -> None:
    payments = service("shop/payments.example.com")
    assert (payments.name, payments.hostname) == ("payments", "payments.example.com")
    assert [(str(ipaddress.ip_address(a.address)), a.HasField("length"), a.length)
            for a in payments.addresses] == [("240.240.0.1", False, 0), ("10.40.0.0", True, 16)]
    # No targetPort: the port itself, as istiod fills it in.
    assert [(p.service_port, p.target_port) for p in payments.ports] == [(443, 443)]
    assert list(payments.subject_alt_names) == ["spiffe://cluster.local/ns/shop/sa/payments"]


ENTRY = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy-db, namespace: legacy}
spec:
  hosts: [db.legacy.internal]
  ports: [{number: 5432, name: tcp, protocol: TCP, targetPort: 15432}]
  resolution: STATIC
  endpoints:
  - {address: 10.9.0.1, labels: {app: legacy-db, networking.istio.io/tunnel: http},
     serviceAccount: legacy-db}
  - {address: 10.9.0.2, network: dc2, ports: {tcp: 25432}}
"""


def test_a_service_entrys_inline_endpoints_are_workloads() -> None:
    objects, errors = load_text(ENTRY, "entry.yaml")
    assert not errors, errors
    push = push_context.build(objects, MeshSettings(), "v1")
    found = {resource_name(a): a.workload for a in addresses(push) if a.HasField("workload")}
    prefix = "Kubernetes/networking.istio.io/ServiceEntry/legacy/legacy-db/"
    assert sorted(found) == [prefix + "10.9.0.1", prefix + "10.9.0.2"]
    first, second = found[prefix + "10.9.0.1"], found[prefix + "10.9.0.2"]
    assert (first.name, first.service_account, first.canonical_name) == (
        "legacy-db", "legacy-db", "legacy-db")
    assert first.tunnel_protocol == pb.HBONE and first.native_tunnel
    assert [(p.service_port, p.target_port) for p in
            first.services["legacy/db.legacy.internal"].ports] == [(5432, 15432)]
    assert second.network == "dc2" and second.tunnel_protocol == pb.NONE
    assert [(p.service_port, p.target_port) for p in
            second.services["legacy/db.legacy.internal"].ports] == [(5432, 25432)]
