"""The agent's status server: Istio's ports 15020 (status) and 15021 (health).

Status port: ``/healthz/ready``, the merged scrape on ``/stats/prometheus`` (and
``/metrics``), and, only from localhost as in pilot-agent, two controls —
``POST /quitquitquit`` (stop as on SIGTERM: drain, wait, stop the proxy, exit) and
``POST /drain`` (start draining now and keep running — a preStop hook's job) — and
``GET /config_dump``, what the proxy runs in Envoy's shape, whichever proxy it is. And
the app's own probes and hooks that injection pointed here (``/app-health/...``,
``/app-lifecycle/...``; ``app_probes``), run against the app for the kubelet.

Readiness, metrics, the dump and the drain are asked of the proxy backend's
``ProxyAdmin``: this module names no proxy's stat or endpoint.

Health port: ``/healthz/ready`` only, which is what Kubernetes probes and what
``pilotfish agent wait`` polls. pilot-agent has Envoy serve this port and route it back
to the agent, so a probe also proves Envoy is forwarding. Here the agent serves it:
before the proxy is LIVE, Envoy's listeners are bound but accept nothing, so a probe
through Envoy would time out where this one answers 503 with the reason; and a native
proxy needs no such listener. A proxy that dies takes the agent with it (the supervisor
exits with it), so readiness cannot outlive the proxy either way.

Both listen on the pod's own address (the kubelet probes there) and on loopback (``agent
wait`` and the controls come from inside the pod), never on every address: an agent in a
host's network namespace must not open its ports on the host's other interfaces.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from collections.abc import Mapping
from importlib import metadata
from typing import Any, Protocol

import anyio
import anyio.abc
import attrs

from pilotfish.agent import app_probes
from pilotfish.agent.merged_metrics import MergedMetrics
from pilotfish.agent.readiness import Readiness, Verdict
from pilotfish.core import http_client
from pilotfish.core.http import HttpServer, Request, Response
from pilotfish.core.prometheus import CONTENT_TYPE
from pilotfish.core.proxy_backend import ProxyAdmin, ProxyError, ProxyOptions, ProxyStatus

log = logging.getLogger(__name__)

READY_TIMEOUT = 3.0  # pilot-agent's timeout for asking the proxy behind a probe


class StatusServerError(Exception):
    """A status or health port cannot be served; the message names the flag."""


class AgentControl(Protocol):
    """What the status server may ask of the agent (``supervisor.Supervisor``)."""

    @property
    def draining(self) -> bool: ...

    def request_stop(self) -> None: ...

    async def drain(self) -> None: ...


@attrs.frozen
class StatusPorts:
    status: int = 15020  # 0: no status server
    health: int = 15021  # 0: no health port
    hosts: tuple[str, ...] = ("127.0.0.1",)  # the pod's address, then loopback


def listen_hosts(ip: str) -> tuple[str, ...]:
    """The pod's address and its family's loopback (once, when they are the same)."""
    loopback = "::1" if ":" in ip else "127.0.0.1"
    return (ip,) if ipaddress.ip_address(ip).is_loopback else (ip, loopback)


def is_local(host: str) -> bool:
    """Whether a request came over loopback (``host``: the peer's address)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


class StatusServer:
    def __init__(self, ports: StatusPorts, control: AgentControl, admin: ProxyAdmin,
                 metrics: MergedMetrics, secrets: tuple[str, ...] = (),
                 probers: Mapping[str, Mapping[str, Any]] | None = None,
                 pod_ip: str = "127.0.0.1") -> None:
        self.ports, self.control, self.admin, self.metrics = ports, control, admin, metrics
        self.readiness = Readiness(secrets)
        self.probers, self.pod_ip = dict(probers or {}), pod_ip
        self.status_http = HttpServer({
            "/healthz/ready": self.ready,
            "/stats/prometheus": self.prometheus,
            "/metrics": self.prometheus,
            "/config_dump": self.config_dump,
            "/quitquitquit": self.quit,
            "/drain": self.drain,
            **dict.fromkeys(self.probers, self.app_probe),
        })
        self.health_http = HttpServer({"/healthz/ready": self.ready})

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Listen on the enabled ports, serving in ``tg``; returns once both are bound."""
        for port, server, flag in ((self.ports.status, self.status_http, "--status-port"),
                                   (self.ports.health, self.health_http, "--health-port")):
            if not port:
                continue
            for host in self.ports.hosts:
                address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                try:
                    await tg.start(server.serve, address)
                except OSError as exc:
                    raise StatusServerError(
                        f"{flag} {port}: cannot listen on {address}: {exc.strerror or exc}; "
                        "choose another port, or 0 to turn it off") from exc
                log.info("%s: serving on %s", flag.removeprefix("--"), address)

    async def check(self) -> Verdict:
        """Ask the proxy how it is and decide (see ``readiness``)."""
        self.readiness.draining = self.control.draining
        if self.readiness.draining:
            return self.readiness.decide(ProxyStatus())
        try:
            with anyio.fail_after(READY_TIMEOUT):
                status = await self.admin.status(self.readiness.full)
        except ProxyError as exc:
            return self.readiness.unreachable(str(exc))
        except TimeoutError:
            return self.readiness.unreachable(f"no answer within {READY_TIMEOUT:g}s")
        return self.readiness.decide(status)

    async def ready(self, request: Request) -> Response:
        verdict = await self.check()
        return Response.text(verdict.reason + "\n", 200 if verdict.ready else 503)

    async def prometheus(self, request: Request) -> Response:
        text = await self.metrics.scrape(request.query_string)
        return Response(200, text.encode(), CONTENT_TYPE)

    async def config_dump(self, request: Request) -> Response:
        if request.method != "GET":
            return Response(405, f"{request.path}: use GET\n".encode(),
                            headers=(("allow", "GET"),))
        if not is_local(request.peer_host):
            return Response.text(f"{request.path}: only allowed from localhost\n", 403)
        try:
            dump = await self.admin.config_dump()
        except ProxyError as exc:
            return Response.text(f"could not read the proxy's config: {exc}\n", 502)
        return Response.json(dump)

    async def quit(self, request: Request) -> Response:
        refused = _refuse(request)
        if refused is not None:
            return refused
        log.info("%s from %s: stopping", request.path, request.peer)
        self.control.request_stop()
        return Response.text("OK\n")

    async def app_probe(self, request: Request) -> Response:
        """One of the app's probes or hooks, run now (``app_probes``)."""
        answer = await app_probes.run(self.probers[request.path], self.pod_ip)
        if answer.status >= 400:
            log.info("%s: %s", request.path, answer.body)
        return Response.text(answer.body + "\n", answer.status)

    async def drain(self, request: Request) -> Response:
        refused = _refuse(request)
        if refused is not None:
            return refused
        log.info("%s from %s: draining", request.path, request.peer)
        try:
            await self.control.drain()
        except ProxyError as exc:
            return Response.text(f"could not drain: {exc}\n", 500)
        return Response.text("OK\n")


def _refuse(request: Request) -> Response | None:
    """Controls are POST-only and local-only, as pilot-agent's."""
    if request.method != "POST":
        return Response(405, f"{request.path}: use POST\n".encode(),
                        headers=(("allow", "POST"),))
    if not is_local(request.peer_host):
        return Response.text(f"{request.path}: only allowed from localhost\n", 403)
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--status-port", type=int, default=15020,
        help="agent status port: /healthz/ready, merged /stats/prometheus, /quitquitquit, "
             "/drain (default: 15020; 0: off)")
    add("--health-port", type=int, default=15021,
        help="readiness port, /healthz/ready only (default: 15021; 0: off)")
    add("--app-metrics", action="append", default=[], metavar="URL",
        help="the app's Prometheus endpoint, merged into /stats/prometheus (repeatable; "
             "merged_metrics.app_metrics_url builds it from prometheus.io/* annotations)")


def check_args(args: argparse.Namespace) -> None:
    """ValueError naming the flag, for ports and URLs the server could not use."""
    for flag in ("status_port", "health_port", "prometheus_port"):
        value = getattr(args, flag, None)
        if value is not None and not 0 <= value < 65536:
            raise ValueError(f"--{flag.replace('_', '-')} {value}: expected a port from 1 to "
                             "65535, or 0 to turn it off")
    for url in args.app_metrics:
        try:
            http_client.split_url(url)
        except ValueError as exc:
            raise ValueError(f"--app-metrics {exc}") from None
    app_probes.load(os.environ.get(app_probes.ENV, ""))


def from_args(args: argparse.Namespace, options: ProxyOptions, control: AgentControl,
              admin: ProxyAdmin, secrets: tuple[str, ...] = ()) -> StatusServer | None:
    """The server the flags ask for; None when both ports are off."""
    if not args.status_port and not args.health_port:
        return None
    try:
        version = metadata.version("pilotfish")
    except metadata.PackageNotFoundError:  # running from a source tree
        version = "unknown"
    metrics = MergedMetrics(admin, args.app_metrics, version)
    ports = StatusPorts(args.status_port, args.health_port, listen_hosts(options.ip))
    return StatusServer(ports, control, admin, metrics, secrets,
                        app_probes.load(os.environ.get(app_probes.ENV, "")), options.ip)
