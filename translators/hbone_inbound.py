"""Sidecars receiving HBONE: how ztunnel (or another HBONE client) reaches a pod that has a
sidecar, as istiod configures it for a proxy that listens on HBONE.

In Istio a sidecar listens on HBONE when it runs with ``ENABLE_HBONE`` (and istiod with
``PILOT_ENABLE_SIDECAR_LISTENING_ON_HBONE``); the injector then labels the pod
``networking.istio.io/tunnel: http``, which is what tells istiod to mark the workload HBONE
in WDS (`ambient.addresses`: ``tunnel_protocol`` HBONE, ``native_tunnel``), so that ztunnel
tunnels to the pod's 15008 instead of sending plaintext to its app port. pilotfish keys both
sides on that label: a sidecar whose pod carries it gets

- ``connect_terminate`` on 0.0.0.0:15008, the waypoint's (`ambient.waypoint_listeners`):
  HBONE's mTLS with the sidecar's own certificate, each CONNECT handed to ``main_internal``
  with its ``:authority`` as the original destination and the client's SPIFFE ID as
  ``io.istio.peer_principal``. The sidecar's iptables never capture 15008, so the tunnel
  reaches Envoy directly.
- ``main_internal``, an internal listener holding the sidecar's own inbound chains (those of
  ``virtualInbound``), in plaintext: the tunnel's mTLS already proved the client, whatever
  the PeerAuthentication mode, and its AuthorizationPolicies match the client's identity on
  ``io.istio.peer_principal`` instead of a certificate this hop does not have.
- the cluster ``main_internal``.

Sans-IO: a push context in, messages out.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2

from pilotfish.core.ambient import enrollment
from pilotfish.core.proxy import Proxy, ProxyType
from pilotfish.core.push_context import PushContext
from pilotfish.core.security_policies import MtlsMode
from pilotfish.translators.ambient.waypoint_clusters import MAIN_INTERNAL, main_internal_cluster
from pilotfish.translators.ambient.waypoint_listeners import (
    connect_terminate,
    peers_from_filter_state,
)
from pilotfish.translators.authz import AuthFilters, auth_filters
from pilotfish.translators.listener_filters import ALL, ORIGINAL_SRC, Detection
from pilotfish.translators.sidecar_inbound import virtual_inbound


def listens(proxy: Proxy) -> bool:
    """Does this sidecar take HBONE on 15008 (its pod labelled
    ``networking.istio.io/tunnel: http``)?"""
    return proxy.type is ProxyType.SIDECAR and enrollment.native_hbone(proxy.labels)


def tunneled_auth(auth: AuthFilters) -> AuthFilters:
    """The same filters, every RBAC principal on the peer's certificate now read from
    ``io.istio.peer_principal``."""
    return AuthFilters(http=tuple(map(peers_from_filter_state, auth.http)),
                       tcp=tuple(map(peers_from_filter_state, auth.tcp)))


def main_internal(push: PushContext, proxy: Proxy, detection: Detection = ALL
                  ) -> listener_pb2.Listener:
    listener = virtual_inbound(push, proxy, detection, mode=MtlsMode.DISABLE,
                               auth=tunneled_auth(auth_filters(push, proxy)))
    listener.name = MAIN_INTERNAL
    listener.ClearField("address")
    listener.ClearField("transparent")
    listener.internal_listener.SetInParent()
    listener.use_original_dst.value = False
    # The internal hop has no client address to keep (TPROXY's original_src).
    kept = [f for f in listener.listener_filters if f.name != ORIGINAL_SRC]
    del listener.listener_filters[:]
    listener.listener_filters.extend(kept)
    return listener


def listeners(push: PushContext, proxy: Proxy, detection: Detection = ALL
              ) -> list[listener_pb2.Listener]:
    if not listens(proxy):
        return []
    return [connect_terminate(push), main_internal(push, proxy, detection)]


def clusters(push: PushContext, proxy: Proxy) -> list[cluster_pb2.Cluster]:
    return [main_internal_cluster(push)] if listens(proxy) else []
