"""The agent's line to one running Envoy: its admin API, and the access-log service beside it.

Everything here is what makes Envoy Envoy to the agent (``ProxyAdmin``): readiness from
Envoy's stats (``readiness``), the Prometheus text from ``/stats/prometheus`` followed by
Istio's standard metrics, which stock Envoy cannot count itself and sends as access-log
entries to the agent (``access_log_service``, ``request_metrics``), the config dump from
``/config_dump``, and a drain through ``/drain_listeners``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import anyio.abc

from pilotfish.core import http_client, istio_metrics, prometheus
from pilotfish.core.istio_metrics import ServiceRef, Workload
from pilotfish.core.proxy_backend import ProxyError, ProxyOptions, ProxyStatus, config_dump_object
from pilotfish.plugins.envoy import readiness
from pilotfish.plugins.envoy.access_log_service import AccessLogServer
from pilotfish.plugins.envoy.request_metrics import RequestMetrics
from pilotfish.plugins.envoy.stats_table import (
    HEADER,
    ROW_SIZE,
    TABLE_FILE,
    TableError,
    TableFolder,
    header_rows,
    parse,
)

log = logging.getLogger("pilotfish.envoy")

ADMIN_TIMEOUT = 5.0
READY_TIMEOUT = 3.0  # pilot-agent's timeout for the stats request behind a probe
CLUSTERS_TARGET = "/config_dump?resource=dynamic_active_clusters&mask=" + quote(
    "cluster.name,cluster.metadata")


def services_from_config_dump(data: Any) -> dict[str, ServiceRef | None]:
    """Cluster name → the service in its ``istio`` metadata, from a masked config dump."""
    out: dict[str, ServiceRef | None] = {}
    for entry in data.get("configs", []) if isinstance(data, dict) else []:
        cluster = entry.get("cluster") or {}
        name = cluster.get("name")
        if not name:
            continue
        services = (cluster.get("metadata", {}).get("filter_metadata", {})
                    .get("istio", {}).get("services") or [])
        first = services[0] if services and isinstance(services[0], dict) else None
        out[name] = None if first is None or not first.get("host") else ServiceRef(
            str(first["host"]), str(first.get("name") or first["host"]),
            str(first.get("namespace") or istio_metrics.UNKNOWN))
    return out


def read_table(path: Path) -> bytes:
    """The module's table file up to its last published row."""
    with path.open("rb") as file:
        head = file.read(HEADER.size)
        try:
            rows = header_rows(head)
        except TableError:
            return head
        return head + file.read(rows * ROW_SIZE)


class EnvoyAdmin:
    """One Envoy, as the agent asks about it."""

    def __init__(self, options: ProxyOptions) -> None:
        self.options = options
        self.workload = Workload.of(options)
        # Istio's request metrics, fed by the access-log service and, where the listeners
        # count inside Envoy (``translators/stats_module.py``), by the module's table.
        self.requests = RequestMetrics()
        self.table = TableFolder(self.requests)
        self.services: dict[str, ServiceRef | None] = {}

    async def request(self, method: str, target: str,
                      timeout: float = ADMIN_TIMEOUT) -> http_client.HttpReply:
        """One admin request; a transport failure or a non-200 answer is a ProxyError."""
        url = f"{self.options.admin_url}{target}"
        try:
            reply = await http_client.request(url, method, timeout=timeout)
        except http_client.HttpClientError as exc:
            raise ProxyError(f"Envoy's admin API: {exc.reason}") from exc
        if reply.status != 200:
            raise ProxyError(f"{url}: HTTP {reply.status}: {reply.text.strip()}")
        return reply

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]
                    = anyio.TASK_STATUS_IGNORED) -> None:
        """The access-log service Envoy's bootstrap points at, until cancelled."""
        sink = AccessLogServer(self.options.als_socket, self.requests)
        try:
            await sink.serve(task_status=task_status)
        except OSError as exc:
            raise ProxyError(str(exc)) from exc

    async def status(self, full: bool) -> ProxyStatus:
        filter_ = quote(readiness.stats_filter(full))
        reply = await self.request("GET", f"/stats?filter={filter_}", timeout=READY_TIMEOUT)
        return readiness.status_from_stats(readiness.parse_stats(reply.text), full,
                                           self.options.discovery_address)

    async def prometheus(self, query: str = "") -> str:
        reply = await self.request("GET", "/stats/prometheus" + (f"?{query}" if query else ""))
        self._fold_table()
        await self._refresh_services(self.requests.clusters())
        derived = self.requests.families(self.workload, self.services)
        text = reply.text
        return (text.rstrip("\n") + "\n" if text else "") + prometheus.render(
            [*derived, *self.requests.statistics(), *self.table.statistics()])

    def _fold_table(self) -> None:
        """Add what Envoy's metrics module counted since the last scrape (a few KiB read
        from a file in the config dir; absent when the module is not in use)."""
        path = self.options.config_dir / TABLE_FILE
        try:
            data = read_table(path)
        except OSError:
            return
        try:
            self.table.fold(parse(data))
        except TableError as exc:
            log.warning("%s: %s", path, exc)

    async def config_dump(self) -> dict[str, Any]:
        reply = await self.request("GET", "/config_dump")
        return config_dump_object(reply.body, "Envoy")

    async def drain(self) -> None:
        # Sidecars keep outbound listeners so in-flight requests can still call out;
        # routers have no such split and drain everything.
        target = "/drain_listeners?graceful"
        if self.options.proxy_type == "sidecar":
            target += "&inboundonly"
        await self.request("POST", target)

    async def _refresh_services(self, clusters: set[str]) -> None:
        missing = clusters - self.services.keys()
        if not missing:
            return
        try:
            reply = await self.request("GET", CLUSTERS_TARGET)
            found = services_from_config_dump(json.loads(reply.body))
        except (ProxyError, ValueError):
            return  # names alone still give the service; try again next scrape
        # Replaced, not merged: the cache holds today's clusters only.
        self.services = {**dict.fromkeys(missing), **found}
