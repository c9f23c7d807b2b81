"""Istio's metrics counted inside a real Envoy by the compiled metrics module give the same
series as the gRPC access-log path, for the same requests.

One Envoy carries both loggers on every listener: the gRPC one (``translators/access_logs``)
streams entries to the agent's access-log server (run here), the module's
(``translators/stats_module``) counts into its table, which the agent's `TableFolder` reads.
Traffic: a 200, a 503 with ``UF`` (nothing listens behind its cluster), gRPC answered with
``grpc-status`` 14, an inbound request over mutual TLS from a client whose certificate names
``spiffe://cluster.local/ns/shop/sa/client``, and TCP connections through tcp_proxy. Every
family rendered from each path must match, label for label and count for count; the
duration sums only to rounding (the module adds nanoseconds, the agent milliseconds).
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from google.protobuf.json_format import MessageToDict

from pilotfish.core.istio_metrics import Workload
from pilotfish.core.prometheus import Family
from pilotfish.plugins.envoy import stats_module
from pilotfish.plugins.envoy.access_log_service import AccessLogServer
from pilotfish.plugins.envoy.admin import read_table
from pilotfish.plugins.envoy.backend import envoy_binary, envoy_version
from pilotfish.plugins.envoy.request_metrics import RequestMetrics
from pilotfish.plugins.envoy.stats_table import TableFolder, parse
from pilotfish.testing.mesh_ca import MeshCA
from pilotfish.testing.processes import Process, free_port, http, wait_until
from pilotfish.translators.access_logs import for_http, for_tcp
from pilotfish.translators.stats_module import module_logger

pytestmark = pytest.mark.envoy

WEB = "outbound|80||web.default.svc.cluster.local"
DEAD = "outbound|81||dead.default.svc.cluster.local"
INBOUND = "inbound|8080||"
DB = "outbound|5432||db.default.svc.cluster.local"
ME = Workload.from_labels("web-1", "default", {"app": "web"})
HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def cluster(name: str, port: int | None = None, pipe: Path | None = None) -> dict[str, Any]:
    endpoint = {"pipe": {"path": str(pipe)}} if pipe else address(port or 0)
    out: dict[str, Any] = {"name": name, "type": "STATIC", "connect_timeout": "1s",
                           "load_assignment": {"cluster_name": name, "endpoints": [{
                               "lb_endpoints": [{"endpoint": {"address": endpoint}}]}]}}
    if pipe:
        out["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                         "HttpProtocolOptions", "explicit_http_config": {
                             "http2_protocol_options": {}}}}
    return out


def hcm(prefix: str, routes: list[dict[str, Any]], loggers: list[dict[str, Any]]
        ) -> dict[str, Any]:
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": HCM, "stat_prefix": prefix, "http_filters": [ROUTER], "access_log": loggers,
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                                            "routes": routes}]}}}


def route(prefix: str, to: str) -> dict[str, Any]:
    return {"match": {"prefix": prefix}, "route": {"cluster": to}}


def bootstrap(tmp: Path, ports: dict[str, int], sink: Path, certs: dict[str, Path]
              ) -> dict[str, Any]:
    module = stats_module.build(envoy_version(str(envoy_binary())), tmp)
    counting = MessageToDict(module_logger(str(module), str(tmp / "istio-stats.table")))
    http_loggers = [*map(MessageToDict, for_http()), counting]
    tcp_loggers = [*map(MessageToDict, for_tcp()), counting]
    tls = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                 "DownstreamTlsContext",
        "require_client_certificate": True, "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"filename": str(certs["chain"])},
                                  "private_key": {"filename": str(certs["key"])}}],
            "validation_context": {"trusted_ca": {"filename": str(certs["root"])}}}}}
    backend_routes = [
        {"match": {"prefix": "/grpc"}, "direct_response": {"status": 200},
         "response_headers_to_add": [{"header": {"key": "grpc-status", "value": "14"}}]},
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {
            "inline_string": "hello"}}}]
    echo = {"name": "envoy.filters.network.echo", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo"}}
    tcp = {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": "db", "cluster": DB, "access_log": tcp_loggers,
        "access_log_options": {"flush_access_log_on_connected": True}}}
    return {
        "admin": {"address": address(ports["admin"])},
        "static_resources": {
            "listeners": [
                {"name": "outbound", "address": address(ports["outbound"]), "filter_chains": [
                    {"filters": [hcm("outbound", [route("/dead", DEAD), route("/", WEB)],
                                     http_loggers)]}]},
                {"name": "inbound", "address": address(ports["inbound"]), "filter_chains": [
                    {"transport_socket": tls,
                     "filters": [hcm("inbound", [route("/", INBOUND)], http_loggers)]}]},
                {"name": "db", "address": address(ports["tcp"]),
                 "filter_chains": [{"filters": [tcp]}]},
                {"name": "backend", "address": address(ports["backend"]), "filter_chains": [
                    {"filters": [hcm("backend", backend_routes, [])]}]},
                {"name": "echo", "address": address(ports["echo"]),
                 "filter_chains": [{"filters": [echo]}]},
            ],
            "clusters": [cluster(WEB, ports["backend"]), cluster(DEAD, ports["dead"]),
                         cluster(INBOUND, ports["backend"]), cluster(DB, ports["echo"]),
                         cluster("als-grpc", pipe=sink)]}}


@pytest.fixture
def envoy(tmp_path: Path) -> Iterator[tuple[dict[str, int], RequestMetrics]]:
    ca = MeshCA()
    server, client = ca.issue("shop", "web"), ca.issue("shop", "client")
    certs = {"chain": tmp_path / "chain.pem", "key": tmp_path / "key.pem",
             "root": tmp_path / "root.pem", "client": tmp_path / "client.pem",
             "client_key": tmp_path / "client-key.pem"}
    for name, data in (("chain", server.chain_pem), ("key", server.key_pem),
                       ("root", ca.roots_pem), ("client", client.chain_pem),
                       ("client_key", client.key_pem)):
        certs[name].write_bytes(data)
    via_als = RequestMetrics()
    sink = AccessLogServer(tmp_path / "als", via_als)
    started = threading.Event()

    async def serve() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(sink.serve)
            started.set()

    threading.Thread(target=anyio.run, args=(serve,), daemon=True).start()  # dies with pytest
    assert started.wait(10)
    ports = {name: free_port() for name in ("admin", "outbound", "inbound", "tcp", "backend",
                                            "echo", "dead")}
    (tmp_path / "envoy.json").write_text(json.dumps(bootstrap(tmp_path, ports, sink.path,
                                                              certs)))
    process = Process("envoy", [str(envoy_binary()), "-c", str(tmp_path / "envoy.json"),
                                "--concurrency", "2", "--disable-hot-restart", "-l", "warning"],
                      tmp_path / "envoy.log").start()
    try:
        wait_until(lambda: http(f"http://127.0.0.1:{ports['outbound']}/").status == 200, 30,
                   what="Envoy")
        yield ports, via_als
    finally:
        process.stop()


def families(metrics: RequestMetrics) -> dict[str, Family]:
    return {f.name: f for f in metrics.families(ME, {})}


def mtls_get(port: int, tmp: Path) -> int:
    context = ssl.create_default_context(cafile=str(tmp / "root.pem"))
    context.check_hostname = False
    context.load_cert_chain(str(tmp / "client.pem"), str(tmp / "client-key.pem"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw) as tls:
        tls.sendall(b"GET /in HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n")
        reply = b""
        while chunk := tls.recv(4096):
            reply += chunk
    return int(reply.split(b" ", 2)[1])


def tcp_echo(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"ping\n")
        assert conn.recv(16) == b"ping\n"


def test_the_module_counts_the_series_the_access_log_path_counts(
        envoy: tuple[dict[str, int], RequestMetrics], tmp_path: Path) -> None:
    ports, via_als = envoy
    base = f"http://127.0.0.1:{ports['outbound']}"
    statuses = [http(f"{base}/ok").status for _ in range(3)]
    statuses.append(http(f"{base}/dead").status)
    statuses.append(http(f"{base}/grpc", headers={"content-type": "application/grpc"},
                         method="POST", data=b"\0\0\0\0\0").status)
    statuses += [mtls_get(ports["inbound"], tmp_path) for _ in range(2)]
    assert statuses == [200, 200, 200, 503, 200, 200, 200]
    for _ in range(2):
        tcp_echo(ports["tcp"])

    via_module = RequestMetrics()
    folder = TableFolder(via_module)

    def same() -> dict[str, Family] | None:
        folder.fold(parse(read_table(tmp_path / "istio-stats.table")))
        left, right = families(via_module), families(via_als)
        return left if left.keys() == right.keys() and all(
            _comparable(left[name]) == _comparable(right[name]) for name in left) else None

    # The gRPC entries come in batches (within a second); the table at once.
    found = wait_until(same, 15, what="the same families from both paths")
    expected = json.dumps({name: _comparable(f) for name, f in families(via_als).items()},
                          indent=1)
    assert found, expected

    requests = {(s.label("response_code"), s.label("response_flags"),
                 s.label("grpc_response_status"), s.label("source_principal"),
                 s.label("connection_security_policy")): s.value
                for s in found["istio_requests_total"].samples}
    assert requests == {
        ("200", "-", "", "unknown", "unknown"): "4",  # and the one that waited for Envoy
        ("503", "UF", "", "unknown", "unknown"): "1",
        ("200", "-", "14", "unknown", "unknown"): "1",
        ("200", "-", "", "spiffe://cluster.local/ns/shop/sa/client", "mutual_tls"): "2",
    }
    grpc = [s for s in found["istio_requests_total"].samples
            if s.label("grpc_response_status") == "14"]
    assert grpc[0].label("request_protocol") == "grpc"
    inbound = [s for s in found["istio_requests_total"].samples
               if s.label("connection_security_policy") == "mutual_tls"]
    assert inbound[0].label("destination_principal") == "spiffe://cluster.local/ns/shop/sa/web"
    assert inbound[0].label("reporter") == "destination"
    opened = found["istio_tcp_connections_opened_total"].samples
    assert [s.value for s in opened] == ["2"]
    assert folder.dropped == 0


def _comparable(family: Family) -> list[tuple[str, tuple[tuple[str, str], ...], str]]:
    """The family's samples; a duration sum rounded (nanoseconds added vs milliseconds)."""
    out = []
    for sample in family.samples:
        value = sample.value
        if sample.name == "istio_request_duration_milliseconds_sum":
            value = f"{float(value):.3f}"
        out.append((sample.name, tuple(sample.labels), value))
    return sorted(out)
