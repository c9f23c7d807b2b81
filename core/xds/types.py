"""xDS type URLs, their short names and how to read a resource's name."""

from __future__ import annotations

from typing import Any

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
EXTENSION_CONFIG = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"

SHORT_NAMES = {CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS", SECRET: "SDS",
               EXTENSION_CONFIG: "ECDS"}
BY_SHORT_NAME = {short: url for url, short in SHORT_NAMES.items()}

# Istio's push order: make-before-break (clusters and their endpoints before the listeners
# and routes that point at them).
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)

# Only listeners and clusters have wildcard ("send me everything for my node") semantics.
WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})


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
    """The xDS name of a resource message (ClusterLoadAssignments are named by cluster)."""
    name = getattr(message, "cluster_name", None)
    if name is not None and message.DESCRIPTOR.full_name.endswith("ClusterLoadAssignment"):
        return str(name)
    return str(message.name)
