"""Listeners follow the active sniffers, and opaque TCP never waits on an inspector."""

from __future__ import annotations

from typing import Any

from envoy.config.listener.v3 import listener_pb2

from pilotfish.core import meshconfig, plugins, push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import Proxy, parse_node
from pilotfish.core.xds import types
from pilotfish.core.yamlload import load_text
from pilotfish.plugins.sniffers import http1, http2, tls
from pilotfish.testing.generators import generate
from pilotfish.translators.listener_filters import ALL, NONE, Detection

SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc, port: 9090}
  - {name: stats, port: 7000}
  - {name: tcp-admin, port: 9999}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext-tls, namespace: default}
spec:
  hosts: [api.example.com, pay.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
"""

# Inbound sniffing is about plaintext: the mesh-wide DISABLE keeps mTLS chains out
# (tests/unit/translators/test_peer_authn.py covers the mTLS modes).
PLAINTEXT = """---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: DISABLE}}
"""
NODE = "sidecar~10.0.0.5~web-1.default~default.svc.cluster.local"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
HTTP_INSPECTOR = "envoy.filters.listener.http_inspector"
ORIGINAL_DST = "envoy.filters.listener.original_dst"
NO_HTTP = Detection(tls=True, http_alpn=())
NO_TLS = Detection(tls=False)


def listeners(
    detection: Detection, config: str = SERVICES, proxy: Proxy | None = None,
    mesh: MeshSettings | None = None,
) -> dict[str, listener_pb2.Listener]:
    objects, errors = load_text(config, "test.yaml")
    assert not errors
    push = push_context.build(objects, mesh or MeshSettings(), "v1")
    proxy = proxy or parse_node(NODE, {"LABELS": {"app": "web"}})
    return {item.name: item for item in generate(types.LISTENER, push, proxy, detection=detection)}


def inspectors(listener: listener_pb2.Listener) -> list[str]:
    return [f.name for f in listener.listener_filters if f.name != ORIGINAL_DST]


def matches(listener: listener_pb2.Listener) -> list[tuple[Any, ...]]:
    """(port, prefix, server names, transport, ALPN) per chain."""
    out = []
    for chain in listener.filter_chains:
        match = chain.filter_chain_match
        prefix = ",".join(p.address_prefix for p in match.prefix_ranges)
        out.append((match.destination_port.value, prefix, tuple(match.server_names),
                    match.transport_protocol, tuple(match.application_protocols)))
    return out


# -- the sniffers decide what LDS may use ------------------------------------------------


def test_detection_of_the_builtin_sniffers() -> None:
    t, h1, h2 = tls.TlsSniffer(), http1.Http1Sniffer(), http2.Http2Sniffer()
    assert Detection.of([t, h1, h2]) == ALL
    assert Detection.of([t]) == NO_HTTP
    assert Detection.of([h1, h2]) == NO_TLS
    assert Detection.of([h1]) == Detection(tls=False, http_alpn=("http/1.1",))
    assert Detection.of([]) == NONE


def test_lds_generator_gets_the_active_sniffers_from_the_plugin_manager() -> None:
    def generator(choice: dict[str, Any]) -> Any:
        config = meshconfig.from_dict({"plugins": {"sniffers": choice}})
        return plugins.Plugins.from_config(config).xds_generators().get("sidecar",
                                                                         types.LISTENER)

    assert generator({}).detection == ALL
    assert generator({"remove": ["http1", "http2"]}).detection == NO_HTTP
    assert generator({"use": []}).detection == NONE


# -- without HTTP sniffers ---------------------------------------------------------------


def test_without_http_sniffers_undeclared_ports_are_tcp() -> None:
    found = listeners(NO_HTTP, SERVICES + PLAINTEXT)
    assert "0.0.0.0_7000" not in found  # no sniffing, so no shared HTTP listener
    assert matches(found["10.96.0.10_7000"]) == [(0, "", (), "", ())]
    assert inspectors(found["10.96.0.10_7000"]) == []
    inbound = found["virtualInbound"]
    assert HTTP_INSPECTOR not in inspectors(inbound)
    assert [m for m in matches(inbound) if m[0] == 7000] == [(7000, "", (), "", ())]
    assert [m for m in matches(inbound) if m[0] == 0] == [(0, "", (), "", ())]


def test_without_http_sniffers_declared_http_still_gets_its_hcm() -> None:
    out = listeners(NO_HTTP)["0.0.0.0_80"]
    # raw_buffer keeps TLS to other hosts on port 80 out of the HCM, hence the TLS inspector.
    assert matches(out) == [(0, "", (), "raw_buffer", ())]
    assert inspectors(out) == [TLS_INSPECTOR]
    assert inspectors(listeners(NONE)["0.0.0.0_80"]) == []


def test_http1_alone_matches_only_http1_on_undeclared_ports() -> None:
    found = listeners(Detection(tls=True, http_alpn=("http/1.1",)))
    sniffed = [m for m in matches(found["0.0.0.0_7000"]) if m[4]]
    assert sniffed == [(0, "10.96.0.10", (), "raw_buffer", ("http/1.1",)),
                       (0, "", (), "raw_buffer", ("http/1.1",))]
    # A declared gRPC port is HTTP whatever the version: the inspector reports h2c anyway.
    assert matches(found["0.0.0.0_9090"]) == [(0, "", (), "raw_buffer", ("http/1.1", "h2c"))]


# -- without the TLS sniffer -------------------------------------------------------------


def test_without_tls_sniffer_no_listener_waits_for_a_client_hello() -> None:
    found = listeners(NO_TLS)
    assert all(TLS_INSPECTOR not in inspectors(item) for item in found.values())
    assert not any(m[2] or m[3] for item in found.values() for m in matches(item))


def test_without_tls_sniffer_sni_routing_becomes_first_service_wins() -> None:
    out = listeners(NO_TLS)["0.0.0.0_443"]
    assert matches(out) == [(0, "", (), "", ())]
    assert out.filter_chains[0].name == "0.0.0.0_443"


def test_without_tls_sniffer_inbound_auto_ports_sniff_http_only() -> None:
    inbound = listeners(NO_TLS, SERVICES + PLAINTEXT)["virtualInbound"]
    assert [m for m in matches(inbound) if m[0] == 7000] == [
        (7000, "", (), "", ("http/1.1", "h2c")), (7000, "", (), "", ())]
    assert inspectors(inbound) == [HTTP_INSPECTOR]


def test_without_any_sniffer_nothing_is_inspected() -> None:
    found = listeners(NONE)
    assert all(inspectors(item) == [] for item in found.values())
    assert not any(item.HasField("listener_filters_timeout") for name, item in found.items()
                   if name != "virtualInbound")


# -- server-first and declared TCP -------------------------------------------------------


def test_undeclared_service_entry_port_3306_is_tcp_not_sniffed() -> None:
    config = SERVICES + """\
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.internal]
  addresses: [10.200.0.7]
  resolution: STATIC
  endpoints: [{address: 10.1.0.7}]
  ports: [{number: 3306, name: db}]
"""
    found = listeners(ALL, config)
    assert "0.0.0.0_3306" not in found
    assert inspectors(found["10.200.0.7_3306"]) == []


def test_opaque_tcp_on_a_wildcard_port_turns_its_inspectors_off() -> None:
    """Declared TCP without an address shares 0.0.0.0_80 with HTTP: no one waits."""
    config = SERVICES + """\
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: default}
spec:
  hosts: [legacy.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 80, name: tcp, protocol: TCP}]
"""
    out = listeners(ALL, config)["0.0.0.0_80"]
    assert inspectors(out) == []
    assert not out.HasField("listener_filters_timeout")
    # The HTTP service keeps its HCM through its VIP; everything else is the TCP service.
    assert matches(out) == [(0, "10.96.0.10", (), "", ()), (0, "", (), "", ())]
    assert out.filter_chains[0].filters[0].name.endswith("http_connection_manager")
    assert out.filter_chains[1].filters[0].name.endswith("tcp_proxy")


def test_declared_tcp_with_vip_has_no_inspectors() -> None:
    assert inspectors(listeners(ALL)["10.96.0.10_9999"]) == []


def test_protocol_detection_timeout_applies_to_sniffing_listeners() -> None:
    found = listeners(ALL, mesh=MeshSettings(protocol_detection_timeout=0.5))
    for name in ("0.0.0.0_80", "0.0.0.0_7000", "virtualInbound"):
        assert found[name].listener_filters_timeout.ToMilliseconds() == 500, name
        assert found[name].continue_on_listener_filters_timeout is True


# -- gateways ----------------------------------------------------------------------------


def test_gateway_without_tls_sniffer_keeps_one_tls_server_per_port() -> None:
    config = SERVICES + """\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: tls-a, protocol: TLS}
    hosts: ["a.example.com"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 8443, name: tls-b, protocol: TLS}
    hosts: ["b.example.com"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pass, namespace: istio-system}
spec:
  hosts: ["a.example.com", "b.example.com"]
  gateways: [gw]
  tls:
  - match: [{sniHosts: [a.example.com]}]
    route: [{destination: {host: web.default.svc.cluster.local, port: {number: 9999}}}]
  - match: [{sniHosts: [b.example.com]}]
    route: [{destination: {host: web.default.svc.cluster.local, port: {number: 9999}}}]
"""
    router = parse_node("router~10.0.0.9~gw-1.istio-system~istio-system.svc.cluster.local",
                        {"LABELS": {"istio": "ingressgateway"}})
    with_sni = listeners(ALL, config, router)["0.0.0.0_8443"]
    assert [m[2] for m in matches(with_sni)] == [("a.example.com",), ("b.example.com",)]
    assert inspectors(with_sni) == [TLS_INSPECTOR]
    without = listeners(NO_TLS, config, router)["0.0.0.0_8443"]
    assert matches(without) == [(0, "", (), "", ())]
    assert inspectors(without) == []
