"""Is the proxy ready to take traffic? pilot-agent's rule, decided from the proxy's stats.

Sans-IO: the status server fetches ``/stats?filter=<Readiness.stats_filter()>`` from the
proxy's admin API and hands the text to ``Readiness.decide``.

Ready means: the proxy accepted a first full configuration from discovery and is LIVE
with its workers started. Envoy's own LIVE is not enough: every ADS config source
(bootstrap and generated) has ``initial_fetch_timeout: 0s``, so Envoy waits for its first
CDS, EDS, LDS and RDS before going LIVE — but it also goes LIVE when that first update
was *rejected* (it lets the server start on a bad config rather than hang). So the
counters must show an accepted update too: CDS and LDS ``update_success`` above zero, and
no RDS subscription or EDS cluster whose updates were all rejected.

As in pilot-agent, once ready the configuration part is not asked again: a proxy that
keeps serving its last configuration while discovery is away stays ready. Only the
server state is checked after that, so a draining proxy turns unready.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping

import attrs

CONFIG_FILTER = (
    r"^(server\.state|listener_manager\.workers_started|control_plane\.connected_state"
    r"|cluster_manager\.cds\.update_(success|rejected)"
    r"|listener_manager\.lds\.update_(success|rejected)"
    r"|http\..+\.rds\..+\.update_(success|rejected)"
    r"|cluster\..+\.update_(success|rejected))$"
)
LIVE_FILTER = r"^server\.state$"

_RDS = re.compile(r"^http\.(?P<hcm>.+)\.rds\.(?P<route>.+)\.update_(?P<what>success|rejected)$")
_EDS = re.compile(r"^cluster\.(?P<cluster>.+)\.update_(?P<what>success|rejected)$")


class ServerState(enum.IntEnum):
    """Envoy's ``server.state`` gauge (admin ``ServerInfo.State``)."""

    LIVE = 0
    DRAINING = 1
    PRE_INITIALIZING = 2
    INITIALIZING = 3


@attrs.frozen
class Verdict:
    ready: bool
    reason: str  # what a probe's 503 body says; "ready" otherwise


READY = Verdict(True, "ready")


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


def config_problem(stats: Mapping[str, int], discovery: str) -> str | None:
    """Why the proxy has no accepted configuration yet, or None if it has one."""
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
    return None


def state_problem(stats: Mapping[str, int]) -> str | None:
    """Why the proxy is not serving (not LIVE, or workers not started), or None."""
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
    return None


@attrs.define
class Readiness:
    """The readiness state machine of one proxy: not yet initialized → initialized."""

    discovery: str  # HOST:PORT, named in the reasons
    # SDS secrets the proxy must hold before it is ready (the agent's workload certificate
    # and root): until then mesh mTLS in and out would fail.
    secrets: tuple[str, ...] = ()
    initialized: bool = False
    draining: bool = False  # set when the agent starts a drain; never cleared

    def stats_filter(self) -> str:
        if self.initialized:
            return LIVE_FILTER
        if not self.secrets:
            return CONFIG_FILTER
        names = "|".join(re.escape(s) for s in self.secrets)
        return f"{CONFIG_FILTER}|^sds\\.({names})\\.update_success$"

    def decide(self, stats: Mapping[str, int]) -> Verdict:
        if self.draining:
            return Verdict(False, "the proxy is draining")
        if not self.initialized:
            problem = config_problem(stats, self.discovery) or state_problem(stats)
            if problem is None and stats.get("listener_manager.workers_started", 0) != 1:
                problem = "the proxy's workers have not started yet"
            missing = [s for s in self.secrets if stats.get(f"sds.{s}.update_success", 0) < 1]
            if problem is None and missing:
                problem = (f"the proxy has no {', '.join(missing)} secret yet (waiting for "
                           "the workload certificate from discovery's CA)")
            if problem is not None:
                return Verdict(False, problem)
            self.initialized = True
            return READY
        problem = state_problem(stats)
        return READY if problem is None else Verdict(False, problem)

    def unreachable(self, error: str) -> Verdict:
        return Verdict(False, f"the proxy's admin API did not answer: {error}")
