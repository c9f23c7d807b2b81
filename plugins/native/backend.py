"""The ``native`` proxy backend: pilotfish's own proxy (``pilotfish.core.native``).

Registered through the entry point ``native`` in group ``pilotfish.proxies``. It takes the
same bootstrap as Envoy (the agent writes one file either way) and answers the agent
through the same admin API shape, so readiness, metrics, ``proxy-config`` and drains work
unchanged. What it supports of Envoy's API, and what it refuses: docs/native.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pilotfish.core import http_client
from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.proxy_backend import (
    BootstrapError,
    NothingBeside,
    ProxyError,
    ProxyOptions,
    ProxyStatus,
    config_dump_object,
)
from pilotfish.plugins.envoy.backend import CHECK_TIMEOUT, EnvoyBackend

ADMIN_TIMEOUT = 5.0
PROGRAM = [sys.executable, "-m", "pilotfish.core.native"]


class NativeAdmin(NothingBeside):
    """One native proxy, as the agent asks about it."""

    def __init__(self, options: ProxyOptions) -> None:
        self.options = options

    async def request(self, method: str, target: str) -> http_client.HttpReply:
        url = f"{self.options.admin_url}{target}"
        try:
            return await http_client.request(url, method, timeout=ADMIN_TIMEOUT)
        except http_client.HttpClientError as exc:
            raise ProxyError(f"the native proxy's admin API: {exc.reason}") from exc

    async def status(self, full: bool) -> ProxyStatus:
        reply = await self.request("GET", "/server_info")
        try:
            info = json.loads(reply.body)
        except ValueError as exc:
            raise ProxyError(f"the native proxy's /server_info is not JSON: {exc}") from exc
        serving = "" if info.get("state") == "LIVE" else str(info.get("state", "starting"))
        return ProxyStatus(serving=serving if info.get("state") == "DRAINING" else "",
                           config=str(info.get("not_ready") or ""),
                           secrets=frozenset(info.get("secrets") or ()))

    async def prometheus(self, query: str = "") -> str:
        reply = await self.request("GET", "/stats/prometheus")
        return reply.text

    async def config_dump(self) -> dict[str, Any]:
        reply = await self.request("GET", "/config_dump")
        return config_dump_object(reply.body, "the native proxy")

    async def drain(self) -> None:
        await self.request("POST", "/drain_listeners")


class NativeBackend(EnvoyBackend):
    """The bootstrap is Envoy's (``EnvoyBackend``); the process and its admin are ours."""

    name = "native"
    # The native proxy counts Istio's metrics itself; Envoy's metrics module is Envoy's.
    metrics_module = False

    def check(self, path: Path) -> None:
        try:
            result = subprocess.run([*PROGRAM, "--check", "-c", str(path)],
                                    capture_output=True, text=True, timeout=CHECK_TIMEOUT,
                                    check=False)
        except subprocess.TimeoutExpired:
            raise BootstrapError(f"{path}: the native proxy did not check it within "
                                 f"{CHECK_TIMEOUT:.0f}s") from None
        if result.returncode != 0:
            raise BootstrapError(result.stderr.strip() or f"{path}: rejected")

    def command(self, options: ProxyOptions, path: Path) -> list[str]:
        # processes sharing the listeners, as Envoy's worker threads (0: one per CPU); one
        # unless asked, since breakers and outlier detection count per process
        concurrency = 1 if options.concurrency is None else \
            (options.concurrency or os.cpu_count() or 1)
        return [*PROGRAM, "-c", str(path), "-l", options.log_level,
                "--concurrency", str(concurrency)]

    def admin(self, options: ProxyOptions) -> NativeAdmin:  # type: ignore[override]
        return NativeAdmin(options)


@hookimpl
def pilotfish_proxy_backend() -> NativeBackend:
    return NativeBackend()
