"""Config dumps as istioctl prints them: clusters, listeners, routes, endpoints."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def cluster_rows(items: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for c in items:
        name = str(c.get("name", ""))
        parts = name.split("|")
        if len(parts) == 4:
            direction, port, subset, host = parts
        else:
            direction, port, subset, host = "", "-", "-", name
        kind = c.get("type") or ("EDS" if "eds_cluster_config" in c else "STATIC")
        istio = ((c.get("metadata") or {}).get("filter_metadata") or {}).get("istio") or {}
        rule = str(istio.get("config", ""))
        rule = "/".join(rule.split("/")[-1:] + rule.split("/")[-3:-2]) if rule else "-"
        rows.append([host or name, port, subset or "-", direction.upper() or "-", kind, rule])
    return sorted(rows)


CLUSTER_HEADERS = ["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"]


def _chain_match(chain: Mapping[str, Any]) -> str:
    match = chain.get("filter_chain_match") or {}
    parts = []
    if match.get("destination_port"):
        parts.append(f"port={match['destination_port']}")
    if match.get("prefix_ranges"):
        parts.append("ip=" + ",".join(
            f"{p.get('address_prefix')}/{p.get('prefix_len', 32)}" for p in match["prefix_ranges"]
        ))
    if match.get("server_names"):
        parts.append("SNI=" + ",".join(match["server_names"]))
    if match.get("transport_protocol"):
        parts.append(f"trans={match['transport_protocol']}")
    if match.get("application_protocols"):
        parts.append("App: " + ",".join(match["application_protocols"]))
    return "; ".join(parts) or "ALL"


def _chain_destination(chain: Mapping[str, Any]) -> str:
    for flt in chain.get("filters") or ():
        config = flt.get("typed_config") or {}
        if "rds" in config:
            return f"Route: {config['rds'].get('route_config_name', '')}"
        if "route_config" in config:
            return f"Inline Route: {config['route_config'].get('name', '')}"
        if "cluster" in config:
            return f"Cluster: {config['cluster']}"
        if "weighted_clusters" in config:
            return "Clusters: " + ",".join(
                c.get("name", "") for c in config["weighted_clusters"].get("clusters") or ()
            )
    return "-"


def listener_rows(items: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for listener in items:
        sock = (listener.get("address") or {}).get("socket_address") or {}
        address = str(sock.get("address", ""))
        port = str(sock.get("port_value", ""))
        for chain in listener.get("filter_chains") or [{}]:
            rows.append([address, port, _chain_match(chain), _chain_destination(chain)])
    return rows


LISTENER_HEADERS = ["ADDRESSES", "PORT", "MATCH", "DESTINATION"]


def route_rows(items: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for config in items:
        for vhost in config.get("virtual_hosts") or ():
            domains = vhost.get("domains") or []
            shown = ", ".join(domains[:2]) + (f" + {len(domains) - 2} more" if len(domains) > 2
                                               else "")
            for route in vhost.get("routes") or [{}]:
                match = route.get("match") or {}
                text = (match.get("path") or match.get("prefix")
                        or (match.get("safe_regex") or {}).get("regex") or "/*")
                if "prefix" in match and text != "/":
                    text += "*"
                elif text == "/":
                    text = "/*"
                istio = ((route.get("metadata") or {}).get("filter_metadata") or {}).get(
                    "istio") or {}
                vs = str(istio.get("config", ""))
                vs = ".".join(vs.split("/")[-1:] + vs.split("/")[-3:-2]) if vs else "-"
                rows.append([str(config.get("name", "")), str(vhost.get("name", "")), shown,
                             text, vs])
    return rows


ROUTE_HEADERS = ["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"]


def endpoint_rows_from_clusters_json(data: Mapping[str, Any]) -> list[list[str]]:
    """Envoy admin ``/clusters?format=json``: live endpoints with health."""
    rows = []
    for status in data.get("cluster_statuses") or ():
        name = status.get("name", "")
        for host in status.get("host_statuses") or ():
            sock = (host.get("address") or {}).get("socket_address") or {}
            health = host.get("health_status") or {}
            failed = [k for k, v in health.items() if k.startswith("failed") and v]
            state = "UNHEALTHY" if failed or health.get("eds_health_status") == "UNHEALTHY" \
                else "HEALTHY"
            outlier = "FAILED" if health.get("failed_outlier_check") else "OK"
            rows.append([f"{sock.get('address')}:{sock.get('port_value')}", state, outlier, name])
    return sorted(rows)


def endpoint_rows_from_dump(items: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for cla in items:
        for locality in cla.get("endpoints") or ():
            for lb in locality.get("lb_endpoints") or ():
                sock = ((lb.get("endpoint") or {}).get("address") or {}).get(
                    "socket_address") or {}
                rows.append([f"{sock.get('address')}:{sock.get('port_value')}",
                             lb.get("health_status", "HEALTHY"), "OK",
                             cla.get("cluster_name", "")])
    return sorted(rows)


ENDPOINT_HEADERS = ["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"]


# --- filters, as istioctl proxy-config's flags narrow each kind ----------------------------


def cluster_parts(name: str) -> tuple[str, str, str, str]:
    """(direction, port, subset, host) of Istio's ``direction|port|subset|host`` names;
    other clusters are all host."""
    parts = name.split("|")
    if len(parts) == 4:
        return parts[0], parts[1], parts[2], parts[3]
    return "", "", "", name


def keep_cluster(cluster: Mapping[str, Any], fqdn: str = "", port: int | None = None,
                 subset: str = "", direction: str = "") -> bool:
    """``--fqdn`` (part of the host), ``--port``, ``--subset``, ``--direction``."""
    way, number, named_subset, host = cluster_parts(str(cluster.get("name", "")))
    return ((not fqdn or fqdn in host) and (port is None or number == str(port))
            and (not subset or named_subset == subset)
            and (not direction or way.lower() == direction.lower()))


def listener_type(listener: Mapping[str, Any]) -> str:
    """HTTP, TCP or HTTP+TCP, by what its chains end in (istioctl's ``--type``)."""
    kinds = set()
    for chain in listener.get("filter_chains") or ():
        for flt in chain.get("filters") or ():
            name = str(flt.get("name", ""))
            if name.endswith("http_connection_manager"):
                kinds.add("HTTP")
            elif name.endswith("tcp_proxy"):
                kinds.add("TCP")
    return "+".join(sorted(kinds)) or "-"


def keep_listener(listener: Mapping[str, Any], port: int | None = None, address: str = "",
                  kind: str = "") -> bool:
    """``--port``, ``--address``, ``--type`` (HTTP, TCP or HTTP+TCP)."""
    sock = (listener.get("address") or {}).get("socket_address") or {}
    return ((port is None or str(sock.get("port_value", "")) == str(port))
            and (not address or str(sock.get("address", "")) == address)
            and (not kind or listener_type(listener) == kind.upper()))


def keep_route(config: Mapping[str, Any], name: str = "") -> bool:
    return not name or str(config.get("name", "")) == name


def keep_endpoint_row(row: list[str], cluster: str = "", port: int | None = None,
                      address: str = "", status: str = "") -> bool:
    """Rows of ENDPOINT_HEADERS: ``--cluster`` (part of the name), ``--port``,
    ``--address``, ``--status`` (HEALTHY, UNHEALTHY...)."""
    host, _, number = row[0].rpartition(":")
    return ((not cluster or cluster in row[3]) and (port is None or number == str(port))
            and (not address or host == address)
            and (not status or row[1] == status.upper()))
