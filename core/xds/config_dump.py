"""Envoy's ``/config_dump`` shape: built from generated resources, read back into tables.

Discovery's ``/debug/config_dump`` and Envoy's admin ``/config_dump`` share one format, so
``pilotfish proxy-config`` prints either with the same code, in istioctl's columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from envoy.admin.v3 import config_dump_pb2, config_dump_shared_pb2
from google.protobuf import any_pb2, json_format

from pilotfish.core.xds import types
from pilotfish.core.xds.resources import ResourceSet

_DUMP_TYPES = {
    "clusters": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
    "endpoints": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
    "listeners": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
    "routes": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
    "secrets": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
}


def build(sets: Mapping[str, ResourceSet]) -> dict[str, Any]:
    """A ConfigDump (as JSON data) of what discovery would send one proxy."""
    dumps = []
    clusters = sets.get(types.CLUSTER)
    if clusters is not None:
        dump = config_dump_shared_pb2.ClustersConfigDump(version_info=clusters.version)
        for r in clusters.resources.values():
            dump.dynamic_active_clusters.add(version_info=clusters.version, cluster=r.to_any())
        dumps.append(dump)
    endpoints = sets.get(types.ENDPOINT)
    if endpoints is not None:
        dump_e = config_dump_shared_pb2.EndpointsConfigDump()
        for r in endpoints.resources.values():
            dump_e.dynamic_endpoint_configs.add(
                version_info=endpoints.version, endpoint_config=r.to_any()
            )
        dumps.append(dump_e)
    listeners = sets.get(types.LISTENER)
    if listeners is not None:
        dump_l = config_dump_shared_pb2.ListenersConfigDump(version_info=listeners.version)
        for r in listeners.resources.values():
            entry = dump_l.dynamic_listeners.add(name=r.name)
            entry.active_state.version_info = listeners.version
            entry.active_state.listener.CopyFrom(r.to_any())
        dumps.append(dump_l)
    routes = sets.get(types.ROUTE)
    if routes is not None:
        dump_r = config_dump_shared_pb2.RoutesConfigDump()
        for r in routes.resources.values():
            dump_r.dynamic_route_configs.add(version_info=routes.version, route_config=r.to_any())
        dumps.append(dump_r)
    out = config_dump_pb2.ConfigDump()
    for dump in dumps:
        packed = any_pb2.Any()
        packed.Pack(dump)
        out.configs.append(packed)
    return json_format.MessageToDict(out, preserving_proto_field_name=True)


def _section(dump: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for config in dump.get("configs") or ():
        if config.get("@type") == _DUMP_TYPES[kind]:
            return config
    return {}


def clusters(dump: Mapping[str, Any]) -> list[dict[str, Any]]:
    section = _section(dump, "clusters")
    out = [c["cluster"] for c in section.get("static_clusters") or () if "cluster" in c]
    out += [c["cluster"] for c in section.get("dynamic_active_clusters") or () if "cluster" in c]
    out += [c["cluster"] for c in section.get("dynamic_warming_clusters") or ()
            if "cluster" in c]
    return out


def listeners(dump: Mapping[str, Any]) -> list[dict[str, Any]]:
    section = _section(dump, "listeners")
    out = [s["listener"] for s in section.get("static_listeners") or () if "listener" in s]
    for entry in section.get("dynamic_listeners") or ():
        state = entry.get("active_state") or entry.get("warming_state") or {}
        if "listener" in state:
            out.append(state["listener"])
    return out


def routes(dump: Mapping[str, Any]) -> list[dict[str, Any]]:
    section = _section(dump, "routes")
    out = [r["route_config"] for r in section.get("static_route_configs") or ()
           if "route_config" in r]
    out += [r["route_config"] for r in section.get("dynamic_route_configs") or ()
            if "route_config" in r]
    return out


def endpoints(dump: Mapping[str, Any]) -> list[dict[str, Any]]:
    section = _section(dump, "endpoints")
    out = [e["endpoint_config"] for e in section.get("static_endpoint_configs") or ()
           if "endpoint_config" in e]
    out += [e["endpoint_config"] for e in section.get("dynamic_endpoint_configs") or ()
            if "endpoint_config" in e]
    return out


def secrets(dump: Mapping[str, Any]) -> dict[str, Any]:
    """The SecretsConfigDump as Envoy gives it (``secret_dump`` reads it into rows)."""
    return dict(_section(dump, "secrets"))


# -- tables in istioctl's columns -----------------------------------------------------------


def table(headers: list[str], rows: Iterable[list[str]]) -> str:
    rows = [headers, *rows]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(headers))]
    return "\n".join(
        "  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in rows
    ) + "\n"


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
