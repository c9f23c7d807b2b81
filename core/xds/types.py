"""xDS type URLs, their short names and how to read a resource's name."""

from __future__ import annotations

from typing import Any

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
EXTENSION_CONFIG = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
# ztunnel's Workload Discovery (WDS): workloads and services, and L4 authorization policies.
ADDRESS = "type.googleapis.com/istio.workload.Address"
AUTHORIZATION = "type.googleapis.com/istio.security.Authorization"

SHORT_NAMES = {CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS", SECRET: "SDS",
               EXTENSION_CONFIG: "ECDS"}
BY_SHORT_NAME = {short: url for url, short in SHORT_NAMES.items()}

# Istio's push order: make-before-break (clusters and their endpoints before the listeners
# and routes that point at them).
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)

# Listeners and clusters have wildcard ("send me everything for my node") semantics, and so
# have ztunnel's types: ztunnel's first request subscribes to every Address and Authorization.
WILDCARD_TYPES = frozenset({CLUSTER, LISTENER, ADDRESS, AUTHORIZATION})


# Envoy warms a cluster only when a fresh ClusterLoadAssignment arrives for it.
WARMING_DEPENDENCIES = {CLUSTER: ENDPOINT}


def short(type_url: str) -> str:
    return SHORT_NAMES.get(type_url, type_url.rsplit(".", 1)[-1])


def is_wildcard(type_url: str) -> bool:
    return type_url in WILDCARD_TYPES


def order_key(type_url: str) -> tuple[int, str]:
    try:
        return (PUSH_ORDER.index(type_url), type_url)
    except ValueError:
        return (len(PUSH_ORDER), type_url)


def resource_name(message: Any) -> str:
    """The xDS name of a resource message (ClusterLoadAssignments are named by cluster;
    ztunnel's types as istiod names them: a workload by its uid, a service and a policy
    ``NAMESPACE/NAME``, the service's name being its hostname)."""
    full_name = message.DESCRIPTOR.full_name
    if full_name == "istio.workload.Address":
        if message.HasField("workload"):
            return str(message.workload.uid)
        return f"{message.service.namespace}/{message.service.hostname}"
    if full_name == "istio.security.Authorization":
        return f"{message.namespace}/{message.name}"
    name = getattr(message, "cluster_name", None)
    if name is not None and message.DESCRIPTOR.full_name.endswith("ClusterLoadAssignment"):
        return str(name)
    return str(message.name)
