"""Istio's metrics counted inside a real Envoy by the compiled metrics module give the same
series as the gRPC access-log path, for the same requests.

One Envoy carries both loggers on every listener: the gRPC one (``translators/access_logs``)
streams entries to the agent's access-log server (run here), the module's
(``translators/stats_module``) counts into its table, which the agent's `TableFolder` reads.
Traffic: a 200, a 503 with ``UF`` (nothing listens behind its cluster), gRPC answered with
``grpc-status`` 14, an inbound request over mutual TLS from a client whose certificate names
``spiffe://cluster.local/ns/shop/sa/client``, the same client's requests through an HBONE
tunnel that Envoy terminates and hands to an internal listener (as a sidecar that takes
HBONE does: the inbound hop has no TLS, the tunnel's identities are filter state), and TCP
connections through tcp_proxy. Every
family rendered from each path must match, label for label and count for count; the
duration sums only to rounding (the module adds nanoseconds, the agent milliseconds).
"""

from __future__ import annotations

import asyncio
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

from pilotfish.core.istio_metrics import LOCAL_PRINCIPAL, PEER_PRINCIPAL, Workload
from pilotfish.core.native import hbone
from pilotfish.core.prometheus import Family
from pilotfish.plugins.envoy import stats_module
from pilotfish.plugins.envoy.access_log_service import AccessLogServer
from pilotfish.plugins.envoy.admin import read_table
from pilotfish.plugins.envoy.backend import envoy_binary, envoy_version
from pilotfish.plugins.envoy.request_metrics import RequestMetrics
from pilotfish.plugins.envoy.stats_table import TableFolder, parse
from pilotfish.testing.mesh_ca import MeshCA
from pilotfish.testing.processes import Process, free_port, http, wait_until
from pilotfish.testing.servers import tcp_connect
from pilotfish.translators.access_logs import for_http, for_tcp
from pilotfish.translators.stats_module import module_logger, tunnel_identity_filters

pytestmark = pytest.mark.envoy

WEB = "outbound|80||web.default.svc.cluster.local"
DEAD = "outbound|81||dead.default.svc.cluster.local"
INBOUND = "inbound|8080||"
TUNNELED = "10.0.0.5:8080"  # the CONNECT authority of the tunneled requests
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


def hcm(prefix: str, routes: list[dict[str, Any]], loggers: list[dict[str, Any]],
        filters: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": HCM, "stat_prefix": prefix, "http_filters": [*filters, ROUTER],
        "access_log": loggers,
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
    # what stats_module.apply puts first in a HBONE sidecar's main_internal HCMs
    tunnel_filters = tuple(map(MessageToDict, tunnel_identity_filters()))
    tls = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                 "DownstreamTlsContext",
        "require_client_certificate": True, "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"filename": str(certs["chain"])},
                                  "private_key": {"filename": str(certs["key"])}}],
            "validation_context": {"trusted_ca": {"filename": str(certs["root"])}}}}}
    backend_routes = [
        {"match": {"prefix": "/tunneled"}, "direct_response": {"status": 201}},
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
                terminate(ports["terminate"], certs),
                {"name": "main_internal", "internal_listener": {}, "filter_chains": [
                    {"filters": [hcm("main_internal", [route("/", INBOUND)], http_loggers,
                                     tunnel_filters)]}]},
            ],
            "clusters": [cluster(WEB, ports["backend"]), cluster(DEAD, ports["dead"]),
                         cluster(INBOUND, ports["backend"]), cluster(DB, ports["echo"]),
                         cluster("als-grpc", pipe=sink), MAIN_INTERNAL]},
        "bootstrap_extensions": [{"name": "envoy.bootstrap.internal_listener",
                                  "typed_config": {"@type": INTERNAL_LISTENER}}]}


INTERNAL_LISTENER = ("type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3."
                     "InternalListener")
MAIN_INTERNAL = {
    "name": "main_internal", "type": "STATIC", "connect_timeout": "1s",
    "load_assignment": {"cluster_name": "main_internal", "endpoints": [{"lb_endpoints": [{
        "endpoint": {"address": {"envoy_internal_address": {
            "server_listener_name": "main_internal"}}}}]}]},
    "transport_socket": {"name": "envoy.transport_sockets.internal_upstream", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream.v3."
                 "InternalUpstreamTransport",
        "transport_socket": {"name": "envoy.transport_sockets.raw_buffer", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3."
                     "RawBuffer"}}}}}


def terminate(port: int, certs: dict[str, Path]) -> dict[str, Any]:
    """HBONE in, as ``connect_terminate`` has it: mTLS 1.3, CONNECT over HTTP/2, the peer's
    and our own URI SAN noted as filter state shared with the internal listener."""
    def state(key: str, format_string: str) -> dict[str, Any]:
        return {"object_key": key, "factory_key": "envoy.string",
                "format_string": {"text_format_source": {"inline_string": format_string}},
                "shared_with_upstream": "ONCE"}

    tls = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                 "DownstreamTlsContext",
        "require_client_certificate": True, "common_tls_context": {
            "tls_params": {"tls_minimum_protocol_version": "TLSv1_3"},
            "alpn_protocols": ["h2"],
            "tls_certificates": [{"certificate_chain": {"filename": str(certs["chain"])},
                                  "private_key": {"filename": str(certs["key"])}}],
            "validation_context": {"trusted_ca": {"filename": str(certs["root"])}}}}}
    set_state = {"name": "envoy.filters.http.set_filter_state", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.set_filter_state.v3.Config",
        "on_request_headers": [state(PEER_PRINCIPAL, "%DOWNSTREAM_PEER_URI_SAN%"),
                               state(LOCAL_PRINCIPAL, "%DOWNSTREAM_LOCAL_URI_SAN%")]}}
    return {"name": "terminate", "address": address(port), "filter_chains": [{
        "transport_socket": tls,
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": HCM, "stat_prefix": "terminate", "codec_type": "HTTP2",
            "http2_protocol_options": {"allow_connect": True},
            "upgrade_configs": [{"upgrade_type": "CONNECT"}],
            "http_filters": [set_state, ROUTER],
            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{
                "match": {"connect_matcher": {}},
                "route": {"cluster": "main_internal", "upgrade_configs": [{
                    "upgrade_type": "CONNECT", "connect_config": {}}]}}]}]}}}]}]}


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
                                            "echo", "dead", "terminate")}
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


def tunneled_get(port: int, tmp: Path) -> int:
    """A request to the inbound chains through an HBONE tunnel from the client's identity."""
    def context() -> ssl.SSLContext:
        return hbone.client_context((tmp / "client.pem").read_bytes(),
                                    (tmp / "client-key.pem").read_bytes(),
                                    (tmp / "root.pem").read_bytes())

    async def main() -> bytes:
        key = hbone.PoolKey("spiffe://cluster.local/ns/shop/sa/client",
                            ("spiffe://cluster.local/ns/shop/sa/web",), "127.0.0.1",
                            ("127.0.0.1", port))
        async with hbone.HbonePool() as pool:
            tunnel = await pool.open(key, TUNNELED, [], context, tcp_connect)
            try:
                await tunnel.write(b"GET /tunneled HTTP/1.1\r\nhost: web\r\n\r\n")
                reply = bytearray()  # the 201's head (no body); then the tunnel is closed
                while b"\r\n\r\n" not in reply and (data := await tunnel.read()):
                    reply += data
            finally:
                await tunnel.close()
        return bytes(reply)

    return int(asyncio.run(asyncio.wait_for(main(), 10)).split(b" ", 2)[1])


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
    statuses += [tunneled_get(ports["terminate"], tmp_path) for _ in range(2)]
    assert statuses == [200, 200, 200, 503, 200, 200, 200, 201, 201]
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
        # through the tunnel: the identities its mTLS proved, from the filter state
        ("201", "-", "", "spiffe://cluster.local/ns/shop/sa/client", "mutual_tls"): "2",
    }
    grpc = [s for s in found["istio_requests_total"].samples
            if s.label("grpc_response_status") == "14"]
    assert grpc[0].label("request_protocol") == "grpc"
    inbound = [s for s in found["istio_requests_total"].samples
               if s.label("connection_security_policy") == "mutual_tls"]
    assert [s.label("destination_principal") for s in inbound] == [
        "spiffe://cluster.local/ns/shop/sa/web"] * 2
    assert {s.label("reporter") for s in inbound} == {"destination"}
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
