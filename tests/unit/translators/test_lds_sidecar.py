"""Sidecar listeners: virtualOutbound, per-port outbound listeners, virtualInbound."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import attrs
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.listener.original_src.v3 import original_src_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.protocol import SERVER_FIRST_PORTS
from pilotfish.core.proxy import Proxy, parse_node
from pilotfish.core.xds import types
from pilotfish.core.yamlload import load_text
from pilotfish.testing.generators import generate
from pilotfish.translators import sidecar_inbound

MESH = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http-web}
  - {name: grpc-api, port: 9090}
  - {name: tcp-admin, port: 9999, targetPort: 9000}
  - {name: stats, port: 7000}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: 10.96.0.20
  selector: {app: db}
  ports: [{name: tcp-db, port: 5432}, {name: mysql, port: 3306}]
---
apiVersion: v1
kind: Service
metadata: {name: cache, namespace: other}
spec:
  clusterIP: 10.96.0.30
  selector: {app: cache}
  ports: [{name: data, port: 7000}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext-tls, namespace: default}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext-tcp, namespace: default}
spec:
  hosts: [mq.example.com, mq2.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 5672, name: tcp-amqp, protocol: TCP}]
"""

# The inbound tests here are about ports and protocols in plaintext; the mTLS modes are
# covered by tests/unit/translators/test_peer_authn.py.
PLAINTEXT = """---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: DISABLE}}
"""
WEB_NODE = "sidecar~10.0.0.5~web-1.default~default.svc.cluster.local"
POD_PORTS = '[{"name": "http-web", "containerPort": 8080}]'


def build(config: str = MESH, mesh: MeshSettings | None = None) -> push_context.PushContext:
    objects, errors = load_text(config, "test.yaml")
    assert not errors
    return push_context.build(objects, mesh or MeshSettings(), "v1")


def sidecar(node: str = WEB_NODE, **labels: str) -> Proxy:
    return parse_node(node, {"LABELS": labels or {"app": "web"}, "POD_PORTS": POD_PORTS})


def listeners(push: push_context.PushContext, proxy: Proxy) -> dict[str, listener_pb2.Listener]:
    out = generate(types.LISTENER, push, proxy, {})
    assert len({item.name for item in out}) == len(out), "listener names must be unique"
    return {item.name: item for item in out}


def unpack(chain: listener_components_pb2.FilterChain, message: Any) -> Any:
    (only,) = chain.filters
    assert only.typed_config.Unpack(message), only.typed_config.type_url
    return message


def hcm(chain: listener_components_pb2.FilterChain) -> hcm_pb2.HttpConnectionManager:
    return unpack(chain, hcm_pb2.HttpConnectionManager())


def tcp(chain: listener_components_pb2.FilterChain) -> tcp_proxy_pb2.TcpProxy:
    return unpack(chain, tcp_proxy_pb2.TcpProxy())


def target(chain: listener_components_pb2.FilterChain) -> str:
    """Where a chain sends traffic: ``rds:NAME``, ``inline:CLUSTER`` or a tcp cluster."""
    if chain.filters[0].name.endswith("http_connection_manager"):
        manager = hcm(chain)
        if manager.HasField("rds"):
            return f"rds:{manager.rds.route_config_name}"
        return f"inline:{manager.route_config.virtual_hosts[0].routes[0].route.cluster}"
    proxy = tcp(chain)
    weighted = proxy.weighted_clusters.clusters
    return proxy.cluster or ",".join(f"{c.name}={c.weight}" for c in weighted)


Summary = tuple[str, tuple[str, ...], str, tuple[str, ...], str]


def summary(listener: listener_pb2.Listener) -> list[Summary]:
    """(prefixes, server names, transport, ALPN, target) per chain: the matching contract."""
    out = []
    for chain in listener.filter_chains:
        match = chain.filter_chain_match
        prefixes = ",".join(f"{p.address_prefix}/{p.prefix_len.value}" for p in match.prefix_ranges)
        out.append((prefixes, tuple(match.server_names), match.transport_protocol,
                    tuple(match.application_protocols), target(chain)))
    return out


# -- plugin ------------------------------------------------------------------------------


def test_generator_is_registered_under_the_lds_entry_point() -> None:
    (entry,) = [e for e in metadata.entry_points(group="pilotfish.xds") if e.name == "lds"]
    module = entry.load()
    sidecar, router = module.pilotfish_xds_generator(sniffers=())
    assert (sidecar.proxy_kinds, router.proxy_kinds) == ({"sidecar"}, {"router"})
    for generator in (sidecar, router):
        assert generator.type_url == types.LISTENER
        assert {"Gateway", "Service", "ServiceEntry", "Sidecar", "VirtualService"} <= (
            generator.depends_on
        )
        assert "Endpoints" not in generator.depends_on  # endpoint churn must not rebuild LDS


def test_output_depends_only_on_the_proxy_scope() -> None:
    push = build()
    one = generate(types.LISTENER, push, sidecar(), {})
    other = generate(types.LISTENER,
        push, sidecar("sidecar~10.0.0.99~web-2.default~default.svc.cluster.local"), {}
    )
    assert [m.SerializeToString(deterministic=True) for m in one] == [
        m.SerializeToString(deterministic=True) for m in other
    ]


def test_waypoints_and_ztunnels_get_no_listeners_yet() -> None:
    proxy = parse_node("waypoint~10.0.0.7~wp-1.default~default.svc.cluster.local")
    assert generate(types.LISTENER, build(), proxy, {}) == []


# -- virtualOutbound ---------------------------------------------------------------------


def test_virtual_outbound_captures_on_15001_and_hands_off_by_original_destination() -> None:
    out = listeners(build(), sidecar())["virtualOutbound"]
    assert (out.address.socket_address.address, out.address.socket_address.port_value) == (
        "0.0.0.0", 15001)
    assert out.use_original_dst.value is True
    assert out.traffic_direction == base_pb2.OUTBOUND
    assert [c.name for c in out.filter_chains] == [
        "virtualOutbound-blackhole", "virtualOutbound-catchall-tcp"]
    blackhole, catchall = out.filter_chains
    assert blackhole.filter_chain_match.destination_port.value == 15001
    assert target(blackhole) == "BlackHoleCluster"
    assert not catchall.HasField("filter_chain_match")
    assert target(catchall) == "PassthroughCluster"


def test_registry_only_sends_unknown_destinations_to_the_blackhole() -> None:
    config = MESH + """\
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"""
    found = listeners(build(config), sidecar())
    assert target(found["virtualOutbound"].filter_chains[1]) == "BlackHoleCluster"
    assert target(found["0.0.0.0_80"].default_filter_chain) == "BlackHoleCluster"


# -- outbound per-port listeners ---------------------------------------------------------


def test_rds_names_cover_exactly_the_http_and_auto_detect_ports() -> None:
    """The contract with RDS: route config "P" for every P with an HTTP or sniffed port."""
    push, proxy = build(), sidecar()
    referenced = {
        target(chain)[4:]
        for listener in listeners(push, proxy).values()
        for chain in listener.filter_chains
        if target(chain).startswith("rds:")
    }
    expected = {
        str(port.port)
        for service in push.visible_services(proxy)
        for port in service.ports
        if port.protocol.is_http or port.protocol.is_unsupported
    }
    assert referenced == expected == {"80", "9090", "7000"}


def test_http_port_is_an_unbound_wildcard_listener_routing_by_rds() -> None:
    out = listeners(build(), sidecar())["0.0.0.0_80"]
    assert out.address.socket_address.address == "0.0.0.0"
    assert out.bind_to_port.value is False
    assert out.traffic_direction == base_pb2.OUTBOUND
    assert summary(out) == [("", (), "raw_buffer", ("http/1.1", "h2c"), "rds:80")]
    assert [f.name for f in out.listener_filters] == [
        "envoy.filters.listener.tls_inspector", "envoy.filters.listener.http_inspector"]
    assert out.continue_on_listener_filters_timeout is True
    assert out.default_filter_chain.name == "PassthroughFilterChain"
    assert target(out.default_filter_chain) == "PassthroughCluster"


def test_outbound_http_connection_manager_settings() -> None:
    manager = hcm(listeners(build(mesh=MeshSettings(access_log_file="/dev/stdout")),
                            sidecar())["0.0.0.0_80"].filter_chains[0])
    assert manager.stat_prefix == "outbound_0.0.0.0_80"
    assert manager.codec_type == hcm_pb2.HttpConnectionManager.AUTO
    assert manager.rds.config_source.HasField("ads")
    assert manager.rds.config_source.initial_fetch_timeout.ToSeconds() == 0
    assert [f.name for f in manager.http_filters] == [
        "envoy.filters.http.fault", "envoy.filters.http.cors", "envoy.filters.http.router"]
    assert manager.use_remote_address.value is False
    assert [u.upgrade_type for u in manager.upgrade_configs] == ["websocket"]
    assert manager.normalize_path.value is True
    assert manager.HasField("stream_idle_timeout")
    assert manager.stream_idle_timeout.ToSeconds() == 0
    assert manager.request_id_extension.typed_config.type_url.endswith("UuidRequestIdConfig")
    log, metrics = manager.access_log
    assert log.name == "envoy.access_loggers.stdout"
    config = stream_pb2.StdoutAccessLog()
    assert log.typed_config.Unpack(config)
    assert "%RESPONSE_CODE%" in config.log_format.text_format_source.inline_string
    assert metrics.name == "envoy.access_loggers.http_grpc"
    grpc_config = als_pb2.HttpGrpcAccessLogConfig()
    assert metrics.typed_config.Unpack(grpc_config)
    assert grpc_config.common_config.grpc_service.envoy_grpc.cluster_name == "als-grpc"


def stdout_format(mesh: MeshSettings) -> Any:
    manager = hcm(listeners(build(mesh=mesh), sidecar())["0.0.0.0_80"].filter_chains[0])
    config = stream_pb2.StdoutAccessLog()
    assert manager.access_log[0].typed_config.Unpack(config)
    return config.log_format


def test_access_log_encoding_and_format_shape_the_stdout_line() -> None:
    on = MeshSettings(access_log_file="/dev/stdout", access_log_encoding="JSON")
    istio = stdout_format(on).json_format
    assert istio["response_code"] == "%RESPONSE_CODE%" and "upstream_cluster" in istio
    own = stdout_format(attrs.evolve(on, access_log_format='{"c": "%RESPONSE_CODE%"}'))
    assert dict(own.json_format) == {"c": "%RESPONSE_CODE%"}
    text = stdout_format(attrs.evolve(on, access_log_encoding="TEXT",
                                      access_log_format="%RESPONSE_CODE%"))
    assert text.text_format_source.inline_string == "%RESPONSE_CODE%\n"


def test_auto_detect_port_sniffs_http_and_sends_raw_bytes_to_the_vip_owner() -> None:
    mesh = MeshSettings(protocol_detection_timeout=0.25)
    out = listeners(build(mesh=mesh), sidecar())["0.0.0.0_7000"]
    cache = "outbound|7000||cache.other.svc.cluster.local"
    web = "outbound|7000||web.default.svc.cluster.local"
    http = ("http/1.1", "h2c")
    assert summary(out) == [
        ("10.96.0.30/32", (), "raw_buffer", http, "rds:7000"),
        ("10.96.0.30/32", (), "raw_buffer", (), cache),
        ("10.96.0.30/32", (), "tls", (), cache),
        ("10.96.0.10/32", (), "raw_buffer", http, "rds:7000"),
        ("10.96.0.10/32", (), "raw_buffer", (), web),
        ("10.96.0.10/32", (), "tls", (), web),
        ("", (), "raw_buffer", http, "rds:7000"),
    ]
    assert target(out.default_filter_chain) == "PassthroughCluster"
    assert out.listener_filters_timeout.ToMilliseconds() == 250


def test_tcp_port_with_a_vip_gets_its_own_listener() -> None:
    found = listeners(build(), sidecar())
    out = found["10.96.0.20_5432"]
    assert (out.address.socket_address.address, out.address.socket_address.port_value) == (
        "10.96.0.20", 5432)
    assert out.bind_to_port.value is False
    assert summary(out) == [("", (), "", (), "outbound|5432||db.default.svc.cluster.local")]
    assert not out.listener_filters  # nothing to sniff: server-first protocols work
    assert target(found["10.96.0.20_3306"].filter_chains[0]).startswith("outbound|3306||db.")
    assert "0.0.0.0_5432" not in found


def test_tls_service_without_vip_is_matched_by_sni() -> None:
    out = listeners(build(), sidecar())["0.0.0.0_443"]
    assert summary(out) == [("", ("api.example.com",), "", (), "outbound|443||api.example.com")]
    assert [f.name for f in out.listener_filters] == ["envoy.filters.listener.tls_inspector"]


def test_tcp_services_without_vip_share_a_port_first_one_wins(
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = listeners(build(), sidecar())["0.0.0.0_5672"]
    assert summary(out) == [("", (), "", (), "outbound|5672||mq.example.com")]
    assert "mq2.example.com conflicts with mq.example.com" in caplog.text


def test_udp_ports_are_not_proxied() -> None:
    assert not any(name.endswith("_53") for name in listeners(build(), sidecar()))


def test_sidecar_egress_hides_services_and_their_listeners() -> None:
    config = MESH + """\
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress: [{hosts: ["./*"]}]
"""
    found = listeners(build(config), sidecar())
    cache_chains = [c for c in found["0.0.0.0_7000"].filter_chains if "10.96.0.30" in c.name]
    assert not cache_chains
    assert "10.96.0.20_5432" in found


def test_virtual_service_tcp_route_splits_by_weight_for_matching_clients() -> None:
    config = MESH + """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: [db]
  tcp:
  - match: [{sourceLabels: {app: batch}}]
    route: [{destination: {host: db, subset: replica}}]
  - match: [{port: 5432}]
    route:
    - {destination: {host: db, subset: v1}, weight: 90}
    - {destination: {host: db, subset: v2}, weight: 10}
    - {destination: {host: db, subset: v3}, weight: 0}
"""
    push = build(config)
    web = listeners(push, sidecar())
    assert target(web["10.96.0.20_5432"].filter_chains[0]) == (
        "outbound|5432|v1|db.default.svc.cluster.local=90,"
        "outbound|5432|v2|db.default.svc.cluster.local=10"
    )
    # The port-scoped rule does not apply to 3306; the service's own cluster does.
    assert target(web["10.96.0.20_3306"].filter_chains[0]) == (
        "outbound|3306||db.default.svc.cluster.local")
    batch = listeners(push, sidecar(app="batch"))
    assert target(batch["10.96.0.20_5432"].filter_chains[0]) == (
        "outbound|5432|replica|db.default.svc.cluster.local")


def test_tls_service_with_vip_routes_sni_from_virtual_service_tls_routes() -> None:
    config = MESH + """\
---
apiVersion: v1
kind: Service
metadata: {name: secure, namespace: default}
spec:
  clusterIP: 10.96.0.40
  ports: [{name: https, port: 443}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure, namespace: default}
spec:
  hosts: [secure]
  tls:
  - match: [{sniHosts: [v2.secure.example.com], port: 443}]
    route: [{destination: {host: secure, subset: v2}}]
"""
    out = listeners(build(config), sidecar())["10.96.0.40_443"]
    host = "secure.default.svc.cluster.local"
    assert summary(out) == [
        ("", ("v2.secure.example.com",), "", (), f"outbound|443|v2|{host}"),
        ("", (host,), "", (), f"outbound|443||{host}"),
        ("", (), "", (), f"outbound|443||{host}"),
    ]


def test_ports_of_the_proxy_itself_get_no_wildcard_listener(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = MESH + """\
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: odd, namespace: default}
spec:
  hosts: [odd.example.com]
  ports: [{number: 15001, name: http, protocol: HTTP}]
"""
    assert "0.0.0.0_15001" not in listeners(build(config), sidecar())
    assert "belongs to the proxy" in caplog.text


# -- virtualInbound ----------------------------------------------------------------------


def test_virtual_inbound_listener_shape() -> None:
    out = listeners(build(MESH + PLAINTEXT, MeshSettings(protocol_detection_timeout=1.0)),
                    sidecar())["virtualInbound"]
    assert out.address.socket_address.port_value == 15006
    assert out.traffic_direction == base_pb2.INBOUND
    assert [f.name for f in out.listener_filters] == [
        "envoy.filters.listener.original_dst",
        "envoy.filters.listener.tls_inspector",
        "envoy.filters.listener.http_inspector",
    ]
    assert out.listener_filters_timeout.ToSeconds() == 1
    assert out.continue_on_listener_filters_timeout is True
    assert [c.name for c in out.filter_chains] == [
        "virtualInbound-blackhole",
        "0.0.0.0_8080",  # http → named target port via POD_PORTS
        "0.0.0.0_9090",
        "0.0.0.0_9000",
        "0.0.0.0_7000", "0.0.0.0_7000", "0.0.0.0_7000",
        "virtualInbound-catchall-http", "virtualInbound", "virtualInbound",
    ]
    blackhole = out.filter_chains[0]
    assert blackhole.filter_chain_match.destination_port.value == 15006
    assert target(blackhole) == "BlackHoleCluster"


def test_tproxy_proxy_gets_transparent_capture_listeners_and_original_src() -> None:
    push = build(MESH + PLAINTEXT)
    tproxy = parse_node(WEB_NODE, {"LABELS": {"app": "web"}, "POD_PORTS": POD_PORTS,
                                   "INTERCEPTION_MODE": "TPROXY"})
    assert tproxy.scope != sidecar().scope  # generated apart from REDIRECT proxies
    got = listeners(push, tproxy)
    assert got["virtualOutbound"].transparent.value is True
    inbound = got["virtualInbound"]
    assert inbound.transparent.value is True
    assert [f.name for f in inbound.listener_filters][:2] == [
        "envoy.filters.listener.original_dst", "envoy.filters.listener.original_src"]
    config = original_src_pb2.OriginalSrc()
    assert inbound.listener_filters[1].typed_config.Unpack(config)
    assert config.mark == 1337 and not config.bind_port
    # REDIRECT (the default, and whatever else the metadata says, as Istio reads it)
    for mode in (None, "REDIRECT", "tproxy"):
        meta = {"LABELS": {"app": "web"}, "POD_PORTS": POD_PORTS}
        if mode:
            meta["INTERCEPTION_MODE"] = mode
        plain = listeners(push, parse_node(WEB_NODE, meta))
        assert not plain["virtualInbound"].HasField("transparent")
        assert not plain["virtualOutbound"].HasField("transparent")
        assert "envoy.filters.listener.original_src" not in [
            f.name for f in plain["virtualInbound"].listener_filters]


def test_inbound_http_port_routes_inline_to_the_inbound_cluster() -> None:
    chain = listeners(build(), sidecar())["virtualInbound"].filter_chains[1]
    assert chain.filter_chain_match.destination_port.value == 8080
    manager = hcm(chain)
    assert manager.stat_prefix == "inbound_0.0.0.0_8080"
    assert [f.name for f in manager.http_filters][-1] == "envoy.filters.http.router"
    table = manager.route_config
    assert table.name == "inbound|8080||"
    (vhost,) = table.virtual_hosts
    assert (vhost.name, list(vhost.domains)) == ("inbound|http|8080", ["*"])
    (route,) = vhost.routes
    assert (route.name, route.match.prefix) == ("default", "/")
    assert route.route.cluster == "inbound|8080||"
    assert route.route.HasField("timeout") and route.route.timeout.ToSeconds() == 0


def test_inbound_chains_by_protocol() -> None:
    chains = listeners(build(MESH + PLAINTEXT), sidecar())["virtualInbound"].filter_chains
    by_port: dict[int, list[tuple[str, tuple[str, ...], str]]] = {}
    for chain in chains[1:]:
        match = chain.filter_chain_match
        by_port.setdefault(match.destination_port.value, []).append(
            (match.transport_protocol, tuple(match.application_protocols), target(chain)))
    http = ("http/1.1", "h2c")
    assert by_port[9000] == [("", (), "inbound|9000||")]
    assert by_port[7000] == [
        ("raw_buffer", http, "inline:inbound|7000||"),
        ("raw_buffer", (), "inbound|7000||"),
        ("tls", (), "inbound|7000||"),
    ]
    assert by_port[0] == [  # the passthrough catch-alls match any port
        ("raw_buffer", http, "inline:InboundPassthroughCluster"),
        ("raw_buffer", (), "InboundPassthroughCluster"),
        ("tls", (), "InboundPassthroughCluster"),
    ]


def test_inspectors_only_run_where_they_decide_something() -> None:
    out = listeners(build(MESH + PLAINTEXT), sidecar())["virtualInbound"]
    for inspector in out.listener_filters[1:]:
        rules = inspector.filter_disabled.or_match.rules
        disabled = {p for r in rules for p in range(r.destination_port_range.start,
                                                     r.destination_port_range.end)}
        # Declared HTTP and TCP ports, the loop guard and the well-known server-first ports
        # skip sniffing; 7000 is undeclared.
        assert disabled == {8080, 9090, 9000, 15006, *SERVER_FIRST_PORTS}


def test_unknown_named_target_port_is_left_out() -> None:
    proxy = parse_node(WEB_NODE, {"LABELS": {"app": "web"}})  # no POD_PORTS
    names = [c.name for c in listeners(build(), proxy)["virtualInbound"].filter_chains]
    assert "0.0.0.0_8080" not in names and "0.0.0.0_9090" in names


def test_chain_options_name_what_each_chain_needs() -> None:
    kinds = sidecar_inbound.PortKind
    plaintext = sidecar_inbound.MtlsMode.DISABLE
    assert [o.http for o in sidecar_inbound.chain_options(kinds.AUTO, plaintext)] == [
        True, False, False]
    (strict,) = sidecar_inbound.chain_options(kinds.HTTP, sidecar_inbound.MtlsMode.STRICT)
    assert strict.mtls and not strict.needs_tls_inspector


def test_no_text_access_log_unless_the_mesh_config_or_a_telemetry_asks() -> None:
    """Istio's default accessLogFile is empty: only Istio's metrics logger; a Telemetry's
    access logging (provider envoy, or none named) turns the stdout line on for its mode."""
    plain = hcm(listeners(build(), sidecar())["0.0.0.0_80"].filter_chains[0])
    assert [log.name for log in plain.access_log] == ["envoy.access_loggers.http_grpc"]
    telemetry = """
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: logs, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: envoy}], match: {mode: CLIENT}}]
"""
    found = listeners(build(MESH + telemetry), sidecar())
    client = hcm(found["0.0.0.0_80"].filter_chains[0])
    assert [log.name for log in client.access_log] == [
        "envoy.access_loggers.stdout", "envoy.access_loggers.http_grpc"]
