"""The waypoint generators: names and shapes of what istiod gives a waypoint, for a service
bound to it with a VirtualService (a header match, an 80/20 split over subsets) and an L7
DENY on a path aimed at the service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.common.set_filter_state.v3 import value_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.http.set_filter_state.v3 import (
    set_filter_state_pb2 as http_state_pb2,
)
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.set_filter_state.v3 import (
    set_filter_state_pb2 as network_state_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.internal_upstream.v3 import (
    internal_upstream_pb2 as internal_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import json_format

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import Proxy, parse_node
from pilotfish.core.yamlload import load_text
from pilotfish.testing.envoy_check import envoy_accepts
from pilotfish.translators.ambient import waypoint_scope
from pilotfish.translators.ambient.waypoint_clusters import WaypointClusters
from pilotfish.translators.ambient.waypoint_endpoints import WaypointEndpoints
from pilotfish.translators.ambient.waypoint_listeners import (
    WaypointListeners,
    peer_from_filter_state,
)
from pilotfish.translators.ambient.waypoint_routes import WaypointRoutes
from pilotfish.translators.listener_filters import NONE
from pilotfish.translators.rbac_matchers import namespace, principal

HOST = "reviews.shop.svc.cluster.local"
HTTP = f"inbound-vip|9080|http|{HOST}"
CONFIG = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop, labels: {istio.io/waypoint-for: service}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec:
  clusterIP: 10.96.0.20
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 8080}, {name: tcp-db, port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: details, namespace: shop}
spec:
  clusterIP: 10.96.0.21
  selector: {app: details}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: shop, labels: {app: reviews, version: v1}}
spec: {serviceAccountName: reviews, containers: [{name: app}]}
status: {phase: Running, podIP: 10.0.0.11}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: shop, labels: {app: reviews, version: v2}}
spec: {serviceAccountName: reviews, containers: [{name: app}]}
status: {phase: Running, podIP: 10.0.0.12}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {x-canary: {exact: "yes"}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: reviews}]
  action: DENY
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/intruder"]}}]
    to: [{operation: {paths: ["/admin*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: elsewhere, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: details}]
  action: DENY
  rules: [{to: [{operation: {paths: ["/details"]}}]}]
"""


def _push(text: str = CONFIG) -> push_context.PushContext:
    objects, errors = load_text(text, "waypoint.yaml")
    assert not errors, errors
    return push_context.build(objects, MeshSettings(), "v1")


def _proxy(gateway: str = "waypoint") -> Proxy:
    return parse_node("waypoint~10.0.0.50~waypoint-5d8f9.shop~shop.svc.cluster.local",
                      {"LABELS": {"gateway.networking.k8s.io/gateway-name": gateway}})


def _json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


@pytest.fixture(scope="module")
def push() -> push_context.PushContext:
    return _push()


def test_the_waypoint_serves_only_the_services_bound_to_it(
        push: push_context.PushContext) -> None:
    bound = waypoint_scope.bound_services(push, _proxy())
    assert [(b.service.hostname, b.vips) for b in bound] == [(HOST, ("10.96.0.20",))]
    assert waypoint_scope.bound_services(push, _proxy("no-such-gateway")) == []


def test_clusters_are_istiods(push: push_context.PushContext) -> None:
    clusters = {c.name: c for c in WaypointClusters().generate(push, _proxy(), {})}
    assert list(clusters) == [
        "main_internal", "connect_originate", HTTP,
        f"inbound-vip|9080|http/v1|{HOST}", f"inbound-vip|9080|http/v2|{HOST}",
        f"inbound-vip|5432|tcp|{HOST}"]
    main = clusters["main_internal"]
    assert main.type == cluster_pb2.Cluster.STATIC
    address = main.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert address.envoy_internal_address.server_listener_name == "main_internal"

    originate = clusters["connect_originate"]
    assert originate.type == cluster_pb2.Cluster.ORIGINAL_DST
    assert originate.lb_policy == cluster_pb2.Cluster.CLUSTER_PROVIDED
    assert originate.original_dst_lb_config.upstream_port_override.value == 15008
    tls = tls_pb2.UpstreamTlsContext()
    originate.transport_socket.typed_config.Unpack(tls)
    common = tls.common_tls_context
    assert common.alpn_protocols == ["h2"]
    assert common.tls_params.tls_minimum_protocol_version == common.tls_params.TLSv1_3
    assert common.tls_certificate_sds_secret_configs[0].name == "default"
    assert common.combined_validation_context.validation_context_sds_secret_config.name == (
        "ROOTCA")
    assert not tls.sni  # HBONE sends no SNI

    vip = clusters[f"inbound-vip|9080|http/v1|{HOST}"]
    assert vip.type == cluster_pb2.Cluster.EDS
    assert vip.eds_cluster_config.service_name == vip.name
    internal = internal_pb2.InternalUpstreamTransport()
    vip.transport_socket.typed_config.Unpack(internal)
    assert [m.name for m in internal.passthrough_metadata] == [
        "envoy.filters.listener.original_dst", "tunnel"]


def test_endpoints_tunnel_through_connect_originate(push: push_context.PushContext) -> None:
    assignments = {a.cluster_name: a for a in WaypointEndpoints().generate(push, _proxy(), {})}
    def targets(name: str) -> list[dict[str, Any]]:
        return [_json(lb) for lb in assignments[name].endpoints[0].lb_endpoints]

    assert [e["endpoint"]["address"]["envoy_internal_address"] for e in targets(HTTP)] == [
        {"server_listener_name": "connect_originate", "endpoint_id": "10.0.0.11:8080"},
        {"server_listener_name": "connect_originate", "endpoint_id": "10.0.0.12:8080"}]
    (v2,) = targets(f"inbound-vip|9080|http/v2|{HOST}")
    assert v2["metadata"]["filter_metadata"] == {
        "envoy.filters.listener.original_dst": {"local": "10.0.0.12:8080"},
        "tunnel": {"destination": "10.0.0.12:8080",
                   "identity": "spiffe://cluster.local/ns/shop/sa/reviews"}}
    assert [e["endpoint"]["address"]["envoy_internal_address"]["endpoint_id"]
            for e in targets(f"inbound-vip|5432|tcp|{HOST}")] == [
        "10.0.0.11:5432", "10.0.0.12:5432"]


def test_routes_split_and_match_to_vip_subset_clusters(
        push: push_context.PushContext) -> None:
    (config,) = WaypointRoutes().generate(push, _proxy(), {})
    assert config.name == HTTP
    (host,) = config.virtual_hosts
    assert (host.name, list(host.domains)) == ("inbound|http|9080", ["*"])
    canary, split = host.routes
    assert canary.match.headers[0].name == "x-canary"
    assert canary.route.cluster == f"inbound-vip|9080|http/v2|{HOST}"
    assert [(c.name, c.weight.value) for c in split.route.weighted_clusters.clusters] == [
        (f"inbound-vip|9080|http/v1|{HOST}", 80), (f"inbound-vip|9080|http/v2|{HOST}", 20)]


def test_without_a_virtual_service_the_default_route(push: push_context.PushContext) -> None:
    text = CONFIG.replace("kind: VirtualService", "kind: VirtualService\n# off").replace(
        "hosts: [reviews]", "hosts: [nothing.example.com]")
    (config,) = WaypointRoutes().generate(_push(text), _proxy(), {})
    (route,) = config.virtual_hosts[0].routes
    assert (route.name, route.route.cluster) == ("default", HTTP)


def _listeners(push: push_context.PushContext) -> dict[str, listener_pb2.Listener]:
    return {item.name: item for item in WaypointListeners().generate(push, _proxy(), {})}


def test_connect_terminate(push: push_context.PushContext) -> None:
    listener = _listeners(push)["connect_terminate"]
    address = listener.address.socket_address
    assert (address.address, address.port_value) == ("0.0.0.0", 15008)
    assert listener.connection_balance_config.HasField("exact_balance")
    (chain,) = listener.filter_chains
    tls = tls_pb2.DownstreamTlsContext()
    chain.transport_socket.typed_config.Unpack(tls)
    assert tls.require_client_certificate.value
    assert tls.common_tls_context.alpn_protocols == ["h2"]
    manager = hcm_pb2.HttpConnectionManager()
    chain.filters[0].typed_config.Unpack(manager)
    assert manager.http2_protocol_options.allow_connect
    assert [u.upgrade_type for u in manager.upgrade_configs] == ["CONNECT"]
    (route,) = manager.route_config.virtual_hosts[0].routes
    assert route.match.HasField("connect_matcher")
    assert route.route.cluster == "main_internal"
    assert route.route.upgrade_configs[0].upgrade_type == "CONNECT"
    assert route.route.upgrade_configs[0].HasField("connect_config")
    state = http_state_pb2.Config()
    manager.http_filters[0].typed_config.Unpack(state)
    assert {(v.object_key, v.format_string.text_format_source.inline_string, v.factory_key)
            for v in state.on_request_headers} == {
        ("envoy.filters.listener.original_dst.local_ip", "%REQ(:AUTHORITY)%", ""),
        ("envoy.filters.listener.original_dst.remote_ip", "%DOWNSTREAM_REMOTE_ADDRESS%", ""),
        ("io.istio.peer_principal", "%DOWNSTREAM_PEER_URI_SAN%", "envoy.string"),
        ("io.istio.local_principal", "%DOWNSTREAM_LOCAL_URI_SAN%", "envoy.string")}
    assert all(v.shared_with_upstream == value_pb2.FilterStateValue.ONCE
               for v in state.on_request_headers)


def test_main_internal_chains_per_vip_and_port_with_rbac(
        push: push_context.PushContext) -> None:
    listener = _listeners(push)["main_internal"]
    assert listener.HasField("internal_listener")
    assert [f.name for f in listener.listener_filters] == [
        "envoy.filters.listener.original_dst"]
    chains = {c.name: c for c in listener.filter_chains}
    assert list(chains) == [HTTP, f"inbound-vip|5432|tcp|{HOST}"]
    http = chains[HTTP]
    assert _json(http.filter_chain_match) == {
        "prefix_ranges": [{"address_prefix": "10.96.0.20", "prefix_len": 32}],
        "destination_port": 9080}
    manager = hcm_pb2.HttpConnectionManager()
    http.filters[0].typed_config.Unpack(manager)
    assert manager.rds.route_config_name == HTTP
    assert manager.http_filters[0].name == "envoy.filters.http.rbac"
    rbac = http_rbac_pb2.RBAC()
    manager.http_filters[0].typed_config.Unpack(rbac)
    # Only the policy aimed at this service; the peer is read from the filter state.
    (name,) = rbac.rules.policies
    assert name == "ns[shop]-policy[no-admin]-rule[0]"
    assert _json(rbac.rules.policies[name]) == {
        "permissions": [{"url_path": {"path": {"prefix": "/admin"}}}],
        "principals": [{"filter_state": {"key": "io.istio.peer_principal", "string_match": {
            "exact": "spiffe://cluster.local/ns/shop/sa/intruder"}}}]}

    tcp = chains[f"inbound-vip|5432|tcp|{HOST}"]
    assert tcp.filters[-1].name == "envoy.filters.network.tcp_proxy"
    proxy = tcp_proxy_pb2.TcpProxy()
    tcp.filters[-1].typed_config.Unpack(proxy)
    assert proxy.cluster == f"inbound-vip|5432|tcp|{HOST}"


def test_connect_originate_tunnels_to_the_restored_address(
        push: push_context.PushContext) -> None:
    listener = _listeners(push)["connect_originate"]
    assert listener.HasField("internal_listener")
    sans_filter, tunnel = listener.filter_chains[0].filters
    sans = network_state_pb2.Config()
    sans_filter.typed_config.Unpack(sans)
    (value,) = sans.on_new_connection
    assert value.object_key == "envoy.network.upstream_subject_alt_names"
    assert value.format_string.text_format_source.inline_string == (
        "%DYNAMIC_METADATA(tunnel:identity)%")
    proxy = tcp_proxy_pb2.TcpProxy()
    tunnel.typed_config.Unpack(proxy)
    assert proxy.cluster == "connect_originate"
    assert proxy.tunneling_config.hostname == "%DOWNSTREAM_LOCAL_ADDRESS%"


def test_policies_for_the_waypoint_its_services_and_its_class() -> None:
    push = _push(CONFIG + """---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: on-waypoint, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  rules: [{from: [{source: {namespaces: [shop]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: all-waypoints, namespace: istio-system}
spec:
  targetRefs: [{kind: GatewayClass, group: gateway.networking.k8s.io, name: istio-waypoint}]
  action: DENY
  rules: [{to: [{operation: {methods: [TRACE]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: selector-based, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules: [{}]
""")
    waypoint = waypoint_scope.waypoint_of(push, _proxy())
    assert waypoint is not None
    (bound,) = waypoint_scope.bound_services(push, _proxy())
    names = [p.name for p in waypoint_scope.policies_for(push, waypoint, bound.service)]
    assert sorted(names) == ["all-waypoints", "no-admin", "on-waypoint"]


GAMMA = """
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: details, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec:
  clusterIP: 10.96.0.30
  selector: {app: details}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: details-v1, namespace: shop}
spec:
  clusterIP: 10.96.0.31
  selector: {app: details, version: v1}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: details-v2, namespace: shop}
spec:
  clusterIP: 10.96.0.32
  selector: {app: details, version: v2}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: details-v2, namespace: shop, labels: {app: details, version: v2}}
spec: {serviceAccountName: details, containers: [{name: app}]}
status: {phase: Running, podIP: 10.0.0.22}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: details, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: details, port: 9080}]
  rules:
  - backendRefs:
    - {name: details-v1, port: 9080, weight: 80}
    - {name: details-v2, port: 9080, weight: 20}
"""


def test_an_httproute_on_the_service_splits_to_its_backends_over_hbone() -> None:
    push = _push(GAMMA)
    proxy = _proxy()
    detail = "details.shop.svc.cluster.local"
    (config,) = WaypointRoutes().generate(push, proxy, {})
    assert config.name == f"inbound-vip|9080|http|{detail}"
    (route,) = config.virtual_hosts[0].routes
    assert [(c.name, c.weight.value) for c in route.route.weighted_clusters.clusters] == [
        ("inbound-vip|9080|http|details-v1.shop.svc.cluster.local", 80),
        ("inbound-vip|9080|http|details-v2.shop.svc.cluster.local", 20)]
    # The backends are not bound to the waypoint, yet it has their clusters and pods.
    assert [c.name for c in WaypointClusters().generate(push, proxy, {})][2:] == [
        f"inbound-vip|9080|http|{detail}",
        "inbound-vip|9080|http|details-v1.shop.svc.cluster.local",
        "inbound-vip|9080|http|details-v2.shop.svc.cluster.local"]
    v2 = {a.cluster_name: a for a in WaypointEndpoints().generate(push, proxy, {})}[
        "inbound-vip|9080|http|details-v2.shop.svc.cluster.local"]
    assert [lb.endpoint.address.envoy_internal_address.endpoint_id
            for lb in v2.endpoints[0].lb_endpoints] == ["10.0.0.22:8080"]
    # Only the bound service's VIP has a chain on main_internal.
    chains = _listeners(push)["main_internal"].filter_chains
    assert [c.name for c in chains] == [f"inbound-vip|9080|http|{detail}"]


def test_peer_matches_anywhere_in_a_principal_read_the_filter_state() -> None:
    tree = rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=[
        rbac_pb2.Principal(not_id=principal("cluster.local/ns/shop/sa/admin")),
        rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=[namespace("shop")])),
    ]))
    peer_from_filter_state(tree)
    text = str(_json(tree))
    assert "authenticated" not in text
    assert text.count("io.istio.peer_principal") == 2
    assert _json(tree.and_ids.ids[0].not_id) == {"filter_state": {
        "key": "io.istio.peer_principal",
        "string_match": {"exact": "spiffe://cluster.local/ns/shop/sa/admin"}}}


@pytest.mark.parametrize("gateway", ["waypoint", "no-such-gateway"])
def test_envoy_accepts_the_listeners_and_clusters(tmp_path: Path, gateway: str) -> None:
    """Real Envoy (``--mode validate``, the waypoint bootstrap with internal listeners)
    takes them as they are (with a sniffed port too), also for a waypoint that serves
    nothing yet (``main_internal`` then holds only its default chain)."""
    push = _push(SNIFFED)
    proxy = _proxy(gateway)
    listeners = WaypointListeners().generate(push, proxy, {})
    if gateway != "waypoint":
        main = next(item for item in listeners if item.name == "main_internal")
        assert not main.filter_chains
        assert main.default_filter_chain.name == "no-bound-service"
    envoy_accepts(tmp_path, proxy_type="waypoint", namespace="shop",
                  listeners=[json_format.MessageToDict(item) for item in listeners],
                  clusters=[json_format.MessageToDict(item)
                            for item in WaypointClusters().generate(push, proxy, {})])


SNIFFED = CONFIG.replace(
    "ports: [{name: http, port: 9080, targetPort: 8080}, {name: tcp-db, port: 5432}]",
    "ports: [{name: http, port: 9080, targetPort: 8080}, {name: tcp-db, port: 5432},\n"
    "          {name: web, port: 8000}]")


def test_a_port_without_a_protocol_gets_sniffed_http_and_tcp_chains() -> None:
    push = _push(SNIFFED)
    listener = next(item for item in WaypointListeners().generate(push, _proxy(), {})
                    if item.name == "main_internal")
    chains = {c.name: c for c in listener.filter_chains}
    http, tcp = chains[f"inbound-vip|8000|http|{HOST}"], chains[f"inbound-vip|8000|tcp|{HOST}"]
    assert list(http.filter_chain_match.application_protocols) == ["http/1.1", "h2c"]
    assert not tcp.filter_chain_match.application_protocols
    assert [f.name for f in listener.listener_filters] == [
        "envoy.filters.listener.original_dst", "envoy.filters.listener.http_inspector"]
    # Off on the declared ports: a server-first protocol there must not wait for it.
    disabled = _json(listener.listener_filters[1].filter_disabled)
    assert disabled == {"or_match": {"rules": [
        {"destination_port_range": {"start": 5432, "end": 5433}},
        {"destination_port_range": {"start": 9080, "end": 9081}}]}}
    names = [c.name for c in WaypointClusters().generate(push, _proxy(), {})]
    assert {f"inbound-vip|8000|tcp|{HOST}", f"inbound-vip|8000|http|{HOST}",
            f"inbound-vip|8000|http/v1|{HOST}"} <= set(names)
    assert f"inbound-vip|8000|http|{HOST}" in [
        r.name for r in WaypointRoutes().generate(push, _proxy(), {})]


def test_without_the_http_sniffer_an_undeclared_port_is_tcp() -> None:
    push = _push(SNIFFED)
    listener = next(item for item in WaypointListeners(NONE).generate(push, _proxy(), {})
                    if item.name == "main_internal")
    assert [c.name for c in listener.filter_chains if "|8000|" in c.name] == [
        f"inbound-vip|8000|tcp|{HOST}"]
    assert [f.name for f in listener.listener_filters] == [
        "envoy.filters.listener.original_dst"]


WORKLOADS = SNIFFED.replace("istio.io/waypoint-for: service", "istio.io/waypoint-for: all").replace(
    "labels: {app: reviews, version: v1}}",
    "labels: {app: reviews, version: v1, istio.io/use-waypoint: waypoint}}")


def test_a_pod_bound_for_workload_traffic_gets_a_chain_to_encap(tmp_path: Path) -> None:
    push = _push(WORKLOADS)
    assert [w.address for w in waypoint_scope.bound_workloads(push, _proxy())] == ["10.0.0.11"]
    listeners = WaypointListeners().generate(push, _proxy(), {})
    main = next(item for item in listeners if item.name == "main_internal")
    chain = main.filter_chains[-1]
    assert chain.name == "direct-tcp|10.0.0.11"
    assert _json(chain.filter_chain_match) == {
        "prefix_ranges": [{"address_prefix": "10.0.0.11", "prefix_len": 32}]}
    state = network_state_pb2.Config()
    chain.filters[0].typed_config.Unpack(state)
    assert [(v.object_key, v.format_string.text_format_source.inline_string,
             v.shared_with_upstream) for v in state.on_new_connection] == [
        ("envoy.filters.listener.original_dst.local_ip", "%DOWNSTREAM_LOCAL_ADDRESS%",
         value_pb2.FilterStateValue.ONCE),
        ("envoy.network.upstream_subject_alt_names", "spiffe://cluster.local/ns/shop/sa/reviews",
         value_pb2.FilterStateValue.TRANSITIVE)]
    proxy = tcp_proxy_pb2.TcpProxy()
    chain.filters[-1].typed_config.Unpack(proxy)
    assert proxy.cluster == "encap"
    clusters = WaypointClusters().generate(push, _proxy(), {})
    encap = next(c for c in clusters if c.name == "encap")
    assert encap.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address \
        .envoy_internal_address.server_listener_name == "connect_originate"
    # A waypoint for services only takes no workload traffic.
    assert waypoint_scope.bound_workloads(_push(SNIFFED.replace(
        "labels: {app: reviews, version: v1}}",
        "labels: {app: reviews, version: v1, istio.io/use-waypoint: waypoint}}")),
        _proxy()) == []
    envoy_accepts(tmp_path, proxy_type="waypoint", namespace="shop",
                  listeners=[json_format.MessageToDict(item) for item in listeners],
                  clusters=[json_format.MessageToDict(item) for item in clusters])
