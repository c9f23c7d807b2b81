"""Endpoints → ClusterLoadAssignment, grouped by locality, with Istio's endpoint metadata."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping

from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from pilotfish.core.model import Endpoint, Health, labels_match

_HEALTH = {
    Health.HEALTHY: health_check_pb2.HEALTHY,
    Health.UNHEALTHY: health_check_pb2.UNHEALTHY,
    Health.DRAINING: health_check_pb2.DRAINING,
}


UNIX_PREFIX = "unix://"


def socket_address(address: str, port: int) -> address_pb2.Address:
    """An endpoint's address; ``unix:///path`` (a ServiceEntry endpoint) is a unix socket,
    which has no port."""
    if address.startswith(UNIX_PREFIX):
        return address_pb2.Address(pipe=address_pb2.Pipe(path=address[len(UNIX_PREFIX):]))
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=address, port_value=port)
    )


def _locality(text: str) -> base_pb2.Locality:
    region, zone, subzone = ([*text.split("/"), "", ""])[:3]
    return base_pb2.Locality(region=region, zone=zone, sub_zone=subzone)


MeshCheck = Callable[[Endpoint], bool]
# Rewrites, in place, an endpoint the proxy reaches another way (through a tunnel).
Rewrite = Callable[[Endpoint, endpoint_components_pb2.LbEndpoint], None]


def _lb_endpoint(endpoint: Endpoint, mesh_mtls: MeshCheck, rewrite: Rewrite | None = None
                 ) -> endpoint_components_pb2.LbEndpoint:
    lb = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=socket_address(endpoint.address, endpoint.port)
        ),
        health_status=_HEALTH[endpoint.health],
    )
    lb.load_balancing_weight.value = max(1, endpoint.weight)
    meta = base_pb2.Metadata()
    if endpoint.tls_mode == "istio" and mesh_mtls(endpoint):
        # Lets a cluster's transport_socket_matches pick mTLS for sidecar-backed endpoints
        # (not for those whose PeerAuthentication turns mTLS off on this port).
        meta.filter_metadata["envoy.transport_socket_match"].update({"tlsMode": "istio"})
    if endpoint.workload_name:
        app = endpoint.labels.get("app", endpoint.workload_name)
        version = endpoint.labels.get("version", "latest")
        meta.filter_metadata["istio"].update({
            "workload": f"{endpoint.workload_name};{endpoint.namespace};{app};{version};Kubernetes"
        })
    if meta.filter_metadata:
        lb.metadata.CopyFrom(meta)
    if rewrite is not None:
        rewrite(endpoint, lb)
    return lb


def load_assignment(
    cluster_name: str, endpoints: Iterable[Endpoint], subset_labels: Mapping[str, str] | None,
    mesh_mtls: MeshCheck = lambda endpoint: True,
    priority: Callable[[Endpoint], int] | None = None, rewrite: Rewrite | None = None,
) -> endpoint_pb2.ClusterLoadAssignment:
    """A CLA for one cluster; subset clusters keep only endpoints carrying the subset's labels.
    Empty assignments are still sent: Envoy needs one to finish warming the cluster.

    ``priority`` ranks endpoints (locality load balancing): they are grouped by locality and
    rank, and the ranks become Envoy priorities numbered from 0 without gaps. ``rewrite``
    may turn an endpoint into another form (the HBONE tunnel: `hbone_outbound`)."""
    rank = priority or (lambda endpoint: 0)
    groups: dict[tuple[int, str], list[endpoint_components_pb2.LbEndpoint]] = defaultdict(list)
    for endpoint in sorted(endpoints, key=lambda e: (e.locality, e.address, e.port)):
        if subset_labels and not labels_match(subset_labels, endpoint.labels):
            continue
        groups[(rank(endpoint), endpoint.locality)].append(
            _lb_endpoint(endpoint, mesh_mtls, rewrite))
    levels = {level: index for index, level in enumerate(sorted({k[0] for k in groups}))}
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=cluster_name,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=_locality(locality) if locality else None, lb_endpoints=lbs,
                priority=levels[level],
            )
            for (level, locality), lbs in sorted(groups.items())
        ],
    )
