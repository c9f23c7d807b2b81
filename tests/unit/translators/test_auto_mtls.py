"""Client side mTLS: auto mTLS per endpoint, DestinationRule ISTIO_MUTUAL, and the epochs."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import parse_node
from pilotfish.core.xds import types
from pilotfish.core.xds.generator import GenerationCache, Generators, PushState
from pilotfish.core.yamlload import load_text
from pilotfish.testing.generators import generate
from pilotfish.translators.cds import RouterClusters, SidecarClusters
from pilotfish.translators.eds import Endpoints

MESH = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: grpc, port: 9090}]
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  labels: {app: web, version: v1, security.istio.io/tlsMode: istio}
spec: {serviceAccountName: web}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-2
  namespace: shop
  labels: {app: web, version: v2, security.istio.io/tlsMode: istio}
spec: {serviceAccountName: web-canary}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: web-3, namespace: shop, labels: {app: web, version: v1}}
spec: {serviceAccountName: no-sidecar}
status: {podIP: 10.0.0.3}
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: shop}
spec:
  selector: {app: plain}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: plain-1, namespace: shop, labels: {app: plain}}
status: {podIP: 10.0.1.1}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: shop}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 443, name: tcp, protocol: TCP}]
  endpoints: [{address: 192.0.2.1, labels: {security.istio.io/tlsMode: istio},
               serviceAccount: ext}]
"""

WEB = "web.shop.svc.cluster.local"
NODE = "sidecar~10.0.9.9~client-1.shop~shop.svc.cluster.local"
WEB_SANS = ["spiffe://cluster.local/ns/shop/sa/web", "spiffe://cluster.local/ns/shop/sa/web-canary"]


def context(config: str = MESH, mesh: MeshSettings | None = None) -> push_context.PushContext:
    objects, errors = load_text(config, "test.yaml")
    assert not errors, errors
    return push_context.build(objects, mesh or MeshSettings(), "v1")


def clusters(config: str = MESH, mesh: MeshSettings | None = None
             ) -> dict[str, cluster_pb2.Cluster]:
    proxy = parse_node(NODE, {"LABELS": {"app": "client"}})
    return {c.name: c for c in generate(types.CLUSTER, context(config, mesh), proxy, {})}


def tls_of(socket: Any) -> tls_pb2.UpstreamTlsContext:
    context = tls_pb2.UpstreamTlsContext()
    assert socket.typed_config.Unpack(context)
    return context


def sans(context: tls_pb2.UpstreamTlsContext) -> list[str]:
    validation = context.common_tls_context.combined_validation_context
    return [m.matcher.exact for m in validation.default_validation_context
            .match_typed_subject_alt_names]


def test_sidecar_backed_services_get_istio_and_plaintext_socket_matches() -> None:
    cluster = clusters()[f"outbound|80||{WEB}"]
    istio, plain = cluster.transport_socket_matches
    assert (istio.name, dict(istio.match)) == ("tlsMode-istio", {"tlsMode": "istio"})
    assert (plain.name, dict(plain.match)) == ("tlsMode-disabled", {})
    assert plain.transport_socket.name == "envoy.transport_sockets.raw_buffer"
    assert not cluster.HasField("transport_socket")
    context = tls_of(istio.transport_socket)
    common = context.common_tls_context
    assert context.sni == f"outbound_.80_._.{WEB}"
    assert list(common.alpn_protocols) == ["istio"]
    assert [s.name for s in common.tls_certificate_sds_secret_configs] == ["default"]
    validation = common.combined_validation_context
    assert validation.validation_context_sds_secret_config.name == "ROOTCA"
    assert (validation.validation_context_sds_secret_config.sds_config.api_config_source
            .grpc_services[0].envoy_grpc.cluster_name) == "sds-grpc"
    # The accounts of the sidecar-backed pods only; the pod without one has no say.
    assert sans(context) == WEB_SANS


def test_http2_clusters_also_offer_h2_and_subsets_use_their_own_sni() -> None:
    rule = """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  subsets: [{name: v1, labels: {version: v1}}]
"""
    found = clusters(MESH + rule)
    grpc = tls_of(found[f"outbound|9090||{WEB}"].transport_socket_matches[0].transport_socket)
    assert list(grpc.common_tls_context.alpn_protocols) == ["istio", "h2"]
    subset = tls_of(found[f"outbound|80|v1|{WEB}"].transport_socket_matches[0]
                    .transport_socket)
    assert subset.sni == f"outbound_.80_.v1_.{WEB}"
    assert sans(subset) == WEB_SANS  # service-wide, as the subset may change under it


def test_no_auto_mtls_without_sidecars_outside_the_mesh_or_when_turned_off() -> None:
    found = clusters()
    assert not found["outbound|80||plain.shop.svc.cluster.local"].transport_socket_matches
    assert not found["outbound|443||api.example.com"].transport_socket_matches
    off = clusters(mesh=MeshSettings(enable_auto_mtls=False))
    assert not off[f"outbound|80||{WEB}"].transport_socket_matches


def test_a_namespace_or_mesh_in_disable_mode_turns_client_mtls_off() -> None:
    for namespace in ("shop", "istio-system"):
        disable = f"""---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: {namespace}}}
spec: {{mtls: {{mode: DISABLE}}}}
"""
        assert not clusters(MESH + disable)[f"outbound|80||{WEB}"].transport_socket_matches


def test_destination_rule_tls_replaces_auto_mtls() -> None:
    rule = """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
  subsets: [{name: plain, labels: {version: v1}, trafficPolicy: {tls: {mode: DISABLE}}}]
"""
    found = clusters(MESH + rule)
    mutual = found[f"outbound|80||{WEB}"]
    assert not mutual.transport_socket_matches
    context = tls_of(mutual.transport_socket)
    # The same choices as auto mTLS: SNI, the service's accounts, the mesh ALPN.
    assert context.sni == f"outbound_.80_._.{WEB}"
    assert sans(context) == WEB_SANS
    assert list(context.common_tls_context.alpn_protocols) == ["istio"]
    plain = found[f"outbound|80|plain|{WEB}"]
    assert not plain.transport_socket_matches and not plain.HasField("transport_socket")


def test_destination_rule_subject_alt_names_win() -> None:
    rule = """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL, sni: web.internal, subjectAltNames: ["spiffe://other/ns/a/sa/b"]}
"""
    context = tls_of(clusters(MESH + rule)[f"outbound|80||{WEB}"].transport_socket)
    assert (context.sni, sans(context)) == ("web.internal", ["spiffe://other/ns/a/sa/b"])


# -- endpoint metadata ------------------------------------------------------------------


def tls_modes(config: str) -> dict[str, bool]:
    proxy = parse_node(NODE, {"LABELS": {"app": "client"}})
    out: dict[str, bool] = {}
    for cla in generate(types.ENDPOINT, context(config), proxy, {}):
        assert isinstance(cla, endpoint_pb2.ClusterLoadAssignment)
        if cla.cluster_name != f"outbound|80||{WEB}":
            continue
        for locality in cla.endpoints:
            for lb in locality.lb_endpoints:
                meta = lb.metadata.filter_metadata.get("envoy.transport_socket_match")
                out[lb.endpoint.address.socket_address.address] = bool(
                    meta and meta.fields["tlsMode"].string_value == "istio")
    return out


def test_endpoints_are_marked_for_mtls_unless_their_workload_disables_it() -> None:
    assert tls_modes(MESH) == {"10.0.0.1": True, "10.0.0.2": True, "10.0.0.3": False}
    canary_off = """---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: canary, namespace: shop}
spec:
  selector: {matchLabels: {version: v2}}
  mtls: {mode: STRICT}
  portLevelMtls: {"8080": {mode: DISABLE}}
"""
    # Port-level: the endpoint's target port 8080 is plaintext on web-2.
    assert tls_modes(MESH + canary_off) == {
        "10.0.0.1": True, "10.0.0.2": False, "10.0.0.3": False}


# -- push epochs ---------------------------------------------------------------------------


def test_cds_moves_when_accounts_change_and_not_when_pods_only_move() -> None:
    generators = Generators.of(SidecarClusters(), RouterClusters(), Endpoints())
    cache = GenerationCache(generators)
    proxy = parse_node(NODE, {"LABELS": {"app": "client"}})
    first = PushState(context(), {}).advance(context(), None, generators)
    cache.resources(first, types.CLUSTER, proxy)
    moved = first.advance(context(MESH.replace("10.0.0.1", "10.0.0.7")), frozenset({"Pod"}),
                          generators)
    assert moved.changed_types(first) == [types.ENDPOINT]
    renamed = moved.advance(context(MESH.replace("{serviceAccountName: web}",
                                                 "{serviceAccountName: web-v2}")),
                            frozenset({"Pod"}), generators)
    assert renamed.changed_types(moved) == [types.CLUSTER, types.ENDPOINT]
    policy = renamed.advance(context(), frozenset({"PeerAuthentication"}), generators)
    assert policy.changed_types(renamed) == [types.CLUSTER, types.ENDPOINT]
