"""CONNECT tunnels through the native proxy, both ways, over real sockets: a tcp_proxy that
tunnels (Envoy's ``tunneling_config``) over HTTP/2 to an HTTP connection manager that
terminates CONNECT (``connect_matcher``, upgrade ``CONNECT``), and an HTTP/1.1 CONNECT
terminated the same way. The listeners and clusters are Envoy's protos, taken through the
same subset check and build as an xDS update."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format

from pilotfish.core.native.config import ConfigState
from pilotfish.core.native.proxy import NativeProxy
from pilotfish.core.xds import types
from pilotfish.testing.processes import free_port

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." \
    "HttpConnectionManager"
TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def static_cluster(name: str, port: int, h2: bool = False) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{
            "endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                        "port_value": port}}}}]}]}}
    if h2:
        cluster["typed_extension_protocol_options"] = {HTTP_OPTIONS: {
            "@type": f"type.googleapis.com/{HTTP_OPTIONS}",
            "explicit_http_config": {"http2_protocol_options": {}}}}
    return cluster


def listener(name: str, port: int, network: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "address": {"socket_address": {"address": "127.0.0.1",
                                                         "port_value": port}},
            "filter_chains": [{"filters": [{"name": name, "typed_config": network}]}]}


def terminating(port: int) -> dict[str, Any]:
    return listener("terminate", port, {
        "@type": HCM, "stat_prefix": "terminate",
        "upgrade_configs": [{"upgrade_type": "CONNECT"}],
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        "route_config": {"name": "tunnels", "virtual_hosts": [{
            "name": "db", "domains": ["db:5432"], "routes": [{
                "match": {"connect_matcher": {}},
                "route": {"cluster": "echo",
                          "upgrade_configs": [{"upgrade_type": "CONNECT",
                                               "connect_config": {}}]}}]}]}})


def tunneling(port: int) -> dict[str, Any]:
    return listener("originate", port, {
        "@type": TCP_PROXY, "stat_prefix": "originate", "cluster": "to-terminate",
        "tunneling_config": {"hostname": "db:5432"}})


async def echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def proxy_with(clusters: list[dict[str, Any]], listeners: list[dict[str, Any]]
                     ) -> NativeProxy:
    state = ConfigState()
    state.apply(types.CLUSTER, [(c["name"], json_format.ParseDict(
        c, cluster_pb2.Cluster()).SerializeToString()) for c in clusters], ())
    state.apply(types.LISTENER, [(item["name"], json_format.ParseDict(
        item, listener_pb2.Listener()).SerializeToString()) for item in listeners], ())
    proxy = NativeProxy(state)
    await proxy.reconcile()
    return proxy


def test_tcp_tunnels_over_http2_connect_to_a_terminating_manager():
    async def main() -> None:
        server, echo_port = await echo_server()
        outer, inner = free_port(), free_port()
        proxy = await proxy_with(
            [static_cluster("to-terminate", inner, h2=True), static_cluster("echo", echo_port)],
            [tunneling(outer), terminating(inner)])
        reader, writer = await asyncio.open_connection("127.0.0.1", outer)
        payload = bytes(range(256)) * 4096  # 1 MiB: past the stream's first windows
        writer.write(payload)
        await writer.drain()
        received = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
        assert received == payload
        writer.write_eof()  # a half close travels through the tunnel and back
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        stats = proxy.stats.counters
        assert stats["http.terminate.downstream_rq_http2_total"] == 1
        proxy.drain()
        server.close()

    asyncio.run(main())


def test_an_http1_connect_is_terminated_and_its_payload_relayed():
    async def main() -> None:
        server, echo_port = await echo_server()
        port = free_port()
        proxy = await proxy_with([static_cluster("echo", echo_port)], [terminating(port)])

        def client() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\nping")
                out = b""
                while len(out) < len(b"HTTP/1.1 200 OK\r\n\r\nping"):
                    out += sock.recv(1024)
                sock.sendall(b"CONNECT other:1 HTTP/1.1\r\n")  # just payload now
                want = b"CONNECT other:1 HTTP/1.1\r\n"
                echoed = b""
                while len(echoed) < len(want):
                    echoed += sock.recv(1024)
                return out + echoed

        got = await asyncio.get_running_loop().run_in_executor(None, client)
        assert got == b"HTTP/1.1 200 OK\r\n\r\nping" + b"CONNECT other:1 HTTP/1.1\r\n"
        # a CONNECT to an authority no route takes is refused
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"CONNECT elsewhere:1 HTTP/1.1\r\nHost: elsewhere:1\r\n\r\n")
        assert (await reader.readline()).startswith(b"HTTP/1.1 404")
        writer.close()
        proxy.drain()
        server.close()

    asyncio.run(main())
