"""The native proxy's admin API, answering as Envoy's does where pilotfish reads it:
``/ready``, ``/server_info``, ``/config_dump``, ``/clusters``, ``/listeners``, ``/stats``,
``/stats/prometheus``, ``/logging``, ``/drain_listeners``, ``/quitquitquit``."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import anyio

from pilotfish.core.http import HttpServer, Request, Response
from pilotfish.core.istio_metrics import Workload
from pilotfish.core.istio_requests import IstioSeries
from pilotfish.core.native import compiled
from pilotfish.core.native.client_session import AdsSession, SecretSession
from pilotfish.core.native.proxy import NativeProxy
from pilotfish.core.native.stats import Stats
from pilotfish.core.native.workers import Workers
from pilotfish.core.xds import config_dump, types
from pilotfish.core.xds.resources import Resource, ResourceSet

LEVELS = ("trace", "debug", "info", "warning", "error", "critical", "off")


class Admin:
    def __init__(self, proxy: NativeProxy, session: AdsSession, node_id: str,
                 workload: Workload, secrets: SecretSession | None = None,
                 workers: Workers | None = None, bootstrap: Path | None = None) -> None:
        self.proxy = proxy
        self.bootstrap = bootstrap  # the file the proxy started from, for /config_dump
        self.workers = workers  # --concurrency: the other processes
        self.session = session
        self.secrets = secrets
        self.node_id = node_id
        self.workload = workload
        self.started = time.time()
        self.quit = anyio.Event()
        self.server = HttpServer({
            "/ready": self.ready, "/server_info": self.server_info,
            "/config_dump": self.config_dump, "/clusters": self.clusters,
            "/listeners": self.listeners, "/stats": self.stats,
            "/stats/prometheus": self.prometheus, "/logging": self.logging,
            "/drain_listeners": self.drain, "/quitquitquit": self.quitquitquit,
        })

    def not_ready(self) -> str:
        """Why the proxy does not hold its full configuration yet ("" when it does). As
        Envoy's, a listener waiting for its certificate does not hold the proxy back."""
        return self.session.ready()

    def state(self) -> str:
        if self.proxy.draining:
            return "DRAINING"
        return "PRE_INITIALIZING" if self.not_ready() else "LIVE"

    async def ready(self, request: Request) -> Response:
        state = self.state()
        return Response.text(f"{state}\n", 200 if state == "LIVE" else 503)

    async def server_info(self, request: Request) -> Response:
        return Response.json({
            "version": "pilotfish-native", "state": self.state(),
            "uptime_current_epoch": f"{int(time.time() - self.started)}s",
            "command_line_options": {"concurrency": 1 + len(
                self.workers.workers if self.workers else ())},
            "node": {"id": self.node_id},
            "not_ready": self.not_ready(),
            "rejected": dict(self.session.rejected),
            "warming": self.secrets.ready() if self.secrets else "",
            "secrets": sorted(n for n, s in self.proxy.state.secrets.items() if s),
            # pilotfish's own: whether the request path runs compiled (mypyc) or as Python
            "hot_path": compiled.report(),
        })

    async def config_dump(self, request: Request) -> Response:
        state = self.proxy.state
        sets = {}
        for type_url, resources in state.resources.items():
            if type_url == types.SECRET:
                continue  # private keys stay in the proxy
            sets[type_url] = ResourceSet(type_url, {
                name: Resource.from_message(name, type_url, message)
                for name, message in sorted(resources.items())})
        data: dict[str, Any] = config_dump.build(sets)
        data.setdefault("configs", []).append(self._secrets())
        if self.bootstrap is not None:  # first, as Envoy's dump has it
            try:
                started_from = json.loads(self.bootstrap.read_text())
            except (OSError, ValueError):
                started_from = None  # gone or rewritten since: nothing to show
            if isinstance(started_from, dict):
                data["configs"].insert(0, {
                    "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
                    "bootstrap": started_from})
        return Response.json(data)

    def _secrets(self) -> dict[str, Any]:
        """The SecretsConfigDump, private keys redacted as Envoy's are."""
        from envoy.admin.v3 import config_dump_pb2
        from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
        from google.protobuf import any_pb2, json_format

        dump = config_dump_pb2.SecretsConfigDump()
        version = self.proxy.state.versions.get(types.SECRET, "")
        for name, resource in sorted(self.proxy.state.resources[types.SECRET].items()):
            secret = secret_pb2.Secret()
            secret.CopyFrom(resource)
            if secret.HasField("tls_certificate"):
                secret.tls_certificate.private_key.Clear()
                secret.tls_certificate.private_key.inline_string = "[redacted]"
            packed = any_pb2.Any()
            packed.Pack(secret)
            dump.dynamic_active_secrets.add(name=name, version_info=version, secret=packed)
        packed_dump = any_pb2.Any()
        packed_dump.Pack(dump)
        return dict(json_format.MessageToDict(packed_dump, preserving_proto_field_name=True))

    async def clusters(self, request: Request) -> Response:
        if request.query.get("format") == "json":
            return Response.json(self.proxy.clusters_json())
        return Response.text(self.proxy.clusters_text())

    async def listeners(self, request: Request) -> Response:
        return Response.text(self.proxy.listeners_text())

    async def _totals(self) -> tuple[Stats, IstioSeries]:
        """The counters and Istio's series of every process serving."""
        self.proxy.refresh_gauges()
        if self.workers is None:
            return self.proxy.stats, self.proxy.istio
        return await self.workers.totals(self.proxy.stats, self.proxy.istio)

    async def stats(self, request: Request) -> Response:
        stats, _ = await self._totals()
        return Response.text(stats.text())

    async def prometheus(self, request: Request) -> Response:
        stats, istio = await self._totals()
        return Response(200, self.proxy.prometheus(self.workload, stats, istio).encode(),
                        "text/plain; version=0.0.4; charset=utf-8")

    async def logging(self, request: Request) -> Response:
        # One logger, ``native``: ``level=`` (every logger, as Envoy's) or ``native=`` set it.
        others = sorted(set(request.query) - {"level", "native"})
        if others:
            return Response.text(f"unknown logger {others[0]!r}: the native proxy has one "
                                 "logger, native (set it with level= or native=)\n", 400)
        level = request.query.get("level", request.query.get("native"))
        if level is not None:
            if level not in LEVELS:
                return Response.text(f"unknown level {level!r}: one of {', '.join(LEVELS)}\n",
                                     400)
            name = {"trace": "DEBUG", "off": "CRITICAL", "warning": "WARNING"}.get(
                level, level.upper())
            logging.getLogger("pilotfish.native").setLevel(name)
        current = logging.getLevelName(logging.getLogger("pilotfish.native").getEffectiveLevel())
        return Response.text(f"active loggers:\n  native: {current.lower()}\n")

    async def drain(self, request: Request) -> Response:
        if request.method != "POST":
            return Response.text("POST only\n", 405)
        self.proxy.drain()
        if self.workers is not None:
            await self.workers.drain()
        return Response.text("OK\n")

    async def quitquitquit(self, request: Request) -> Response:
        if request.method != "POST":
            return Response.text("POST only\n", 405)
        self.quit.set()
        return Response.text("OK\n")
