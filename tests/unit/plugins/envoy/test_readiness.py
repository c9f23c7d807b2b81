"""Readiness decided from Envoy's stats text, as pilot-agent decides it: the Envoy plugin
reads the stats into a ``ProxyStatus``, the agent's latch decides."""

from __future__ import annotations

import re

import pytest

from pilotfish.agent.readiness import Readiness, Verdict
from pilotfish.plugins.envoy.readiness import (
    CONFIG_FILTER,
    LIVE_FILTER,
    parse_stats,
    stats_filter,
    status_from_stats,
)

DISCOVERY = "127.0.0.1:15010"

LIVE = """\
cluster_manager.cds.update_success: 1
cluster_manager.cds.update_rejected: 0
listener_manager.lds.update_success: 1
listener_manager.lds.update_rejected: 0
http.outbound_0.0.0.0_8080.rds.http.8080.update_success: 1
http.outbound_0.0.0.0_8080.rds.http.8080.update_rejected: 0
cluster.outbound|80||web.shop.svc.cluster.local;.update_success: 1
cluster.xds-grpc.update_success: 0
control_plane.connected_state: 1
listener_manager.workers_started: 1
server.state: 0
"""


def decide(readiness: Readiness, stats: dict[str, int]) -> Verdict:
    """What the agent decides from Envoy's stats, fetched as the Envoy plugin fetches them."""
    wanted = re.compile(stats_filter(readiness.full))
    shown = {name: value for name, value in stats.items() if wanted.match(name)}
    return readiness.decide(status_from_stats(shown, readiness.full, DISCOVERY))


def stats(**changes: int) -> dict[str, int]:
    values = parse_stats(LIVE)
    values.update({k.replace("__", "."): v for k, v in changes.items()})
    return values


def test_parse_stats_keeps_integer_lines() -> None:
    text = ('server.state: 2\ncluster_manager.cds.version_text: "abc"\n'
            "cluster.x.upstream_rq_time: P0(nan,1) P25(nan,2)\nweird line\n")
    assert parse_stats(text) == {"server.state": 2}


def test_ready_once_config_is_accepted_and_the_proxy_is_live() -> None:
    verdict = decide(Readiness(), stats())
    assert (verdict.ready, verdict.reason) == (True, "ready")


@pytest.mark.parametrize(("changes", "reason"), [
    ({"cluster_manager__cds__update_success": 0, "control_plane__connected_state": 0,
      "server__state": 2},
     "config not received: not connected to discovery at 127.0.0.1:15010 (is it running?)"),
    ({"cluster_manager__cds__update_success": 0, "server__state": 2},
     "config not received from discovery at 127.0.0.1:15010 yet (waiting for CDS)"),
    ({"listener_manager__lds__update_success": 0, "server__state": 3},
     "config not received from discovery at 127.0.0.1:15010 yet (waiting for LDS)"),
    # Envoy goes LIVE on a rejected first config: only the counters tell.
    ({"cluster_manager__cds__update_success": 0, "cluster_manager__cds__update_rejected": 2},
     "config received from discovery at 127.0.0.1:15010, but the proxy rejected it "
     "(CDS, 2 times); pilotfish proxy-status shows why"),
    ({"http__outbound_0.0.0.0_8080__rds__http.8080__update_success": 0,
      "http__outbound_0.0.0.0_8080__rds__http.8080__update_rejected": 1},
     "rejected the route configuration 'http.8080'"),
    ({"cluster__outbound|80||web.shop.svc.cluster.local;__update_success": 0,
      "cluster__outbound|80||web.shop.svc.cluster.local;__update_rejected": 1},
     "rejected the endpoints of cluster 'outbound|80||web.shop.svc.cluster.local'"),
    ({"server__state": 3}, "the proxy is INITIALIZING, waiting for its first configuration"),
    ({"listener_manager__workers_started": 0}, "the proxy's workers have not started yet"),
    ({"server__state": 9}, "unknown server state 9"),
])
def test_not_ready_says_why(changes: dict[str, int], reason: str) -> None:
    verdict = decide(Readiness(), stats(**changes))
    assert not verdict.ready
    assert reason in verdict.reason


def test_once_ready_a_discovery_outage_does_not_matter_but_draining_does() -> None:
    readiness = Readiness()
    assert readiness.full and stats_filter(readiness.full) == CONFIG_FILTER
    assert decide(readiness, stats()).ready
    # Afterwards only the server state is asked for: config counters are not looked at.
    assert not readiness.full and stats_filter(readiness.full) == LIVE_FILTER
    assert decide(readiness, {"server.state": 0, "cluster_manager.cds.update_success": 0}).ready
    assert decide(readiness, {"server.state": 1}).reason == "the proxy is draining"
    assert not decide(readiness, {}).ready  # no state at all: not ready
    readiness.draining = True  # the agent started a drain
    assert decide(readiness, {"server.state": 0}).reason == "the proxy is draining"


def test_unreachable_proxy_is_a_reason() -> None:
    verdict = Readiness().unreachable("Envoy's admin API: connection refused")
    assert not verdict.ready
    assert verdict.reason == "the proxy did not answer: Envoy's admin API: connection refused"


def test_filters_select_every_stat_the_decision_reads() -> None:
    wanted = re.compile(CONFIG_FILTER)
    for name in parse_stats(LIVE):
        assert wanted.match(name), name
    assert not wanted.match("cluster.web.upstream_rq_200")
    assert re.match(LIVE_FILTER, "server.state")


def test_waits_for_the_workload_certificate_when_asked_to():
    stats = {"server.state": 0, "listener_manager.workers_started": 1,
             "cluster_manager.cds.update_success": 1, "listener_manager.lds.update_success": 1,
             "control_plane.connected_state": 1}
    readiness = Readiness(("default", "ROOTCA"))
    assert re.match(CONFIG_FILTER, "sds.default.update_success")
    verdict = decide(readiness, {**stats, "sds.ROOTCA.update_success": 1})
    assert not verdict.ready and "default" in verdict.reason
    assert decide(readiness, {**stats, "sds.default.update_success": 1,
                              "sds.ROOTCA.update_success": 1}).ready
