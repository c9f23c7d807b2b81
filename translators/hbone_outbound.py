"""Sidecars and gateways sending HBONE: how their Envoy reaches a pod that takes only HBONE
(an ambient pod, whose ztunnel listens on 15008), as istiod configures it
(``PILOT_ENABLE_SENDING_HBONE``, on by default: sending HBONE is what lets sidecars and
gateways call ambient workloads).

The shape is the waypoint's (`ambient.waypoint_clusters`, `ambient.waypoint_listeners`):

- **EDS**: such an endpoint of an outbound cluster becomes the internal address
  ``connect_originate`` with endpoint id ``podIP:targetPort``, its metadata saying
  ``envoy.transport_socket_match: {tunnel: http}``, where the tunnel goes
  (``envoy.filters.listener.original_dst: {local: podIP:targetPort}``) and whom it must reach
  (``tunnel: {destination, identity}``, the pod's SPIFFE ID). Other endpoints stay as they
  are: a pod with a sidecar is still reached with Istio's mTLS (istiod prefers it unless
  ``PILOT_PREFER_SENDING_HBONE``), a plain pod in plaintext.
- **CDS**: the cluster of a service with such an endpoint carries one more transport socket
  match, ``hbone`` (``tunnel: http`` → the internal upstream transport, which hands the
  endpoint's metadata to the internal listener), ahead of its mTLS and plaintext ones; plus
  the ``connect_originate`` cluster (ORIGINAL_DST to port 15008, HTTP/2 over mTLS with the
  proxy's own certificate, the pod's identity checked per connection).
- **LDS**: the internal listener ``connect_originate``, which tunnels the bytes in a
  CONNECT with ``:authority podIP:targetPort``.

Only when some service the proxy sees has such an endpoint: a proxy of a mesh without
ambient pods keeps its config as it was (and the native proxy, which has no internal
listeners, keeps working where nothing needs them). A cluster whose DestinationRule sets a
``tls`` mode other than ``ISTIO_MUTUAL`` is left alone (istiod would carry that TLS inside
the tunnel; pilotfish does not) and so are its endpoints.

Sans-IO: a push context in, messages out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from google.protobuf import struct_pb2

from pilotfish.core.model import Endpoint, Service
from pilotfish.core.push_context import PushContext
from pilotfish.translators.ambient.waypoint_clusters import (
    CONNECT_ORIGINATE,
    ORIGINAL_DST_METADATA,
    TUNNEL_METADATA,
    connect_originate_cluster,
    internal_address,
    internal_socket,
    spiffe_id,
)
from pilotfish.translators.auto_mtls import RAW_BUFFER_SOCKET, TLS_MODE_DISABLED
from pilotfish.translators.common import pack

HBONE_MATCH = "hbone"
SOCKET_MATCH_METADATA = "envoy.transport_socket_match"
TUNNEL_HTTP = {"tunnel": "http"}


def policy_allows(policy: Mapping[str, Any]) -> bool:
    """May a cluster with this (effective) traffic policy tunnel? Without ``tls``, or with
    ``ISTIO_MUTUAL``, which HBONE replaces for endpoints that take it (as istiod)."""
    tls = policy.get("tls") or {}
    return str(tls.get("mode") or "ISTIO_MUTUAL").upper() == "ISTIO_MUTUAL"


def tunnels(push: PushContext, endpoint: Endpoint) -> bool:
    """Is this endpoint reached over HBONE? When it takes HBONE and has no sidecar to take
    Istio's mTLS (`PushContext.hbone_only`)."""
    return push.hbone_only(endpoint)


def tunnel_endpoint(push: PushContext, endpoint: Endpoint,
                    lb: endpoint_components_pb2.LbEndpoint) -> None:
    """Turn ``lb`` (the endpoint as EDS would send it) into its tunnel form, in place: the
    address becomes ``connect_originate``'s, the metadata says where the tunnel goes."""
    target = f"{endpoint.address}:{endpoint.port}"
    lb.endpoint.address.CopyFrom(internal_address(CONNECT_ORIGINATE, target))
    metadata = lb.metadata.filter_metadata
    metadata[SOCKET_MATCH_METADATA].Clear()
    metadata[SOCKET_MATCH_METADATA].update(TUNNEL_HTTP)
    metadata[ORIGINAL_DST_METADATA].update({"local": target})
    metadata[TUNNEL_METADATA].update({
        "destination": target,
        "identity": spiffe_id(push.mesh.trust_domain, endpoint.namespace,
                              endpoint.service_account)})


def applies(push: PushContext, service: Service, policy: Mapping[str, Any],
            cluster: cluster_pb2.Cluster) -> bool:
    return (cluster.type == cluster_pb2.Cluster.EDS and push.hbone_backed(service.hostname)
            and policy_allows(policy))


def add_socket_match(cluster: cluster_pb2.Cluster) -> None:
    """Put ``hbone`` first among the cluster's transport socket matches. A cluster with one
    transport socket (plaintext, or mTLS a DestinationRule asks for) keeps it as the
    default match."""
    hbone = cluster_pb2.Cluster.TransportSocketMatch(
        name=HBONE_MATCH, transport_socket=internal_socket(ORIGINAL_DST_METADATA,
                                                           TUNNEL_METADATA))
    hbone.match.update(TUNNEL_HTTP)
    others = list(cluster.transport_socket_matches)
    if not others:
        fallback = cluster.transport_socket if cluster.HasField("transport_socket") else (
            base_pb2.TransportSocket(name=RAW_BUFFER_SOCKET,
                                     typed_config=pack(raw_buffer_pb2.RawBuffer())))
        others = [cluster_pb2.Cluster.TransportSocketMatch(
            name=TLS_MODE_DISABLED, match=struct_pb2.Struct(), transport_socket=fallback)]
        cluster.ClearField("transport_socket")
    del cluster.transport_socket_matches[:]
    cluster.transport_socket_matches.extend([hbone, *others])


def apply(cluster: cluster_pb2.Cluster, push: PushContext, service: Service,
          policy: Mapping[str, Any]) -> None:
    if applies(push, service, policy, cluster):
        add_socket_match(cluster)


def needed(push: PushContext, services: Iterable[Service]) -> bool:
    """Does a proxy seeing ``services`` need ``connect_originate``?"""
    return any(push.hbone_backed(service.hostname) for service in services)


def clusters(push: PushContext, services: Iterable[Service]) -> list[cluster_pb2.Cluster]:
    return [connect_originate_cluster(push)] if needed(push, services) else []
