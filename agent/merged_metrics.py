"""The agent's merged scrape (``/stats/prometheus`` on the status port), as pilot-agent's.

One document, in this order: the agent's own metrics; the proxy's Prometheus stats as the
proxy wrote them; Istio's standard metrics from the proxy's access-log entries
(``request_metrics``; left out when the proxy exports ``istio_*`` itself, as the native
proxy does); then the app's own metrics when the pod asks for them with
``prometheus.io/scrape: "true"`` annotations. A source that fails is counted in
``pilotfish_agent_scrape_failures_total`` and left out; the rest is still served, so one
slow app does not blank the proxy's metrics.

The proxy's text is passed through unchanged. An app family whose name the proxy or the
derived metrics already use is dropped (with a comment line saying so): two TYPE lines
for one name make Prometheus reject the whole scrape.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import anyio
import attrs

from pilotfish.core import http_client, istio_metrics, prometheus
from pilotfish.core.istio_metrics import ServiceRef, Workload
from pilotfish.core.prometheus import Family, Sample
from pilotfish.plugins.envoy.request_metrics import RequestMetrics

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT = 5.0
APP_ACCEPT = "text/plain;version=0.0.4;q=1.0,application/openmetrics-text;q=0.5,*/*;q=0.1"
CLUSTERS_TARGET = "/config_dump?resource=dynamic_active_clusters&mask=" + quote(
    "cluster.name,cluster.metadata")


def app_metrics_url(annotations: Mapping[str, str], host: str = "127.0.0.1") -> str | None:
    """Where the app's metrics are, from Prometheus' pod annotations; None if not scraped.

    The agent scrapes from inside the pod, so the host is the loopback address, as in
    Istio. ``prometheus.io/path`` defaults to ``/metrics``; only plain HTTP is spoken.
    """
    if str(annotations.get("prometheus.io/scrape", "")).lower() != "true":
        return None
    port = str(annotations.get("prometheus.io/port", "")).strip()
    if not port:
        return None  # Prometheus would try every container port; the agent cannot guess
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"annotation prometheus.io/port: {port!r} is not a port number")
    scheme = str(annotations.get("prometheus.io/scheme", "http")).lower()
    if scheme != "http":
        raise ValueError(f"annotation prometheus.io/scheme: {scheme!r}: the agent scrapes "
                         "apps over plain http only")
    path = str(annotations.get("prometheus.io/path") or "/metrics")
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}{path if path.startswith('/') else '/' + path}"


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


def combine(own: Sequence[Family], proxy_text: str, proxy: Sequence[Family],
            derived: Sequence[Family], apps: Sequence[tuple[str, Sequence[Family]]]) -> str:
    """The merged document. Later sources lose name collisions (see the module doc)."""
    taken: set[str] = set()
    for family in (*own, *proxy, *derived):
        taken |= family.sample_names()
    parts = [prometheus.render(own), proxy_text.rstrip("\n") + "\n" if proxy_text else "",
             prometheus.render(derived)]
    for url, families in apps:
        kept = []
        for family in families:
            if family.sample_names() & taken:
                parts.append(f"# pilotfish: {url}: family {family.name} dropped, "
                             "its name is already in use\n")
                continue
            taken |= family.sample_names()
            kept.append(family)
        parts.append(prometheus.render(kept))
    return "".join(parts)


@attrs.define
class MergedMetrics:
    """Scrapes the sources for one request; keeps the cluster metadata between scrapes."""

    admin_url: str
    workload: Workload
    app_urls: Sequence[str] = ()
    version: str = "unknown"
    # Istio's request metrics, fed by the agent's access-log service.
    requests: RequestMetrics = attrs.Factory(RequestMetrics)
    services: dict[str, ServiceRef | None] = attrs.Factory(dict)
    failures: dict[str, int] = attrs.Factory(lambda: {"proxy": 0, "app": 0})

    async def scrape(self, query: str = "") -> str:
        proxy_text, proxy, apps = "", [], []

        async def scrape_proxy() -> None:
            nonlocal proxy_text, proxy
            text = await self._fetch(f"{self.admin_url}/stats/prometheus"
                                     + (f"?{query}" if query else ""), "proxy")
            if text is not None:
                proxy_text, proxy = text, self._parse(text, "proxy")

        async def scrape_app(url: str) -> None:
            text = await self._fetch(url, "app", [("Accept", APP_ACCEPT)])
            if text is not None:
                apps.append((url, self._parse(text, "app", url)))

        async with anyio.create_task_group() as tg:
            tg.start_soon(scrape_proxy)
            for url in self.app_urls:
                tg.start_soon(scrape_app, url)
        derived: list[Family] = []
        if not istio_metrics.exports_istio(proxy):
            await self._refresh_services(self.requests.clusters())
            derived = self.requests.families(self.workload, self.services)
        apps.sort(key=lambda item: list(self.app_urls).index(item[0]))
        return combine(self._own(), proxy_text, proxy, derived, apps)

    async def _fetch(self, url: str, source: str,
                     headers: Sequence[tuple[str, str]] = ()) -> str | None:
        try:
            reply = await http_client.request(url, timeout=SCRAPE_TIMEOUT, headers=headers)
        except http_client.HttpClientError as exc:
            self._failed(source, str(exc))
            return None
        if reply.status != 200:
            self._failed(source, f"{url}: HTTP {reply.status}")
            return None
        return reply.text

    def _parse(self, text: str, source: str, url: str = "") -> list[Family]:
        try:
            return prometheus.parse(text, url or source)
        except prometheus.PrometheusFormatError as exc:
            self._failed(source, str(exc))
            return []

    def _failed(self, source: str, reason: str) -> None:
        self.failures[source] += 1
        log.warning("metrics scrape: %s", reason)

    async def _refresh_services(self, clusters: set[str]) -> None:
        missing = clusters - self.services.keys()
        if not missing:
            return
        try:
            reply = await http_client.request(self.admin_url + CLUSTERS_TARGET,
                                              timeout=SCRAPE_TIMEOUT)
            found = services_from_config_dump(json.loads(reply.body))
        except (http_client.HttpClientError, ValueError) as exc:
            log.warning("metrics scrape: cluster metadata: %s", exc)
            return  # names alone still give the service; try again next scrape
        # Replaced, not merged: the cache holds today's clusters only.
        self.services = {**dict.fromkeys(missing), **found}

    def _own(self) -> list[Family]:
        return [
            Family("istio_build", "gauge", "Build of this proxy's agent.", (
                Sample("istio_build", (("component", "proxy"), ("tag", self.version)), "1"),)),
            Family("pilotfish_agent_scrape_failures_total", "counter",
                   "Merged-scrape sources that failed, by source.", tuple(
                       Sample("pilotfish_agent_scrape_failures_total", (("source", k),), str(v))
                       for k, v in sorted(self.failures.items()))),
            *self.requests.statistics(),
        ]
