"""The agent's merged scrape (``/stats/prometheus`` on the status port), as pilot-agent's.

One document, in this order: the agent's own metrics; the proxy's metrics as its backend
gives them (``ProxyAdmin.prometheus``: the proxy's own stats and Istio's standard metrics,
however that proxy produces them); then the app's own metrics when the pod asks for them
with ``prometheus.io/scrape: "true"`` annotations. A source that fails is counted in
``pilotfish_agent_scrape_failures_total`` and left out; the rest is still served, so one
slow app does not blank the proxy's metrics.

The proxy's text is passed through unchanged. An app family whose name the proxy already
uses is dropped (with a comment line saying so): two TYPE lines
for one name make Prometheus reject the whole scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import anyio
import attrs

from pilotfish.core import http_client, prometheus
from pilotfish.core.prometheus import Family, Sample
from pilotfish.core.proxy_backend import ProxyAdmin, ProxyError

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT = 5.0
APP_ACCEPT = "text/plain;version=0.0.4;q=1.0,application/openmetrics-text;q=0.5,*/*;q=0.1"


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


def combine(own: Sequence[Family], proxy_text: str, proxy: Sequence[Family],
            apps: Sequence[tuple[str, Sequence[Family]]]) -> str:
    """The merged document. Later sources lose name collisions (see the module doc)."""
    taken: set[str] = set()
    for family in (*own, *proxy):
        taken |= family.sample_names()
    parts = [prometheus.render(own), proxy_text.rstrip("\n") + "\n" if proxy_text else ""]
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
    """Scrapes the sources for one request."""

    proxy: ProxyAdmin
    app_urls: Sequence[str] = ()
    version: str = "unknown"
    failures: dict[str, int] = attrs.Factory(lambda: {"proxy": 0, "app": 0})

    async def scrape(self, query: str = "") -> str:
        proxy_text, proxy, apps = "", [], []

        async def scrape_proxy() -> None:
            nonlocal proxy_text, proxy
            try:
                text = await self.proxy.prometheus(query)
            except ProxyError as exc:
                self._failed("proxy", str(exc))
                return
            proxy_text, proxy = text, self._parse(text, "proxy")

        async def scrape_app(url: str) -> None:
            text = await self._fetch(url, "app", [("Accept", APP_ACCEPT)])
            if text is not None:
                apps.append((url, self._parse(text, "app", url)))

        async with anyio.create_task_group() as tg:
            tg.start_soon(scrape_proxy)
            for url in self.app_urls:
                tg.start_soon(scrape_app, url)
        apps.sort(key=lambda item: list(self.app_urls).index(item[0]))
        return combine(self._own(), proxy_text, proxy, apps)

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

    def _own(self) -> list[Family]:
        return [
            Family("istio_build", "gauge", "Build of this proxy's agent.", (
                Sample("istio_build", (("component", "proxy"), ("tag", self.version)), "1"),)),
            Family("pilotfish_agent_scrape_failures_total", "counter",
                   "Merged-scrape sources that failed, by source.", tuple(
                       Sample("pilotfish_agent_scrape_failures_total", (("source", k),), str(v))
                       for k, v in sorted(self.failures.items()))),
        ]
