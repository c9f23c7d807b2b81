"""The bootstrap's stat-tag rules, applied the way Envoy applies them, without Envoy.

Envoy runs every rule on the original stat name: a match cuts the rule's first capture
group from the name and takes the second (or the first) as the tag value; a second rule
with a tag name that already matched is skipped. These regexes are plain enough that
Python's ``re`` and Envoy's RE2 agree on them. The integration tests read the same tags
from a real Envoy's /stats/prometheus.
"""

from __future__ import annotations

import re

import pytest

from pilotfish.plugins.envoy.stats import STATS_TAGS, stats_config


def extract(stat: str) -> tuple[str, dict[str, str]]:
    tags: dict[str, str] = {}
    cuts: list[tuple[int, int]] = []
    for name, regex in STATS_TAGS:
        if name in tags:
            continue
        match = re.search(regex, stat)
        if match is None:
            continue
        group = 2 if match.re.groups >= 2 else 1
        tags[name] = match[group]
        cuts.append(match.span(1))
    kept = "".join(c for i, c in enumerate(stat) if not any(a <= i < b for a, b in cuts))
    return kept, tags


@pytest.mark.parametrize(("stat", "name", "tags"), [
    ("cluster.outbound|80||web.shop.svc.cluster.local;.upstream_rq_200",
     "cluster.upstream_rq",
     {"cluster_name": "outbound|80||web.shop.svc.cluster.local", "response_code": "200"}),
    ("cluster.outbound|80|v1|web.shop.svc.cluster.local;.upstream_rq_2xx",
     "cluster.upstream_rq_xx",
     {"cluster_name": "outbound|80|v1|web.shop.svc.cluster.local",
      "response_code_class": "2"}),
    ("cluster.inbound|8080||;.upstream_cx_total", "cluster.upstream_cx_total",
     {"cluster_name": "inbound|8080||"}),
    ("cluster.xds-grpc.upstream_cx_total", "cluster.upstream_cx_total",
     {"cluster_name": "xds-grpc"}),
    ("cluster.PassthroughCluster.upstream_rq_503", "cluster.upstream_rq",
     {"cluster_name": "PassthroughCluster", "response_code": "503"}),
    ("cluster.outbound|80||web.shop.svc.cluster.local;.circuit_breakers.default.cx_open",
     "cluster.circuit_breakers.default.cx_open",
     {"cluster_name": "outbound|80||web.shop.svc.cluster.local"}),
    ("tcp.outbound|5432||db.shop.svc.cluster.local.downstream_cx_total",
     "tcp.downstream_cx_total", {"tcp_prefix": "outbound|5432||db.shop.svc.cluster.local"}),
    ("http.outbound_0.0.0.0_8080.downstream_rq_2xx", "http.downstream_rq_xx",
     {"http_conn_manager_prefix": "outbound_0.0.0.0_8080", "response_code_class": "2"}),
    ("http.admin.downstream_rq_total", "http.downstream_rq_total",
     {"http_conn_manager_prefix": "admin"}),
    ("http.outbound_0.0.0.0_8080.rds.http.8080.update_success", "http.rds.update_success",
     {"http_conn_manager_prefix": "outbound_0.0.0.0_8080", "rds_route_config": "http.8080"}),
    ("listener.0.0.0.0_15006.http.inbound_0.0.0.0_9080.downstream_rq_completed",
     "listener.http.downstream_rq_completed",
     {"listener_address": "0.0.0.0_15006", "http_conn_manager_prefix": "inbound_0.0.0.0_9080"}),
    ("listener.[__]_15001.worker_1.downstream_cx_total", "listener.downstream_cx_total",
     {"listener_address": "[__]_15001", "worker_id": "1"}),
])
def test_stat_names_become_istio_tags(stat: str, name: str, tags: dict[str, str]) -> None:
    assert extract(stat) == (name, tags)


def test_envoys_own_tag_rules_are_off() -> None:
    # Envoy's built-in rules cut cluster names at the first dot; they must not run too.
    assert stats_config()["use_all_default_tags"] is False
