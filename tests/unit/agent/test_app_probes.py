"""The app's probes run by the agent for the kubelet (``agent/app_probes.py``), against
real listeners on loopback: an HTTP app, a bare TCP port, a gRPC health service; and
through the status server's routes, as injection points them."""

from __future__ import annotations

import json
import socket
from concurrent import futures

import anyio
import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from pilotfish.agent import app_probes
from pilotfish.agent.merged_metrics import MergedMetrics
from pilotfish.agent.status_server import StatusPorts, StatusServer
from pilotfish.core.http import HttpServer, Request, Response
from pilotfish.testing.processes import free_port


class _NoProxy:
    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the proxy was asked for {name}")


class _Control:
    draining = False


def _server(probers: dict[str, object]) -> StatusServer:
    admin = _NoProxy()
    return StatusServer(StatusPorts(), _Control(), admin,  # type: ignore[arg-type]
                        MergedMetrics(admin),  # type: ignore[arg-type]
                        probers=app_probes.load(json.dumps(probers)))


def _get(server: StatusServer, path: str) -> Response:
    return anyio.run(server.status_http.dispatch, Request("GET", path, {}, {}))


def test_http_probes_pass_the_apps_status_and_headers_through() -> None:
    seen: dict[str, str] = {}

    async def ready(request: Request) -> Response:
        seen.update(request.headers)
        return Response.text("ok\n")

    async def main() -> None:
        port = free_port()
        app = HttpServer({"/ready": ready, "/sick": lambda _: _sick()})
        async with anyio.create_task_group() as tg:
            await tg.start(app.serve, f"127.0.0.1:{port}")
            server = _server({
                "/app-health/app/readyz": {"httpGet": {
                    "path": "/ready", "port": port, "scheme": "HTTP",
                    "httpHeaders": [{"name": "x-probe", "value": "kubelet"}]}},
                "/app-health/app/livez": {"httpGet": {"path": "/sick", "port": port}},
                "/app-health/app/startupz": {"httpGet": {"path": "/", "port": free_port()},
                                             "timeoutSeconds": 1}})
            assert (await server.status_http.dispatch(
                Request("GET", "/app-health/app/readyz", {}, {}))).status == 200
            assert seen.get("x-probe") == "kubelet"
            assert (await server.status_http.dispatch(
                Request("GET", "/app-health/app/livez", {}, {}))).status == 503
            refused = await server.status_http.dispatch(
                Request("GET", "/app-health/app/startupz", {}, {}))
            assert refused.status == 500 and b"127.0.0.1" in refused.body
            tg.cancel_scope.cancel()
    anyio.run(main)


async def _sick() -> Response:
    return Response.text("not yet\n", 503)


def test_tcp_probes_are_200_when_the_port_accepts() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        server = _server({"/app-health/db/livez": {"tcpSocket": {"port": port}},
                          "/app-lifecycle/db/prestopz": {"tcpSocket": {"port": free_port()}}})
        assert _get(server, "/app-health/db/livez").status == 200
    assert _get(server, "/app-lifecycle/db/prestopz").status == 500


def test_grpc_probes_ask_the_health_service() -> None:
    port = free_port()
    servicer = health.HealthServicer()
    servicer.set("shop.Cart", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("shop.Slow", health_pb2.HealthCheckResponse.NOT_SERVING)
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, grpc_server)
    grpc_server.add_insecure_port(f"127.0.0.1:{port}")
    grpc_server.start()
    try:
        server = _server({
            "/app-health/cart/readyz": {"grpc": {"port": port, "service": "shop.Cart"}},
            "/app-health/cart/livez": {"grpc": {"port": port, "service": "shop.Slow"}}})
        assert _get(server, "/app-health/cart/readyz").status == 200
        sick = _get(server, "/app-health/cart/livez")
        assert sick.status == 500 and b"NOT_SERVING" in sick.body
    finally:
        grpc_server.stop(0)


def test_an_unknown_app_probe_is_not_found() -> None:
    assert _get(_server({}), "/app-health/app/readyz").status == 404


@pytest.mark.parametrize(("text", "names"), [
    ("{", "not JSON"),
    ("[]", "expected an object"),
    ('{"/healthz/ready": {"tcpSocket": {"port": 1}}}', "'/healthz/ready'"),
    ('{"/app-health/a/livez": {"exec": {"command": ["true"]}}}', "/app-health/a/livez"),
])
def test_probers_that_injection_did_not_write_are_refused_naming_what(text: str,
                                                                      names: str) -> None:
    with pytest.raises(app_probes.ProbersError, match="ISTIO_KUBE_APP_PROBERS") as refused:
        app_probes.load(text)
    assert names in str(refused.value)
