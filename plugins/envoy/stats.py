"""Envoy bootstrap parts about stats: how stat names become tags, and the 15090 listener.

Stat tags. Envoy's built-in tag rules cut a cluster name at its first dot, so
``outbound|80||web.shop.svc.cluster.local`` would become the tag ``outbound|80||web`` and
the rest would leak into the metric name. Istio replaces the built-in rules with its
own list; this list does the same job for the names pilotfish generates: clusters named
through ``alt_stat_name`` end with ``;`` (Istio's delimiter, see translators/cds.py),
which marks where the cluster name stops. Tag names are Istio's (``cluster_name``,
``response_code``, ``tcp_prefix``...), so dashboards written for Istio's Envoy stats
work. (Istio's standard metrics come from access-log entries: plugins/envoy/request_metrics.py.)

Prometheus listener. Istio's sidecars serve Envoy's own stats on 15090 at
``/stats/prometheus`` through a static listener routed to the admin API, so scrapers
never reach the admin port (which also takes POSTs that stop the proxy). Only that
path is routed.
"""

from __future__ import annotations

from typing import Any

from pilotfish.core.proxy_backend import ProxyOptions

PROMETHEUS_CLUSTER = "prometheus_stats"

# (tag name, RE2 regex). The first capture group is cut from the stat name, the second
# is the tag's value. Rules see the original name, so each must match its part alone.
# Two rules may share a tag name; once one matched, Envoy skips the other and logs that
# at "misc" level, which the agent turns down to errors as Istio does.
STATS_TAGS: tuple[tuple[str, str], ...] = (
    # cluster.<name without dots>.<stat> (no ';' anywhere), else cluster.<name>;.<stat>.
    # The rarer dot-less names (xds-grpc, BlackHoleCluster...) go first, so the usual
    # case never triggers the skip.
    ("cluster_name", r"^cluster\.(([^.;]+)\.)[^;]*$"),
    ("cluster_name", r"^cluster\.(([^;]+);\.)"),
    # tcp.<stat_prefix>.<stat>: tcp_proxy's prefix is its cluster's name, dots and all.
    ("tcp_prefix", r"^tcp\.((.+)\.)\w+$"),
    ("response_code", r"_rq(_(\d{3}))$"),
    ("response_code_class", r"_rq_(\d)xx$"),  # one group: cut "2", upstream_rq_xx remains
    # HTTP connection managers are named <direction>_<address>_<port> (addresses have dots).
    ("http_conn_manager_prefix", r"^http\.(((?:inbound|outbound)_[^_]+_\d+|[^.]+)\.)"),
    ("http_conn_manager_prefix",
     r"^listener\..*?\.http\.(((?:inbound|outbound)_[^_]+_\d+|[^.]+)\.)"),
    ("rds_route_config", r"^http\..*?\.rds\.((.+)\.)\w+$"),
    ("listener_address", r"^listener\.((\d[^_]*_\d+|\[[^\]]*\]_\d+)\.)"),
    ("worker_id", r"(worker_(\d+)\.)"),
)


def stats_config() -> dict[str, Any]:
    return {
        "use_all_default_tags": False,
        "stats_tags": [{"tag_name": name, "regex": regex} for name, regex in STATS_TAGS],
    }


def prometheus_cluster(options: ProxyOptions) -> dict[str, Any]:
    return {
        "name": PROMETHEUS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "0.25s",
        "load_assignment": {
            "cluster_name": PROMETHEUS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": options.admin_address, "port_value": options.admin_port,
            }}}}]}],
        },
    }


def prometheus_listener(options: ProxyOptions) -> dict[str, Any]:
    wildcard = "::" if ":" in options.ip else "0.0.0.0"
    return {
        "name": f"{wildcard}_{options.prometheus_port}",
        "address": {"socket_address": {"address": wildcard,
                                       "port_value": options.prometheus_port}},
        # Fail loudly when two proxies on one host ask for the same port, instead of
        # Envoy's default SO_REUSEPORT silently sharing it between them.
        "enable_reuse_port": False,
        # Scrapes must work when the proxy is at its connection limit or overloaded.
        "ignore_global_conn_limit": True,
        "bypass_overload_manager": True,
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network."
                         "http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "stats",
                # The admin API behind this port normalizes paths itself: match the one path
                # and method exactly, after normalizing, or /stats/prometheus/../../x would
                # reach every admin handler (config_dump, quitquitquit) from the network.
                "normalize_path": True,
                "merge_slashes": True,
                "path_with_escaped_slashes_action": "REJECT_REQUEST",
                "route_config": {"virtual_hosts": [{
                    "name": "backend",
                    "domains": ["*"],
                    "routes": [{"match": {"path": "/stats/prometheus", "headers": [
                                    {"name": ":method", "string_match": {"exact": "GET"}}]},
                                "route": {"cluster": PROMETHEUS_CLUSTER}}],
                }]},
                "http_filters": [{
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/"
                                              "envoy.extensions.filters.http.router.v3.Router"},
                }],
            },
        }]}],
    }
