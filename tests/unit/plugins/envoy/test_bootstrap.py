"""The Envoy bootstrap: what discovery and Envoy will read from it, without running Envoy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2  # noqa: F401 - Any type
from envoy.extensions.bootstrap.internal_listener.v3 import internal_listener_pb2
from envoy.extensions.resource_monitors.downstream_connections.v3 import (  # noqa: F401
    downstream_connections_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format

from pilotfish.core.proxy import ProxyType, parse_node
from pilotfish.core.proxy_backend import PodPort, ProxyOptions
from pilotfish.plugins.envoy import bootstrap as envoy_bootstrap
from pilotfish.plugins.envoy.backend import EnvoyBackend

CONFIG_DIR = Path("/run/pf/reviews-v1.bookinfo")


def options(**overrides: Any) -> ProxyOptions:
    values: dict[str, Any] = {
        "name": "reviews-v1",
        "namespace": "bookinfo",
        "ip": "10.1.0.7",
        "discovery_address": "10.96.0.1:15010",
        "config_dir": CONFIG_DIR,
        "labels": {"app": "reviews", "version": "v1"},
        "service_account": "bookinfo-reviews",
    }
    values.update(overrides)
    return ProxyOptions(**values)


def build(**overrides: Any) -> dict[str, Any]:
    return envoy_bootstrap.bootstrap(options(**overrides), "0.1.0")


def clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def test_node_id_is_istios_four_parts() -> None:
    node = build()["node"]
    assert node["id"] == "sidecar~10.1.0.7~reviews-v1.bookinfo~bookinfo.svc.cluster.local"
    assert build(proxy_type="router")["node"]["id"].startswith("router~10.1.0.7~")
    assert build(domain="corp.example")["node"]["id"].endswith("~bookinfo.svc.corp.example")


def test_node_cluster_is_app_dot_namespace() -> None:
    assert build()["node"]["cluster"] == "reviews.bookinfo"
    assert build(labels={})["node"]["cluster"] == "reviews-v1.bookinfo"


def test_metadata_carries_what_discovery_reads() -> None:
    meta = build(pod_ports=(PodPort(9080, "http"), PodPort(15090)))["node"]["metadata"]
    assert meta["NAMESPACE"] == "bookinfo"
    assert meta["LABELS"] == {"app": "reviews", "version": "v1"}
    assert meta["INSTANCE_IPS"] == "10.1.0.7"
    assert meta["SERVICE_ACCOUNT"] == "bookinfo-reviews"
    assert meta["WORKLOAD_NAME"] == "reviews-v1"
    assert meta["ISTIO_VERSION"] == "0.1.0"
    assert meta["CLUSTER_ID"] == "Kubernetes"
    assert meta["INTERCEPTION_MODE"] == "REDIRECT"
    assert meta["PILOTFISH_ADMIN"] == "127.0.0.1:15000"
    # A JSON string, as pilot-agent sends it: node metadata values are flat.
    assert json.loads(meta["POD_PORTS"]) == [
        {"name": "http", "containerPort": 9080, "protocol": "TCP"},
        {"containerPort": 15090, "protocol": "TCP"},
    ]


def test_metadata_round_trips_through_discoverys_parser() -> None:
    config = build(pod_ports=(PodPort(9080, "http"),))
    proxy = parse_node(config["node"]["id"], config["node"]["metadata"])
    assert proxy.type is ProxyType.SIDECAR
    assert (proxy.name, proxy.namespace, proxy.ip) == ("reviews-v1", "bookinfo", "10.1.0.7")
    assert proxy.labels == {"app": "reviews", "version": "v1"}
    assert proxy.service_account == "bookinfo-reviews"
    assert proxy.pod_ports == {"http": 9080}


def test_pod_ports_are_left_out_when_not_given() -> None:
    assert "POD_PORTS" not in build()["node"]["metadata"]


def test_extra_metadata_adds_but_cannot_contradict_the_flags() -> None:
    meta = build(
        metadata={"WORKLOAD_NAME": "reviews", "MESH_ID": "m1", "NAMESPACE": "other"}
    )["node"]["metadata"]
    assert meta["WORKLOAD_NAME"] == "reviews"
    assert meta["MESH_ID"] == "m1"
    assert meta["NAMESPACE"] == "bookinfo"


def test_admin_address_is_advertised_with_the_port_in_use() -> None:
    config = build(admin_port=19001)
    assert config["node"]["metadata"]["PILOTFISH_ADMIN"] == "127.0.0.1:19001"
    address = config["admin"]["address"]["socket_address"]
    assert address == {"address": "127.0.0.1", "port_value": 19001}
    assert config["admin"]["access_log"][0]["typed_config"]["path"] == "/dev/null"


@pytest.mark.parametrize(("mode", "api_type"), [("delta", "DELTA_GRPC"), ("sotw", "GRPC")])
def test_ads_api_type_follows_the_xds_mode(mode: str, api_type: str) -> None:
    dynamic = build(xds_mode=mode)["dynamic_resources"]
    ads = dynamic["ads_config"]
    assert ads["api_type"] == api_type
    assert ads["set_node_on_first_message_only"] is True
    assert ads["transport_api_version"] == "V3"
    assert ads["grpc_services"] == [{"envoy_grpc": {
        "cluster_name": "xds-grpc",
        # Envoy's own reconnect backoff (which Istio relies on), written out.
        "retry_policy": {"retry_back_off": {"base_interval": "0.5s", "max_interval": "30s"}},
    }}]
    for key in ("cds_config", "lds_config"):
        assert dynamic[key] == {
            "ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"
        }


def test_default_xds_mode_is_delta_as_in_istio() -> None:
    assert build()["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"


def test_xds_cluster_speaks_http2_to_the_discovery_ip() -> None:
    xds = clusters(build())["xds-grpc"]
    assert xds["type"] == "STATIC"
    assert xds["connect_timeout"] == "1s"
    endpoint = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "10.96.0.1", "port_value": 15010}
    options = xds["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert "http2_protocol_options" in options["explicit_http_config"]
    assert {t["priority"] for t in xds["circuit_breakers"]["thresholds"]} == {"DEFAULT", "HIGH"}
    assert xds["upstream_connection_options"]["tcp_keepalive"]


def test_xds_cluster_leaves_a_hostname_to_envoys_resolver() -> None:
    xds = clusters(build(discovery_address="pilotfish.istio-system.svc:15012"))["xds-grpc"]
    assert xds["type"] == "STRICT_DNS"
    endpoint = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"]["address"] == "pilotfish.istio-system.svc"


def test_xds_cluster_accepts_bracketed_ipv6() -> None:
    xds = clusters(build(discovery_address="[fd00::1]:15010"))["xds-grpc"]
    assert xds["type"] == "STATIC"
    endpoint = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "fd00::1", "port_value": 15010}


def test_sds_cluster_is_always_there_on_the_agents_socket() -> None:
    sds = clusters(build())["sds-grpc"]
    assert sds["type"] == "STATIC"
    endpoint = sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"] == {"pipe": {"path": str(CONFIG_DIR / "SDS")}}
    assert "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" in (
        sds["typed_extension_protocol_options"]
    )


def test_bootstrap_parses_as_envoys_bootstrap_message() -> None:
    # Field names and Any types checked against the real v3 protos, without Envoy.
    for mode in ("delta", "sotw"):
        config = build(xds_mode=mode, discovery_address="localhost:15010")
        json_format.ParseDict(config, bootstrap_pb2.Bootstrap())


def test_every_bootstrap_enables_internal_listeners() -> None:
    config = build(proxy_type="waypoint")
    assert config["node"]["id"].startswith("waypoint~10.1.0.7~")
    assert [e["name"] for e in config["bootstrap_extensions"]] == [
        "envoy.bootstrap.internal_listener"]
    internal_listener_pb2.InternalListener()  # the type the typed_config names must load
    json_format.ParseDict(config, bootstrap_pb2.Bootstrap())
    # sidecars and gateways have them too (HBONE to ambient pods; from ztunnel)
    assert build()["bootstrap_extensions"] == config["bootstrap_extensions"]
    assert build(proxy_type="router")["bootstrap_extensions"] == config["bootstrap_extensions"]


def test_backend_writes_the_bootstrap_as_json(tmp_path: Path) -> None:
    backend = EnvoyBackend(binary=Path("/nonexistent/envoy"))
    opts = options(config_dir=tmp_path / "proxy")
    path = backend.write_bootstrap(opts)
    assert path == tmp_path / "proxy" / "envoy-rev.json"
    assert json.loads(path.read_text()) == backend.bootstrap(opts)


def test_command_runs_envoy_without_hot_restart() -> None:
    backend = EnvoyBackend(binary=Path("/opt/envoy"))
    argv = backend.command(options(concurrency=4, drain_seconds=30, log_level="debug"),
                           Path("/b.json"))
    assert argv[:3] == ["/opt/envoy", "-c", "/b.json"]
    assert "--disable-hot-restart" in argv

    def flag(name: str) -> str:
        return argv[argv.index(name) + 1]

    assert flag("--drain-time-s") == "30"
    assert flag("--local-address-ip-version") == "v4"
    assert flag("-l") == "debug"
    assert flag("--concurrency") == "4"
    assert "--concurrency" not in backend.command(options(concurrency=0), Path("/b.json"))
    assert "v6" in backend.command(options(ip="fd00::7"), Path("/b.json"))


@pytest.mark.parametrize(("field", "value", "message"), [
    ("ip", "10.1.0", "ip: '10.1.0' is not an IP address"),
    ("discovery_address", "pilot", "expected HOST:PORT"),
    ("discovery_address", "fd00::1:15010", "[ADDR]:PORT"),
    ("proxy_type", "ztunnel", "proxy_type: expected one of sidecar, router, waypoint"),
    ("xds_mode", "incremental", "xds_mode: expected one of sotw, delta"),
    ("admin_port", 70000, "admin_port: expected a port"),
])
def test_options_reject_bad_values_naming_the_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        options(**{field: value})


def test_prometheus_listener_serves_only_the_stats_path() -> None:
    config = build(prometheus_port=15090, admin_port=19001)
    [listener] = config["static_resources"]["listeners"]
    assert listener["name"] == "0.0.0.0_15090"
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 15090}
    assert listener["enable_reuse_port"] is False  # a second proxy on the port must fail
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    [route] = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert route == {"match": {"path": "/stats/prometheus", "headers": [
                         {"name": ":method", "string_match": {"exact": "GET"}}]},
                     "route": {"cluster": "prometheus_stats"}}
    assert hcm["normalize_path"] is True and hcm["merge_slashes"] is True
    admin = clusters(config)["prometheus_stats"]["load_assignment"]["endpoints"][0]
    assert admin["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1", "port_value": 19001}
    ipv6 = build(prometheus_port=15090, ip="fd00::7")["static_resources"]["listeners"][0]
    assert ipv6["address"]["socket_address"]["address"] == "::"


def test_no_prometheus_port_no_listener() -> None:
    config = build()
    assert "listeners" not in config["static_resources"]
    assert "prometheus_stats" not in clusters(config)


def test_bootstrap_with_prometheus_listener_parses_as_envoys_message() -> None:
    from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
    from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
        http_connection_manager_pb2,
    )

    json_format.ParseDict(build(prometheus_port=15090), bootstrap_pb2.Bootstrap())


def test_command_turns_misc_logging_down_as_istio() -> None:
    argv = EnvoyBackend(binary=Path("/opt/envoy")).command(options(), Path("/b.json"))
    assert argv[argv.index("--component-log-level") + 1] == "misc:error"


def test_prometheus_port_is_checked() -> None:
    with pytest.raises(ValueError, match="prometheus_port: expected a port from 1 to 65535, "
                                         "or 0 for none"):
        options(prometheus_port=-1)


def test_xds_over_mtls_dials_the_agents_relay_with_the_agents_secrets() -> None:
    xds = clusters(build(xds_tls=True, discovery_address="10.96.0.1:15012"))["xds-grpc"]
    endpoint = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"] == {"pipe": {"path": str(CONFIG_DIR / "XDS")}}
    tls = xds["transport_socket"]["typed_config"]
    assert tls["sni"] == "istiod.istio-system.svc"
    common = tls["common_tls_context"]
    assert common["alpn_protocols"] == ["h2"]  # gRPC: discovery picks h2 or refuses
    [cert] = common["tls_certificate_sds_secret_configs"]
    validation = common["combined_validation_context"]
    root = validation["validation_context_sds_secret_config"]
    assert (cert["name"], root["name"]) == ("default", "ROOTCA")
    for secret in (cert, root):
        source = secret["sds_config"]
        assert source["api_config_source"]["grpc_services"] == [
            {"envoy_grpc": {"cluster_name": "sds-grpc"}}]
        # The same config source as generated clusters use: one Envoy subscription each.
        from google.protobuf import json_format

        from pilotfish.translators.upstream_tls import agent_sds

        assert source == json_format.MessageToDict(
            agent_sds(secret["name"]).sds_config, preserving_proto_field_name=True)
    assert validation["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "istiod.istio-system.svc"}}]
    assert "transport_socket" not in clusters(build())["xds-grpc"]  # plaintext by default


def test_xds_over_mtls_bootstrap_parses_as_envoys_message() -> None:
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401

    json_format.ParseDict(build(xds_tls=True), bootstrap_pb2.Bootstrap())
