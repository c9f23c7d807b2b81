"""PeerAuthentication → virtualInbound chains: STRICT, PERMISSIVE, DISABLE, per port."""

from __future__ import annotations

from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import parse_node
from pilotfish.core.security_policies import MtlsMode
from pilotfish.core.xds import types
from pilotfish.core.yamlload import load_text
from pilotfish.testing.generators import generate
from pilotfish.translators.listener_filters import ALL, Detection
from pilotfish.translators.peer_authn import PortKind, chain_options

SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: tcp-db, port: 5432}
  - {name: stats, port: 7000}
"""
NODE = "sidecar~10.0.0.5~web-1.shop~shop.svc.cluster.local"
MESH_ALPN = ("istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2")
HTTP_MESH_ALPN = ("istio-http/1.0", "istio-http/1.1", "istio-h2")
PLAIN_HTTP = ("http/1.1", "h2c")
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
HTTP_INSPECTOR = "envoy.filters.listener.http_inspector"

# (port (0: any), transport, ALPN, terminal filter, terminates mTLS)
Row = tuple[int, str, tuple[str, ...], str, bool]


def policy(mode: str, namespace: str = "shop", ports: str = "") -> str:
    selector = "  selector: {matchLabels: {app: web}}\n" if ports else ""
    level = f"  portLevelMtls: {{{ports}}}\n" if ports else ""
    return (f"---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
            f"metadata: {{name: p-{mode.lower()}, namespace: {namespace}}}\n"
            f"spec:\n{selector}  mtls: {{mode: {mode}}}\n{level}")


def inbound(config: str, detection: Detection = ALL,
            mesh: MeshSettings | None = None) -> listener_pb2.Listener:
    objects, errors = load_text(SERVICES + config, "test.yaml")
    assert not errors, errors
    push = push_context.build(objects, mesh or MeshSettings(), "v1")
    proxy = parse_node(NODE, {"LABELS": {"app": "web"}})
    (found,) = [item for item in generate(types.LISTENER, push, proxy, detection=detection)
                if item.name == "virtualInbound"]
    return found


def rows(listener: listener_pb2.Listener, port: int | None = None) -> list[Row]:
    out = []
    for chain in listener.filter_chains[1:]:  # after the loop guard
        match = chain.filter_chain_match
        row = (match.destination_port.value, match.transport_protocol,
               tuple(match.application_protocols), chain.filters[-1].name.rsplit(".", 1)[-1],
               chain.HasField("transport_socket"))
        if port is None or row[0] == port:
            out.append(row)
    return out


def server_tls(chain: lc_pb2.FilterChain) -> tls_pb2.DownstreamTlsContext:
    context = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.typed_config.Unpack(context)
    return context


def inspector_off(listener: listener_pb2.Listener, name: str) -> set[int]:
    (inspector,) = [f for f in listener.listener_filters if f.name == name]
    rules = inspector.filter_disabled.or_match.rules
    return {p for r in rules for p in range(r.destination_port_range.start,
                                            r.destination_port_range.end)}


def test_permissive_is_the_default_and_separates_mesh_tls_app_tls_and_plaintext() -> None:
    out = inbound("")
    assert rows(out, 8080) == [
        (8080, "tls", MESH_ALPN, "http_connection_manager", True),
        (8080, "raw_buffer", (), "http_connection_manager", False),
    ]
    assert rows(out, 5432) == [
        (5432, "tls", MESH_ALPN, "tcp_proxy", True),
        (5432, "tls", (), "tcp_proxy", False),  # the app's own TLS, passed through
        (5432, "raw_buffer", (), "tcp_proxy", False),
    ]
    assert rows(out, 7000) == [
        (7000, "tls", HTTP_MESH_ALPN, "http_connection_manager", True),
        (7000, "tls", ("istio", "istio-peer-exchange"), "tcp_proxy", True),
        (7000, "raw_buffer", PLAIN_HTTP, "http_connection_manager", False),
        (7000, "raw_buffer", (), "tcp_proxy", False),
        (7000, "tls", (), "tcp_proxy", False),
    ]
    assert rows(out, 0) == [  # the passthrough chains follow the workload's mode
        (0, "tls", HTTP_MESH_ALPN, "http_connection_manager", True),
        (0, "tls", ("istio", "istio-peer-exchange"), "tcp_proxy", True),
        (0, "raw_buffer", PLAIN_HTTP, "http_connection_manager", False),
        (0, "raw_buffer", (), "tcp_proxy", False),
        (0, "tls", (), "tcp_proxy", False),
    ]


def test_strict_has_no_plaintext_chain_and_needs_no_inspection_on_declared_ports() -> None:
    out = inbound(policy("STRICT"))
    assert rows(out, 8080) == [(8080, "", (), "http_connection_manager", True)]
    assert rows(out, 5432) == [(5432, "", (), "tcp_proxy", True)]
    assert rows(out, 7000) == [
        (7000, "tls", HTTP_MESH_ALPN, "http_connection_manager", True),
        (7000, "tls", (), "tcp_proxy", True),
    ]
    assert rows(out, 0) == [
        (0, "tls", HTTP_MESH_ALPN, "http_connection_manager", True),
        (0, "tls", (), "tcp_proxy", True),
    ]
    assert {8080, 5432} <= inspector_off(out, TLS_INSPECTOR)
    assert HTTP_INSPECTOR not in [f.name for f in out.listener_filters]


def test_disable_is_plaintext_only() -> None:
    out = inbound(policy("DISABLE", namespace="istio-system"))
    assert not any(row[4] or (row[1] == "tls" and row[2]) for row in rows(out))
    assert rows(out, 8080) == [(8080, "", (), "http_connection_manager", False)]
    assert rows(out, 5432) == [(5432, "", (), "tcp_proxy", False)]


def test_port_level_modes_apply_to_declared_and_undeclared_ports() -> None:
    out = inbound(policy("STRICT", ports='"5432": {mode: DISABLE}, "9999": {mode: PERMISSIVE}, '
                                         '"8443": {mode: STRICT}'))
    assert rows(out, 8080) == [(8080, "", (), "http_connection_manager", True)]
    assert rows(out, 5432) == [(5432, "", (), "tcp_proxy", False)]
    # An undeclared port in another mode than the workload gets passthrough chains of its
    # own; one in the workload's mode is left to the catch-all.
    assert [row[:3] for row in rows(out, 9999)] == [
        (9999, "tls", HTTP_MESH_ALPN), (9999, "tls", ("istio", "istio-peer-exchange")),
        (9999, "raw_buffer", PLAIN_HTTP), (9999, "raw_buffer", ()), (9999, "tls", ())]
    assert rows(out, 8443) == []
    names = {c.name for c in out.filter_chains
             if c.filter_chain_match.destination_port.value == 9999}
    assert names == {"virtualInbound", "virtualInbound-catchall-http"}
    assert 9999 not in inspector_off(out, HTTP_INSPECTOR)


def test_server_tls_context_asks_for_a_mesh_certificate() -> None:
    out = inbound(policy("STRICT"), mesh=MeshSettings(trust_domain="example.org"))
    (http,) = [c for c in out.filter_chains if c.filter_chain_match.destination_port.value
               == 8080]
    (tcp,) = [c for c in out.filter_chains if c.filter_chain_match.destination_port.value
              == 5432]
    context = server_tls(http)
    assert context.require_client_certificate.value is True
    common = context.common_tls_context
    assert list(common.alpn_protocols) == ["h2", "http/1.1"]
    assert list(server_tls(tcp).common_tls_context.alpn_protocols) == []
    assert common.tls_params.tls_minimum_protocol_version == common_pb2.TlsParameters.TLSv1_2
    assert common.tls_params.tls_maximum_protocol_version == common_pb2.TlsParameters.TLSv1_3
    assert common.tls_params.cipher_suites[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"
    assert [s.name for s in common.tls_certificate_sds_secret_configs] == ["default"]
    validation = common.combined_validation_context
    assert validation.validation_context_sds_secret_config.name == "ROOTCA"
    (san,) = validation.default_validation_context.match_typed_subject_alt_names
    assert (san.san_type, san.matcher.prefix) == (
        common_pb2.SubjectAltNameMatcher.URI, "spiffe://example.org/")


def test_permissive_turns_on_tls_inspection_even_for_server_first_ports() -> None:
    mysql = """---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {selector: {app: web}, ports: [{name: mysql, port: 3306}]}
"""
    # Mesh clients start mTLS with a ClientHello, so inspecting costs them nothing; a
    # plaintext client of a server-first protocol waits, as with Istio (use STRICT).
    assert 3306 not in inspector_off(inbound(mysql), TLS_INSPECTOR)
    assert 3306 in inspector_off(inbound(mysql + policy("STRICT")), TLS_INSPECTOR)


def test_without_the_tls_sniffer_permissive_is_served_as_strict() -> None:
    out = inbound("", Detection(tls=False))
    assert rows(out, 8080) == [(8080, "", (), "http_connection_manager", True)]
    assert rows(out, 7000) == [(7000, "", (), "tcp_proxy", True)]
    assert TLS_INSPECTOR not in [f.name for f in out.listener_filters]


def test_chain_options_table_covers_every_kind_and_mode() -> None:
    for kind in PortKind:
        for mode in (MtlsMode.DISABLE, MtlsMode.PERMISSIVE, MtlsMode.STRICT):
            options = chain_options(kind, mode)
            assert options
            assert all(o.mtls for o in options) == (mode is MtlsMode.STRICT)
            assert any(o.mtls for o in options) == (mode is not MtlsMode.DISABLE)


def test_mesh_wide_disable_leaves_no_secret_reference_in_a_sidecar() -> None:
    # Proxies whose agent serves no certificates can run a mesh in DISABLE: nothing in
    # their listeners or clusters then waits for SDS.
    workload = """---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web, security.istio.io/tlsMode: istio}}
status: {podIP: 10.0.0.5}
"""
    objects, errors = load_text(SERVICES + workload + policy("DISABLE", "istio-system"), "t")
    assert not errors, errors
    push = push_context.build(objects, MeshSettings(), "v1")
    proxy = parse_node(NODE, {"LABELS": {"app": "web"}})
    generated = [*generate(types.LISTENER, push, proxy, {}),
                 *generate(types.CLUSTER, push, proxy, {})]
    assert not any(b"sds-grpc" in m.SerializeToString() for m in generated)
