"""Sidecars and ambient pods: a sidecar (or a gateway) reaches ambient pods over HBONE
through ``connect_originate`` (other endpoints as before), and a sidecar whose pod is labelled
``networking.istio.io/tunnel: http`` takes HBONE on 15008 into its own inbound chains.
Names and shapes as istiod's; real Envoy validates both directions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.internal_upstream.v3 import (
    internal_upstream_pb2 as internal_pb2,
)
from google.protobuf import json_format

from pilotfish.core import push_context
from pilotfish.core.ambient import workload_pb2
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import STATS_MODULE, STATS_TABLE, Proxy, parse_node
from pilotfish.core.proxy_backend import ProxyOptions
from pilotfish.core.yamlload import load_text
from pilotfish.plugins.envoy.bootstrap import INTERNAL_LISTENER_EXTENSION, bootstrap
from pilotfish.testing.envoy_check import envoy_accepts
from pilotfish.translators.ambient.addresses import Addresses
from pilotfish.translators.cds import RouterClusters, SidecarClusters
from pilotfish.translators.eds import Endpoints
from pilotfish.translators.lds import RouterListeners, SidecarListeners
from pilotfish.translators.stats_module import HEADER_MUTATION, HEADER_TO_METADATA

AMBIENT = "outbound|9080||server.shop.svc.cluster.local"
LEGACY = "outbound|9080||legacy.mesh.svc.cluster.local"
PLAIN = "outbound|9080||plain.plain.svc.cluster.local"


def pod(name: str, namespace: str, ip: str, labels: str, sidecar: bool = False) -> str:
    annotations = "{sidecar.istio.io/status: '{}'}" if sidecar else "{}"
    return f"""\
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, labels: {labels}, annotations: {annotations}}}
spec: {{serviceAccountName: {name}, containers: [{{name: app, ports: [{{containerPort: 8080}}]}}]}}
status: {{phase: Running, podIP: {ip}}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 9080, targetPort: 8080}}]
---
"""


SIDECAR = "{app: NAME, security.istio.io/tlsMode: istio}"
CONFIG = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: mesh, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
""" + "".join([
    pod("server", "shop", "10.0.0.11", "{app: server}"),
    pod("client", "mesh", "10.0.0.21", SIDECAR.replace("NAME", "client"), sidecar=True),
    pod("legacy", "mesh", "10.0.0.22", SIDECAR.replace("NAME", "legacy"), sidecar=True),
    pod("hboned", "mesh", "10.0.0.23", SIDECAR.replace(
        "NAME", "hboned").replace("}", ", networking.istio.io/tunnel: http}"), sidecar=True),
    pod("plain", "plain", "10.0.0.31", "{app: plain}"),
]) + """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-server, namespace: mesh}
spec:
  selector: {matchLabels: {app: hboned}}
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/server]}}]}]
"""


def _push(text: str = CONFIG) -> push_context.PushContext:
    objects, errors = load_text(text, "interop.yaml")
    assert not errors, errors
    return push_context.build(objects, MeshSettings(), "v1")


def _sidecar(name: str = "client", ip: str = "10.0.0.21", **labels: str) -> Proxy:
    return parse_node(f"sidecar~{ip}~{name}.mesh~mesh.svc.cluster.local",
                      {"LABELS": {"app": name, "security.istio.io/tlsMode": "istio", **labels},
                       "POD_PORTS": '[{"containerPort": 8080}]'})


def _hboned() -> Proxy:
    return _sidecar("hboned", "10.0.0.23", **{"networking.istio.io/tunnel": "http"})


def _json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _assignments(push: push_context.PushContext, proxy: Proxy) -> dict[str, Any]:
    return {a.cluster_name: a for a in Endpoints().generate(push, proxy, {})}


def test_ambient_endpoints_go_through_connect_originate_others_stay() -> None:
    assignments = _assignments(_push(), _sidecar())
    (ambient,) = assignments[AMBIENT].endpoints[0].lb_endpoints
    found = _json(ambient)
    assert found["endpoint"]["address"] == {"envoy_internal_address": {
        "server_listener_name": "connect_originate", "endpoint_id": "10.0.0.11:8080"}}
    metadata = found["metadata"]["filter_metadata"]
    assert metadata["envoy.transport_socket_match"] == {"tunnel": "http"}
    assert metadata["envoy.filters.listener.original_dst"] == {"local": "10.0.0.11:8080"}
    assert metadata["tunnel"] == {"destination": "10.0.0.11:8080",
                                  "identity": "spiffe://cluster.local/ns/shop/sa/server"}
    # a sidecar's pod keeps Istio's mTLS; a plain pod plaintext
    (legacy,) = assignments[LEGACY].endpoints[0].lb_endpoints
    assert legacy.endpoint.address.socket_address.address == "10.0.0.22"
    assert _json(legacy)["metadata"]["filter_metadata"]["envoy.transport_socket_match"] == {
        "tlsMode": "istio"}
    (plain,) = assignments[PLAIN].endpoints[0].lb_endpoints
    assert plain.endpoint.address.socket_address.address == "10.0.0.31"
    assert "envoy.transport_socket_match" not in _json(plain).get("metadata", {}).get(
        "filter_metadata", {})


def test_a_sidecar_that_takes_hbone_is_still_sent_mtls_by_sidecars() -> None:
    """As istiod without PILOT_PREFER_SENDING_HBONE: HBONE only where mTLS is not taken."""
    assignments = _assignments(_push(), _sidecar())
    (hboned,) = assignments["outbound|9080||hboned.mesh.svc.cluster.local"].endpoints[
        0].lb_endpoints
    assert hboned.endpoint.address.socket_address.address == "10.0.0.23"


def test_the_cluster_picks_hbone_by_endpoint_metadata() -> None:
    clusters = {c.name: c for c in SidecarClusters().generate(_push(), _sidecar(), {})}
    ambient = clusters[AMBIENT]
    assert [m.name for m in ambient.transport_socket_matches] == ["hbone", "tlsMode-disabled"]
    assert _json(ambient.transport_socket_matches[0].match) == {"tunnel": "http"}
    internal = internal_pb2.InternalUpstreamTransport()
    ambient.transport_socket_matches[0].transport_socket.typed_config.Unpack(internal)
    assert [m.name for m in internal.passthrough_metadata] == [
        "envoy.filters.listener.original_dst", "tunnel"]
    assert not ambient.HasField("transport_socket")
    assert [m.name for m in clusters[LEGACY].transport_socket_matches] == [
        "tlsMode-istio", "tlsMode-disabled"]
    assert not clusters[PLAIN].transport_socket_matches
    originate = clusters["connect_originate"]
    assert originate.type == cluster_pb2.Cluster.ORIGINAL_DST
    assert originate.original_dst_lb_config.upstream_port_override.value == 15008
    assert "main_internal" not in clusters  # this sidecar does not take HBONE


def test_without_ambient_pods_a_sidecar_keeps_its_config() -> None:
    push = _push(CONFIG.replace("labels: {istio.io/dataplane-mode: ambient}", "labels: {}"))
    clusters = {c.name: c for c in SidecarClusters().generate(push, _sidecar(), {})}
    assert "connect_originate" not in clusters
    assert not clusters[AMBIENT].transport_socket_matches
    listeners = [item.name for item in SidecarListeners().generate(push, _sidecar(), {})]
    assert "connect_originate" not in listeners
    (lb,) = _assignments(push, _sidecar())[AMBIENT].endpoints[0].lb_endpoints
    assert lb.endpoint.address.socket_address.address == "10.0.0.11"


def test_enrolling_a_namespace_moves_the_derived_hbone_kind() -> None:
    before = _push(CONFIG.replace("labels: {istio.io/dataplane-mode: ambient}", "labels: {}"))
    after = _push()
    assert push_context.HBONE_ENDPOINTS in after.derived_changes(
        before, frozenset({"Namespace"}))
    assert after.derived_changes(after, frozenset({"Namespace"})) == frozenset()


def _listeners(proxy: Proxy, push: push_context.PushContext | None = None
               ) -> dict[str, listener_pb2.Listener]:
    return {item.name: item for item in SidecarListeners().generate(push or _push(), proxy, {})}


def test_a_sidecar_labelled_tunnel_http_takes_hbone_into_its_inbound_chains() -> None:
    listeners = _listeners(_hboned())
    assert {"connect_terminate", "main_internal", "connect_originate"} <= set(listeners)
    terminate = listeners["connect_terminate"]
    assert terminate.address.socket_address.port_value == 15008
    main = listeners["main_internal"]
    assert main.HasField("internal_listener") and not main.HasField("address")
    chain = next(c for c in main.filter_chains if c.name == "0.0.0.0_8080")
    assert not chain.HasField("transport_socket")  # the tunnel's mTLS is behind it
    manager = hcm_pb2.HttpConnectionManager()
    chain.filters[0].typed_config.Unpack(manager)
    rbac = http_rbac_pb2.RBAC()
    next(f for f in manager.http_filters if f.name == "envoy.filters.http.rbac"
         ).typed_config.Unpack(rbac)
    (policy,) = rbac.rules.policies.values()
    principal = _json(policy.principals[0])
    assert "io.istio.peer_principal" in str(principal), principal
    assert "authenticated" not in str(principal)
    # the plain sidecar gets none of it
    assert "connect_terminate" not in _listeners(_sidecar())


def _http_filters(listener: listener_pb2.Listener) -> list[list[str]]:
    out = []
    for chain in listener.filter_chains:
        for item in chain.filters:
            manager = hcm_pb2.HttpConnectionManager()
            if item.typed_config.Unpack(manager):
                out.append([f.name for f in manager.http_filters])
    return out


def test_with_the_metrics_module_the_internal_hop_copies_the_tunnels_identities() -> None:
    """Envoy's module cannot read filter state: a sidecar whose Envoy counts with it gets, at
    the head of each HCM of ``main_internal`` (and nowhere else), the filters that copy the
    tunnel's identities into the dynamic metadata the module reads."""
    node = "sidecar~10.0.0.23~hboned.mesh~mesh.svc.cluster.local"
    proxy = parse_node(node, {
        "LABELS": {"app": "hboned", "security.istio.io/tlsMode": "istio",
                   "networking.istio.io/tunnel": "http"},
        "POD_PORTS": '[{"containerPort": 8080}]',
        STATS_MODULE: "/var/cache/pilotfish/libpilotfish_istio_stats_1.so",
        STATS_TABLE: "/etc/istio/proxy/istio-stats.table"})
    copying = [HEADER_MUTATION, HEADER_TO_METADATA]
    listeners = _listeners(proxy)
    internal = _http_filters(listeners["main_internal"])
    assert internal and all(names[:2] == copying for names in internal)
    inbound = _http_filters(listeners["virtualInbound"])
    assert inbound and not any(HEADER_MUTATION in names for names in inbound)
    # without the module (the gRPC path reads the filter state itself): nothing added
    assert not any(HEADER_MUTATION in names
                   for names in _http_filters(_listeners(_hboned())["main_internal"]))


def test_strict_still_admits_hbone() -> None:
    strict = CONFIG + """---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: mesh}
spec: {mtls: {mode: STRICT}}
"""
    listeners = _listeners(_hboned(), _push(strict))
    inbound = [c for c in listeners["virtualInbound"].filter_chains if c.name == "0.0.0.0_8080"]
    assert all(c.HasField("transport_socket") for c in inbound)  # 15006: mTLS only
    main = [c for c in listeners["main_internal"].filter_chains if c.name == "0.0.0.0_8080"]
    assert main and not any(c.HasField("transport_socket") for c in main)


def test_wds_marks_the_sidecar_hbone_and_the_others_as_before() -> None:
    push = _push()
    ztunnel = parse_node("ztunnel~10.0.0.2~ztunnel-1.istio-system~istio-system.svc.cluster.local")
    workloads = {}
    for address in Addresses().generate(push, ztunnel, {}):
        if address.WhichOneof("type") == "workload":
            workloads[address.workload.name] = address.workload
    assert workloads["hboned"].tunnel_protocol == workload_pb2.HBONE
    assert workloads["legacy"].tunnel_protocol == workload_pb2.LEGACY_ISTIO_MTLS
    assert workloads["server"].tunnel_protocol == workload_pb2.HBONE


def test_the_sidecar_bootstrap_has_internal_listeners(tmp_path: Path) -> None:
    out = bootstrap(ProxyOptions(name="p-1", namespace="mesh", ip="10.0.0.21",
                                 discovery_address="127.0.0.1:15010", config_dir=tmp_path,
                                 proxy_type="sidecar"), "1.0")
    assert out["bootstrap_extensions"] == [INTERNAL_LISTENER_EXTENSION]


def test_envoy_accepts_both_directions(tmp_path: Path) -> None:
    """Real Envoy (``--mode validate``, the sidecar bootstrap): the listeners and clusters of
    a sidecar that sends and takes HBONE, the ambient service's cluster with its endpoints
    inline (as EDS would give them)."""
    push, proxy = _push(), _hboned()
    clusters = SidecarClusters().generate(push, proxy, {})
    assignment = _assignments(push, proxy)[AMBIENT]
    for cluster in clusters:
        if cluster.name == AMBIENT:
            cluster.type = cluster_pb2.Cluster.STATIC
            cluster.ClearField("eds_cluster_config")
            cluster.load_assignment.CopyFrom(assignment)
    envoy_accepts(tmp_path, proxy_type="sidecar", namespace="mesh",
                  listeners=[json_format.MessageToDict(item)
                             for item in SidecarListeners().generate(push, proxy, {})],
                  clusters=[json_format.MessageToDict(item) for item in clusters])


def test_a_pod_the_node_agent_marks_redirected_changes_its_service_endpoints() -> None:
    """The annotation alone changes no Endpoint, but it changes how sidecars reach the pod:
    the incremental EDS update must still remake that service's assignments."""
    plain = CONFIG.replace("labels: {istio.io/dataplane-mode: ambient}", "labels: {}")
    before = _push(plain)
    after = _push(plain.replace(
        "metadata: {name: server, namespace: shop, labels: {app: server}, annotations: {}}",
        "metadata: {name: server, namespace: shop, labels: {app: server}, "
        "annotations: {ambient.istio.io/redirection: enabled}}"))
    assert after.endpoint_changes(before) == frozenset({"server.shop.svc.cluster.local"})
    (lb,) = Endpoints().update_endpoints(
        after, _sidecar(), {}, frozenset({"server.shop.svc.cluster.local"}))[0].endpoints[
        0].lb_endpoints
    assert lb.endpoint.address.envoy_internal_address.endpoint_id == "10.0.0.11:8080"


ROUTER = parse_node("router~10.0.0.5~gw.istio-system~istio-system.svc.cluster.local")


def test_gateways_send_hbone_to_ambient_pods_too(tmp_path: Path) -> None:
    """As istiod: an ingress gateway reaches an ambient pod over HBONE, the same way; real
    Envoy takes the gateway's config."""
    push = _push()
    (lb,) = _assignments(push, ROUTER)[AMBIENT].endpoints[0].lb_endpoints
    assert lb.endpoint.address.envoy_internal_address.endpoint_id == "10.0.0.11:8080"
    clusters = RouterClusters().generate(push, ROUTER, {})
    by_name = {c.name: c for c in clusters}
    assert by_name[AMBIENT].transport_socket_matches[0].name == "hbone"
    assert "connect_originate" in by_name
    listeners = RouterListeners().generate(push, ROUTER, {})
    assert [item.name for item in listeners] == ["connect_originate"]  # no Gateway here
    envoy_accepts(tmp_path, proxy_type="router", namespace="istio-system",
                  listeners=[json_format.MessageToDict(item) for item in listeners],
                  clusters=[json_format.MessageToDict(item) for item in clusters])
