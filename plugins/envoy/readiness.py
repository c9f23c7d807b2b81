"""What Envoy's stats say about readiness, as pilot-agent reads them. Sans-IO.

The admin handle fetches ``/stats?filter=<stats_filter(full)>`` and turns the text into a
``ProxyStatus`` with ``status_from_stats``; the agent's readiness latch (``agent/readiness``)
decides from that, knowing nothing of Envoy.

A first full configuration is accepted when Envoy is LIVE with its workers started and its
counters show an accepted update. Envoy's own LIVE is not enough: every ADS config source
(bootstrap and generated) has ``initial_fetch_timeout: 0s``, so Envoy waits for its first
CDS, EDS, LDS and RDS before going LIVE — but it also goes LIVE when that first update was
*rejected* (it lets the server start on a bad config rather than hang). So the counters must
show CDS and LDS ``update_success`` above zero, and no RDS subscription or EDS cluster whose
updates were all rejected. Once ready, only ``server.state`` is asked (``full=False``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping

from pilotfish.core.proxy_backend import ProxyStatus

CONFIG_FILTER = (
    r"^(server\.state|listener_manager\.workers_started|control_plane\.connected_state"
    r"|cluster_manager\.cds\.update_(success|rejected)"
    r"|listener_manager\.lds\.update_(success|rejected)"
    r"|http\..+\.rds\..+\.update_(success|rejected)"
    r"|cluster\..+\.update_(success|rejected)"
    r"|sds\..+\.update_success)$"
)
LIVE_FILTER = r"^server\.state$"

_RDS = re.compile(r"^http\.(?P<hcm>.+)\.rds\.(?P<route>.+)\.update_(?P<what>success|rejected)\Z")
_EDS = re.compile(r"^cluster\.(?P<cluster>.+)\.update_(?P<what>success|rejected)\Z")
_SDS = re.compile(r"^sds\.(?P<secret>.+)\.update_success\Z")


class ServerState(enum.IntEnum):
    """Envoy's ``server.state`` gauge (admin ``ServerInfo.State``)."""

    LIVE = 0
    DRAINING = 1
    PRE_INITIALIZING = 2
    INITIALIZING = 3


def stats_filter(full: bool) -> str:
    return CONFIG_FILTER if full else LIVE_FILTER


def parse_stats(text: str) -> dict[str, int]:
    """Envoy's ``/stats`` text (``name: value`` lines) → the integer-valued ones."""
    stats: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.rpartition(": ")
        if sep and value.strip().lstrip("-").isdigit():
            stats[name.strip()] = int(value)
    return stats


def _stat_name(name: str) -> str:
    # The cluster part of an alt_stat_name ends with ';' (Istio's delimiter).
    return name.removesuffix(";")


def config_problem(stats: Mapping[str, int], discovery: str) -> str:
    """Why the proxy has no accepted configuration yet, or "" if it has one."""
    for xds, prefix in (("CDS", "cluster_manager.cds"), ("LDS", "listener_manager.lds")):
        if stats.get(f"{prefix}.update_success", 0) > 0:
            continue
        rejected = stats.get(f"{prefix}.update_rejected", 0)
        if rejected:
            return (f"config received from discovery at {discovery}, but the proxy rejected "
                    f"it ({xds}, {rejected} times); pilotfish proxy-status shows why")
        if stats.get("control_plane.connected_state", 0) == 0:
            return (f"config not received: not connected to discovery at {discovery} "
                    "(is it running?)")
        return f"config not received from discovery at {discovery} yet (waiting for {xds})"
    routes: dict[str, dict[str, int]] = {}
    clusters: dict[str, dict[str, int]] = {}
    for name, value in stats.items():
        if match := _RDS.match(name):
            routes.setdefault(match["route"], {})[match["what"]] = value
        elif match := _EDS.match(name):
            clusters.setdefault(_stat_name(match["cluster"]), {})[match["what"]] = value
    for kind, table in (("route configuration", routes), ("endpoints of cluster", clusters)):
        for name, counts in sorted(table.items()):
            if counts.get("rejected", 0) and not counts.get("success", 0):
                return (f"config received from discovery at {discovery}, but the proxy "
                        f"rejected the {kind} {name!r}; pilotfish proxy-status shows why")
    return ""


def state_problem(stats: Mapping[str, int]) -> str:
    """Why the proxy is not serving (not LIVE), or ""."""
    raw = stats.get("server.state")
    if raw is None:
        return "the proxy did not report its server state"
    try:
        state = ServerState(raw)
    except ValueError:
        return f"the proxy reported an unknown server state {raw}"
    if state is ServerState.DRAINING:
        return "the proxy is draining"
    if state is not ServerState.LIVE:
        return f"the proxy is {state.name}, waiting for its first configuration"
    return ""


def status_from_stats(stats: Mapping[str, int], full: bool, discovery: str) -> ProxyStatus:
    """The ``ProxyStatus`` the stats (fetched with ``stats_filter(full)``) describe."""
    serving = state_problem(stats)
    if not full:
        return ProxyStatus(serving=serving)
    config = config_problem(stats, discovery)
    if not serving and not config and stats.get("listener_manager.workers_started", 0) != 1:
        serving = "the proxy's workers have not started yet"
    secrets = frozenset(match["secret"] for name, value in stats.items()
                        if value >= 1 and (match := _SDS.match(name)))
    return ProxyStatus(serving=serving, config=config, secrets=secrets)
