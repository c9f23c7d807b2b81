"""The app's own probes and lifecycle hooks, run by the agent for the kubelet.

Injection points an app's HTTP, TCP and gRPC probes (and HTTP/TCP ``preStop`` /
``postStart`` hooks) at the agent's status port — ``/app-health/CONTAINER/readyz`` and so
on — because with mutual TLS the kubelet could not reach the app's ports itself; the
originals reach the agent as JSON in ``ISTIO_KUBE_APP_PROBERS``, by URL. Here each is run
as the kubelet would run it, against the pod's address (as pilot-agent does by default):
an HTTP probe's answer status is passed back (the kubelet takes 200 to 399 as success), a TCP
probe is 200 when the port accepts, a gRPC probe 200 when the health service says SERVING;
anything else is 500 with the reason. The agent runs as the proxy's user, whose traffic
iptables leaves alone, so the probe reaches the app directly.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from typing import Any

import anyio
import attrs

from pilotfish.core import http_client

ENV = "ISTIO_KUBE_APP_PROBERS"
DEFAULT_TIMEOUT = 1.0  # seconds: the kubelet's default timeoutSeconds


class ProbersError(ValueError):
    """``ISTIO_KUBE_APP_PROBERS`` is not what injection writes; the message says where."""


@attrs.frozen
class Answer:
    status: int
    body: str


def load(text: str) -> dict[str, dict[str, Any]]:
    """The probers by URL path, from the environment variable's JSON ({} when empty)."""
    if not text.strip():
        return {}
    try:
        found = json.loads(text)
    except ValueError as exc:
        raise ProbersError(f"{ENV}: not JSON: {exc}") from None
    if not isinstance(found, dict):
        raise ProbersError(f"{ENV}: expected an object of probes by URL path")
    for path, prober in found.items():
        if not str(path).startswith(("/app-health/", "/app-lifecycle/")):
            raise ProbersError(f"{ENV}: {path!r}: expected /app-health/... or "
                               "/app-lifecycle/...")
        if not isinstance(prober, dict) or not any(
                isinstance(prober.get(kind), dict) for kind in ("httpGet", "tcpSocket", "grpc")):
            raise ProbersError(f"{ENV}: {path}: expected httpGet, tcpSocket or grpc")
    return found


async def run(prober: Mapping[str, Any], pod_ip: str) -> Answer:
    """Run one probe against the app at ``pod_ip`` (or the host it names)."""
    timeout = float(prober.get("timeoutSeconds") or DEFAULT_TIMEOUT)
    if isinstance(prober.get("httpGet"), Mapping):
        return await _http(prober["httpGet"], pod_ip, timeout)
    if isinstance(prober.get("tcpSocket"), Mapping):
        return await _tcp(prober["tcpSocket"], pod_ip, timeout)
    return await _grpc(prober["grpc"], pod_ip, timeout)


def _host(action: Mapping[str, Any], pod_ip: str) -> str:
    host = str(action.get("host") or pod_ip)
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def _http(action: Mapping[str, Any], pod_ip: str, timeout: float) -> Answer:
    scheme = str(action.get("scheme") or "HTTP").lower()
    path = str(action.get("path") or "/")
    url = f"{scheme}://{_host(action, pod_ip)}:{action.get('port')}" + (
        path if path.startswith("/") else f"/{path}")
    headers = [(str(h.get("name")), str(h.get("value")))
               for h in action.get("httpHeaders") or () if isinstance(h, Mapping)]
    context = None
    if scheme == "https":  # as the kubelet: encrypted, not verified
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        reply = await http_client.request(url, timeout=timeout, headers=headers,
                                          ssl_context=context)
    except (http_client.HttpClientError, ValueError) as exc:
        return Answer(500, f"{url}: {exc}")
    return Answer(reply.status, f"{url}: {reply.status}")


async def _tcp(action: Mapping[str, Any], pod_ip: str, timeout: float) -> Answer:
    host, port = str(action.get("host") or pod_ip), int(action.get("port") or 0)
    try:
        with anyio.fail_after(timeout):
            stream = await anyio.connect_tcp(host, port)
        await stream.aclose()
    except (OSError, TimeoutError) as exc:
        return Answer(500, f"tcp {host}:{port}: {exc or 'timed out'}")
    return Answer(200, f"tcp {host}:{port}: open")


async def _grpc(action: Mapping[str, Any], pod_ip: str, timeout: float) -> Answer:
    import grpc  # the health service's client only when an app asks for it
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = f"{_host(action, pod_ip)}:{action.get('port')}"
    service = str(action.get("service") or "")
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        return Answer(500, f"grpc {target}: {exc.code().name}: {exc.details()}")
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return Answer(200 if reply.status == health_pb2.HealthCheckResponse.SERVING else 500,
                  f"grpc {target}: {status}")
