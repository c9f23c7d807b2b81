"""Services, endpoints and Istio's lookup rules, from config as users write it."""

from __future__ import annotations

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.model import Health, Resolution
from pilotfish.core.protocol import Protocol
from pilotfish.core.proxy import parse_node
from pilotfish.core.yamlload import load_text

MESH = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080, targetPort: web}
  - {name: metrics, port: 9090, appProtocol: http}
  - {port: 3306}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: default, labels: {app: reviews, version: v1}}
spec:
  serviceAccountName: bookinfo-reviews
  containers: [{name: app, ports: [{name: web, containerPort: 8080}]}]
status: {podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: default, labels: {app: reviews, version: v2}}
spec:
  containers: [{name: app, ports: [{name: web, containerPort: 8081}]}]
status:
  podIP: 10.1.0.2
  conditions: [{type: Ready, status: "False"}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm, namespace: default}
spec: {address: 10.2.0.1, labels: {app: reviews, version: v3}, ports: {http: 7000},
       serviceAccount: vm}
---
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: other, annotations: {networking.istio.io/exportTo: "."}}
spec:
  ports: [{name: tcp-db, port: 5432}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: legacy, namespace: other}
subsets:
- addresses: [{ip: 10.3.0.1}]
  ports: [{name: tcp-db, port: 15432}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: default}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-in-root, namespace: istio-system}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  gateways: [istio-system/gw, mesh]
  http: [{route: [{destination: {host: reviews}}]}]
"""


def context():
    objects, errors = load_text(MESH, "mesh.yaml")
    assert not errors
    return push_context.build(objects, MeshSettings(), "v1")


def sidecar(namespace="default", labels=None, **metadata):
    return parse_node(
        f"sidecar~10.9.9.9~app-1.{namespace}~{namespace}.svc.cluster.local",
        {"LABELS": labels or {}, **metadata},
    )


def test_service_ports_protocols_and_vips():
    push = context()
    reviews = push.service("reviews.default.svc.cluster.local")
    assert reviews.vips == ("10.96.0.10",)
    assert [p.protocol for p in reviews.ports] == [Protocol.HTTP, Protocol.HTTP, Protocol.TCP]
    external = push.service("api.example.com")
    assert external.resolution is Resolution.DNS_LB and external.mesh_external


def test_selector_endpoints_resolve_named_target_ports_and_health():
    push = context()
    eps = push.endpoints("reviews.default.svc.cluster.local", 9080)
    by_address = {e.address: e for e in eps}
    assert by_address["10.1.0.1"].port == 8080
    assert by_address["10.1.0.1"].service_account == "bookinfo-reviews"
    assert by_address["10.1.0.2"].port == 8081
    assert by_address["10.1.0.2"].health is Health.UNHEALTHY
    # WorkloadEntry ports map port names to its own ports.
    assert by_address["10.2.0.1"].port == 7000 and by_address["10.2.0.1"].tls_mode == "istio"


def test_a_terminating_pod_is_an_unhealthy_endpoint():
    objects, errors = load_text(MESH.replace(
        "name: reviews-v1, namespace: default,",
        "name: reviews-v1, namespace: default, deletionTimestamp: 2026-01-01T00:00:00Z,"),
        "mesh.yaml")
    assert not errors
    push = push_context.build(objects, MeshSettings(), "v1")
    by_address = {e.address: e for e in push.endpoints("reviews.default.svc.cluster.local",
                                                         9080)}
    assert by_address["10.1.0.1"].health is Health.UNHEALTHY


def test_explicit_endpoints_for_service_without_selector():
    push = context()
    eps = push.endpoints("legacy.other.svc.cluster.local", 5432)
    assert [(e.address, e.port) for e in eps] == [("10.3.0.1", 15432)]


def test_dns_service_entry_gets_its_host_as_endpoint():
    push = context()
    eps = push.endpoints("api.example.com", 443)
    assert [(e.address, e.port) for e in eps] == [("api.example.com", 443)]


def test_export_to_dot_hides_service_from_other_namespaces():
    push = context()
    seen = {s.hostname for s in push.visible_services(sidecar("default"))}
    assert "legacy.other.svc.cluster.local" not in seen
    seen_other = {s.hostname for s in push.visible_services(sidecar("other"))}
    assert "legacy.other.svc.cluster.local" in seen_other


def test_destination_rule_lookup_prefers_proxy_namespace_then_root():
    push = context()
    rule = push.destination_rule(sidecar("default"), "reviews.default.svc.cluster.local")
    assert rule.name == "reviews"
    # From another namespace the default-namespace rule is still found (service namespace
    # comes before the root namespace).
    rule = push.destination_rule(sidecar("other"), "reviews.default.svc.cluster.local")
    assert rule.name == "reviews"


def test_gateway_selection_and_virtual_service_binding():
    push = context()
    router = parse_node("router~10.0.0.1~gw-1.istio-system~istio-system.svc.cluster.local",
                        {"LABELS": {"istio": "ingressgateway"}})
    assert [g.name for g in push.gateways_for(router)] == ["gw"]
    assert [v.name for v in push.virtual_services_for(router, "istio-system/gw")] == ["reviews"]
    assert push.gateways_for(sidecar()) == []
    assert push.virtual_services[0].hosts == ("reviews.default.svc.cluster.local",)


def test_service_instances_use_pod_ports_metadata_for_named_targets():
    push = context()
    proxy = sidecar(labels={"app": "reviews"},
                    POD_PORTS='[{"name": "web", "containerPort": 8080}]')
    instances = push.service_instances(proxy)
    assert [(i.port.port, i.target_port) for i in instances] == [
        (9080, 8080), (9090, 9090), (3306, 3306)
    ]


def test_sidecar_resource_limits_visible_services():
    objects, _ = load_text(MESH + """\
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress: [{hosts: ["./*"]}]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
""", "mesh.yaml")
    push = push_context.build(objects, MeshSettings(), "v1")
    proxy = sidecar("default")
    assert {s.hostname for s in push.visible_services(proxy)} == {
        "reviews.default.svc.cluster.local", "api.example.com"
    }
    assert push.outbound_traffic_policy(proxy) == "REGISTRY_ONLY"


def sidecar_scope_sees(hosts: list[str], namespace: str = "other") -> set[str]:
    objects, _ = load_text(MESH + f"""\
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: {namespace}}}
spec:
  egress: [{{hosts: {hosts!r}}}]
""", "mesh.yaml")
    push = push_context.build(objects, MeshSettings(), "v1")
    return {s.hostname for s in push.visible_services(sidecar(namespace))}


def test_sidecar_egress_exclusions_leave_out_what_the_other_hosts_import():
    everything = sidecar_scope_sees(["*/*"])
    assert {"reviews.default.svc.cluster.local", "legacy.other.svc.cluster.local",
            "api.example.com"} <= everything
    # ~ns/* leaves out a namespace, ~ns/host one host there, ~/host that host anywhere.
    assert sidecar_scope_sees(["*/*", "~default/*"]) == everything - {
        s for s in everything if s.endswith(".default.svc.cluster.local")
        or s == "api.example.com"}
    assert sidecar_scope_sees(["*/*", "~default/reviews.default.svc.cluster.local"]) == (
        everything - {"reviews.default.svc.cluster.local"})
    assert sidecar_scope_sees(["*/*", "~/*.example.com"]) == everything - {"api.example.com"}
    assert sidecar_scope_sees(["*/*", "~./*"]) == everything - {"legacy.other.svc.cluster.local"}
    # Exclusions alone import nothing; ~/* imports nothing, as before.
    assert sidecar_scope_sees(["~default/*"]) == set()
    assert sidecar_scope_sees(["~/*"]) == set()
