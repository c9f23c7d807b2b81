"""Which proxies count Istio's metrics inside Envoy: the metrics module's logger replaces the
gRPC access logger only where the node metadata says the agent provides the module, and
only where no Telemetry override needs the gRPC path."""

from __future__ import annotations

import json
from typing import Any

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import json_format, wrappers_pb2

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import STATS_MODULE, STATS_TABLE, parse_node
from pilotfish.core.xds import types
from pilotfish.core.yamlload import load_text
from pilotfish.testing.generators import generate
from pilotfish.translators.access_logs import HTTP_GRPC_LOGGER, STDOUT_LOGGER, TCP_GRPC_LOGGER
from pilotfish.translators.stats_module import MODULE_LOGGER, DynamicModuleAccessLog

CONFIG = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80}, {name: tcp-db, port: 5432}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 5432, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [istio-system/public]
  tcp: [{route: [{destination: {host: web, port: {number: 5432}}}]}]
"""
TELEMETRY = """\
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT}
      tagOverrides: {team: {value: "request.headers['x-team']"}}
"""
NODE = "router~10.0.0.9~gw-1.istio-system~istio-system.svc.cluster.local"
MODULE = {STATS_MODULE: "/var/cache/pilotfish/libpilotfish_istio_stats_1.so",
          STATS_TABLE: "/etc/istio/proxy/istio-stats.table"}


def listeners(metadata: dict[str, Any], extra: str = "") -> dict[str, listener_pb2.Listener]:
    objects, errors = load_text(CONFIG + extra, "test.yaml")
    assert not errors
    push = push_context.build(objects, MeshSettings(access_log_file="/dev/stdout"), "v1")
    proxy = parse_node(NODE, {"LABELS": {"istio": "ingressgateway"}, **metadata})
    return {item.name: item for item in generate(types.LISTENER, push, proxy, {})}


def loggers(listener: listener_pb2.Listener) -> list[Any]:
    (chain,) = listener.filter_chains
    (item,) = chain.filters
    message: Any = (hcm_pb2.HttpConnectionManager() if "http_connection_manager" in item.name
                    else tcp_proxy_pb2.TcpProxy())
    assert item.typed_config.Unpack(message)
    return list(message.access_log)


def test_a_proxy_whose_agent_provides_the_module_counts_inside_envoy() -> None:
    found = listeners(MODULE)
    for name in ("0.0.0.0_8080", "0.0.0.0_5432"):
        logs = loggers(found[name])
        assert [log.name for log in logs] == [STDOUT_LOGGER, MODULE_LOGGER]
        config = DynamicModuleAccessLog()
        assert logs[1].typed_config.Unpack(config)
        assert config.dynamic_module_config.module.local.filename == MODULE[STATS_MODULE]
        assert config.dynamic_module_config.do_not_close  # the table outlives LDS updates
        table = wrappers_pb2.StringValue()
        assert config.logger_config.Unpack(table)
        assert table.value == MODULE[STATS_TABLE]


def test_other_proxies_keep_the_grpc_access_log() -> None:
    found = listeners({})
    assert [log.name for log in loggers(found["0.0.0.0_8080"])] == [
        STDOUT_LOGGER, HTTP_GRPC_LOGGER]
    assert [log.name for log in loggers(found["0.0.0.0_5432"])] == [
        STDOUT_LOGGER, TCP_GRPC_LOGGER]


def test_half_the_metadata_is_none() -> None:
    found = listeners({STATS_MODULE: MODULE[STATS_MODULE]})
    assert HTTP_GRPC_LOGGER in [log.name for log in loggers(found["0.0.0.0_8080"])]


def test_a_listener_with_telemetry_tag_overrides_stays_on_grpc() -> None:
    """The overrides' CEL runs in the agent, on each entry: HTTP keeps the gRPC logger;
    tcp_proxy, which the HTTP-only override does not touch, counts inside Envoy."""
    found = listeners(MODULE, TELEMETRY)
    assert [log.name for log in loggers(found["0.0.0.0_8080"])] == [
        STDOUT_LOGGER, HTTP_GRPC_LOGGER]
    assert [log.name for log in loggers(found["0.0.0.0_5432"])] == [
        STDOUT_LOGGER, MODULE_LOGGER]


def test_the_module_is_part_of_the_scope() -> None:
    with_module = parse_node(NODE, dict(MODULE))
    assert with_module.scope != parse_node(NODE, {}).scope
    assert with_module.scope.stats_module == (MODULE[STATS_MODULE], MODULE[STATS_TABLE])


def test_config_dumps_show_the_module_logger() -> None:
    """Discovery's /debug/config_dump turns listeners into JSON: the logger's config type
    must be known to protobuf's JSON printer."""
    data = json_format.MessageToDict(listeners(MODULE)["0.0.0.0_8080"])
    text = json.dumps(data)
    assert "DynamicModuleAccessLog" in text and MODULE[STATS_TABLE] in text
