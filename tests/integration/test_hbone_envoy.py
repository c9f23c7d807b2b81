"""HBONE against a peer not written here: a real Envoy, configured by hand the way a
waypoint or a sidecar speaks HBONE, both ways.

- Envoy TERMINATES HBONE (a listener with mutual TLS 1.3 and ALPN h2, an HTTP connection
  manager that allows CONNECT and routes it to a TCP echo server): ``HbonePool`` tunnels
  through it, proves Envoy's identity, carries 4 MiB each way, and a CONNECT Envoy has no
  route for comes back as ``HboneError(404)``.
- Envoy ORIGINATES HBONE (a tcp_proxy tunnelling over an HTTP/2 cluster with a client
  certificate and ALPN h2): plain TCP into Envoy reaches ``serve()``, whose handler sees
  Envoy's SPIFFE ID and the tunnel's authority, and the bytes come back.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pilotfish.core.native import channels, hbone
from pilotfish.core.native.channels import Channel
from pilotfish.plugins.envoy.backend import envoy_binary
from pilotfish.testing.mesh_ca import MeshCA, WorkloadCert
from pilotfish.testing.processes import Process, free_port, wait_until
from pilotfish.testing.servers import tcp_connect

pytestmark = pytest.mark.envoy

CA = MeshCA()
ENVOY = CA.issue("shop", "waypoint")  # Envoy's own identity, both ways
CLIENT = CA.issue("shop", "web")  # pilotfish's client
SERVER = CA.issue("shop", "db")  # pilotfish's server
TERMINATED = "10.0.0.5:8080"  # the authority Envoy's terminating route takes
ORIGINATED = "10.0.0.7:9090"  # the authority Envoy's tcp_proxy sends
ENVOY_BAGGAGE = "k8s.namespace.name=shop,k8s.deployment.name=waypoint"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." \
    "HttpConnectionManager"
TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def files(folder: Path, name: str, cert: WorkloadCert) -> dict[str, Any]:
    chain, key = folder / f"{name}.pem", folder / f"{name}-key.pem"
    chain.write_bytes(cert.chain_pem)
    key.write_bytes(cert.key_pem)
    key.chmod(0o600)
    return {"certificate_chain": {"filename": str(chain)},
            "private_key": {"filename": str(key)}}


def common_tls(folder: Path, roots: Path, sans: Sequence[str] = ()) -> dict[str, Any]:
    validation: dict[str, Any] = {"trusted_ca": {"filename": str(roots)}}
    if sans:
        validation["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"exact": san}} for san in sans]
    return {"tls_params": {"tls_minimum_protocol_version": "TLSv1_3",
                           "tls_maximum_protocol_version": "TLSv1_3"},
            "alpn_protocols": ["h2"],
            "tls_certificates": [files(folder, "envoy", ENVOY)],
            "validation_context": validation}


def address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def bootstrap(folder: Path, ports: dict[str, int]) -> dict[str, Any]:
    roots = folder / "roots.pem"
    roots.write_bytes(CA.roots_pem)
    access_log = {"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": str(folder / "access.log"),
        "log_format": {"text_format_source": {"inline_string":
            "%REQ(:AUTHORITY)% %DOWNSTREAM_PEER_URI_SAN% %RESPONSE_CODE% %REQ(BAGGAGE)%\n"}}}}
    terminate = {
        "name": "hbone_terminate", "address": address(ports["terminate"]),
        "filter_chains": [{
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": f"{TLS}DownstreamTlsContext",
                "require_client_certificate": True,
                "common_tls_context": common_tls(folder, roots)}},
            "filters": [{"name": "envoy.filters.network.http_connection_manager",
                         "typed_config": {
                "@type": HCM, "stat_prefix": "hbone", "codec_type": "HTTP2",
                "http2_protocol_options": {"allow_connect": True,
                                           "initial_stream_window_size": 4 << 20,
                                           "initial_connection_window_size": 16 << 20},
                "upgrade_configs": [{"upgrade_type": "CONNECT"}],
                "access_log": [access_log],
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3."
                             "Router"}}],
                "route_config": {"name": "hbone", "virtual_hosts": [{
                    "name": "app", "domains": [TERMINATED], "routes": [{
                        "match": {"connect_matcher": {}},
                        "route": {"cluster": "echo", "upgrade_configs": [{
                            "upgrade_type": "CONNECT", "connect_config": {}}]}}]}]}}}]}]}
    originate = {
        "name": "hbone_originate", "address": address(ports["originate"]),
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy",
                                        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3."
                     "TcpProxy",
            "stat_prefix": "originate", "cluster": "pilotfish_hbone",
            "tunneling_config": {"hostname": ORIGINATED, "headers_to_add": [
                {"header": {"key": "baggage", "value": ENVOY_BAGGAGE}}]}}}]}]}
    clusters = [
        {"name": "echo", "type": "STATIC", "connect_timeout": "2s",
         "load_assignment": {"cluster_name": "echo", "endpoints": [{"lb_endpoints": [{
             "endpoint": {"address": address(ports["echo"])}}]}]}},
        {"name": "pilotfish_hbone", "type": "STATIC", "connect_timeout": "2s",
         "load_assignment": {"cluster_name": "pilotfish_hbone", "endpoints": [{
             "lb_endpoints": [{"endpoint": {"address": address(ports["serve"])}}]}]},
         "typed_extension_protocol_options": {HTTP_OPTIONS: {
             "@type": f"type.googleapis.com/{HTTP_OPTIONS}",
             "explicit_http_config": {"http2_protocol_options": {}}}},
         "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
             "@type": f"{TLS}UpstreamTlsContext",
             "common_tls_context": common_tls(folder, roots, [SERVER.spiffe_id])}}},
    ]
    return {"admin": {"address": address(ports["admin"])},
            "static_resources": {"listeners": [terminate, originate], "clusters": clusters}}


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = Path(tmp_path_factory.mktemp("hbone-envoy"))
    ports = {name: free_port() for name in ("terminate", "originate", "echo", "serve",
                                            "admin")}
    path = folder / "envoy.json"
    path.write_text(json.dumps(bootstrap(folder, ports), indent=1))
    process = Process("envoy", [str(envoy_binary()), "-c", str(path), "--disable-hot-restart",
                                "--base-id", str(ports["admin"]), "-l", "warning",
                                "--file-flush-interval-msec", "50"],
                      folder / "envoy.log").start()
    try:
        for name in ("terminate", "originate"):
            wait_until(lambda p=ports[name]: _connects(p), what=f"Envoy's {name} listener")
        yield {"ports": ports, "folder": folder, "process": process}
    finally:
        process.stop()


def _connects(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def client_context() -> ssl.SSLContext:
    return hbone.client_context(CLIENT.chain_pem, CLIENT.key_pem, CA.roots_pem)


async def read_all(channel: Channel) -> bytes:
    out = bytearray()
    while data := await channel.read():
        out += data
    return bytes(out)


def test_envoy_terminates_pilotfish_tunnels(envoy: dict[str, Any]) -> None:
    ports = envoy["ports"]
    payload = bytes(range(256)) * (4 * 4096)  # 4 MiB: past Envoy's first windows

    async def main() -> None:
        app = await asyncio.start_server(echo, "127.0.0.1", ports["echo"])
        key = hbone.PoolKey(CLIENT.spiffe_id, (ENVOY.spiffe_id,), "127.0.0.1",
                            ("127.0.0.1", ports["terminate"]))
        headers = [("baggage", hbone.baggage(namespace="shop", workload_name="web")),
                   ("forwarded", hbone.forwarded(("10.0.0.9", 41000))),
                   ("traceparent", hbone.traceparent())]
        async with hbone.HbonePool() as pool:
            async def one() -> bytes:
                tunnel = await pool.open(key, TERMINATED, headers, client_context, tcp_connect)

                async def send() -> None:
                    for at in range(0, len(payload), 1 << 18):
                        await tunnel.write(payload[at:at + (1 << 18)])
                    tunnel.end()

                try:
                    _, received = await asyncio.gather(send(), read_all(tunnel))
                finally:
                    await tunnel.close()
                return received

            assert await one() == payload
            assert await asyncio.gather(one(), one()) == [payload, payload]
            assert pool.statistics() == hbone.PoolStatistics(connections=1, streams=0)

            with pytest.raises(hbone.HboneError) as caught:  # no virtual host for it
                await pool.open(key, "10.0.0.99:1", headers, client_context, tcp_connect)
            assert caught.value.status == 404

            wrong = hbone.PoolKey(CLIENT.spiffe_id, (SERVER.spiffe_id,), "127.0.0.1",
                                  ("127.0.0.1", ports["terminate"]))
            with pytest.raises(hbone.HboneError) as refused:
                await pool.open(wrong, TERMINATED, headers, client_context, tcp_connect)
            assert refused.value.status is None and ENVOY.spiffe_id in str(refused.value)
        app.close()

    asyncio.run(asyncio.wait_for(main(), 30))
    log = envoy["folder"] / "access.log"
    wait_until(lambda: log.exists() and log.read_text().count("\n") >= 4,
               what="Envoy's access log")
    lines = log.read_text().splitlines()
    assert f"{TERMINATED} {CLIENT.spiffe_id} 200 " \
        "k8s.namespace.name=shop,k8s.deployment.name=web" in lines
    assert any(line.startswith(f"10.0.0.99:1 {CLIENT.spiffe_id} 404") for line in lines)


def test_envoy_originates_tunnels_that_serve_accepts(envoy: dict[str, Any]) -> None:
    ports = envoy["ports"]
    payload = bytes(range(256)) * (2 * 4096)  # 2 MiB

    async def main() -> None:
        app = await asyncio.start_server(echo, "127.0.0.1", 0)
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", ports["serve"]))
        listener.listen()
        context = hbone.server_context(SERVER.chain_pem, SERVER.key_pem, CA.roots_pem)
        requests: list[hbone.TunnelRequest] = []

        async def handler(request: hbone.TunnelRequest) -> Channel:
            requests.append(request)
            reader, writer = await asyncio.open_connection(*app.sockets[0].getsockname()[:2])
            return channels.TcpChannel(reader, writer)

        serving = asyncio.get_running_loop().create_task(
            hbone.serve(listener, lambda local: context, handler))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", ports["originate"])
            writer.write(payload)
            await writer.drain()
            assert await reader.readexactly(len(payload)) == payload
            writer.write_eof()  # the half close goes through Envoy and back
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
            listener.close()
            app.close()
        request, = requests
        assert request.peer_identities == (ENVOY.spiffe_id,)
        assert request.authority == ORIGINATED
        assert request.local == ("127.0.0.1", ports["serve"])
        assert hbone.parse_baggage([request.header("baggage")]) == {
            "namespace": "shop", "workload_name": "waypoint", "workload_type": "deployment"}

    asyncio.run(asyncio.wait_for(main(), 30))
