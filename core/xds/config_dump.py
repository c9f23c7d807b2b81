"""Envoy's ``/config_dump`` shape: built from generated resources, and its sections read back.

Discovery's ``/debug/config_dump`` and Envoy's admin ``/config_dump`` share one format, so
``pilotfish proxy-config`` reads either with the same code (``cli/tables.py`` prints it in
istioctl's columns). The readers work on plain JSON data; only ``build`` needs Envoy's
protobufs, and imports them when it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pilotfish.core.xds import types

if TYPE_CHECKING:
    from pilotfish.core.xds.resources import ResourceSet

_DUMP_TYPES = {
    "bootstrap": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
    "clusters": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
    "endpoints": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
    "listeners": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
    "routes": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
    "secrets": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
}


def build(sets: Mapping[str, ResourceSet]) -> dict[str, Any]:
    """A ConfigDump (as JSON data) of what discovery would send one proxy."""
    from envoy.admin.v3 import config_dump_pb2, config_dump_shared_pb2
    from google.protobuf import any_pb2, json_format

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
    data: dict[str, Any] = json_format.MessageToDict(out, preserving_proto_field_name=True)
    return data


def _section(dump: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for config in dump.get("configs") or ():
        if isinstance(config, Mapping) and config.get("@type") == _DUMP_TYPES[kind]:
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


def bootstrap(dump: Mapping[str, Any]) -> dict[str, Any]:
    """The bootstrap the proxy started from ({} when the dump has none, as discovery's)."""
    return dict(_section(dump, "bootstrap").get("bootstrap") or {})


def secrets(dump: Mapping[str, Any]) -> dict[str, Any]:
    """The SecretsConfigDump as Envoy gives it (``secret_dump`` reads it into rows)."""
    return dict(_section(dump, "secrets"))
