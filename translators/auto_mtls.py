"""Auto mTLS: a client speaks mesh mTLS to endpoints that have a sidecar, plaintext to others.

A cluster cannot know in advance which of its endpoints run a sidecar, so it carries both
transport sockets and Envoy picks one per endpoint: ``tlsMode-istio`` for endpoints whose
EDS metadata says ``envoy.transport_socket_match: {tlsMode: istio}`` (set for workloads
labelled ``security.istio.io/tlsMode: istio`` whose own PeerAuthentication is not DISABLE
on that port), ``tlsMode-disabled`` for the rest.

It applies when the mesh enables it, the rule for the cluster sets no ``tls`` of its own,
the service is inside the mesh, its namespace (or the mesh) does not DISABLE mTLS, and at
least one workload behind it has a sidecar. The last condition is pilotfish's: without a
sidecar-backed endpoint the match could never fire, and leaving it out keeps clusters to
plain services free of secrets they would wait for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from google.protobuf import struct_pb2

from pilotfish.core.model import Service
from pilotfish.core.protocol import Protocol
from pilotfish.core.push_context import PushContext
from pilotfish.core.security_policies import MtlsMode
from pilotfish.translators.common import pack
from pilotfish.translators.upstream_tls import (
    TLS_TRANSPORT_SOCKET,
    client_alpn,
    istio_mutual_context,
)

TLS_MODE_ISTIO = "tlsMode-istio"
TLS_MODE_DISABLED = "tlsMode-disabled"
RAW_BUFFER_SOCKET = "envoy.transport_sockets.raw_buffer"


def applies(push: PushContext, service: Service, policy: Mapping[str, Any],
            cluster: cluster_pb2.Cluster) -> bool:
    """Should this outbound cluster choose mTLS per endpoint?"""
    return (
        push.mesh.enable_auto_mtls
        and not policy.get("tls")
        and not service.mesh_external
        # Only EDS endpoints carry the metadata the choice is made on.
        and cluster.type == cluster_pb2.Cluster.EDS
        and push.security.namespace_mtls(service.namespace) is not MtlsMode.DISABLE
        and bool(push.service_identities(service.hostname))
    )


def socket_matches(
    sni: str, sans: list[str], protocol: Protocol
) -> list[cluster_pb2.Cluster.TransportSocketMatch]:
    """``tlsMode-istio`` (mesh mTLS) for endpoints that ask for it, plaintext otherwise."""
    tls = istio_mutual_context(sni, sans, client_alpn(protocol))
    match = struct_pb2.Struct()
    match.update({"tlsMode": "istio"})
    return [
        cluster_pb2.Cluster.TransportSocketMatch(
            name=TLS_MODE_ISTIO,
            match=match,
            transport_socket=base_pb2.TransportSocket(
                name=TLS_TRANSPORT_SOCKET, typed_config=pack(tls)
            ),
        ),
        cluster_pb2.Cluster.TransportSocketMatch(
            name=TLS_MODE_DISABLED,
            match=struct_pb2.Struct(),
            transport_socket=base_pb2.TransportSocket(
                name=RAW_BUFFER_SOCKET, typed_config=pack(raw_buffer_pb2.RawBuffer())
            ),
        ),
    ]


def apply(
    cluster: cluster_pb2.Cluster, push: PushContext, service: Service, protocol: Protocol,
    policy: Mapping[str, Any], sni: str,
) -> None:
    if applies(push, service, policy, cluster):
        cluster.transport_socket_matches.extend(
            socket_matches(sni, list(push.service_identities(service.hostname)), protocol)
        )
