"""Mesh mTLS on the wire: the ALPN scheme both sides agree on, and the server's TLS context.

Stock Envoy has no ``istio.alpn`` filter, so pilotfish marks mesh connections with ALPN
values a stock client can send and a stock listener can match (docs/security.md,
"Telling mesh mTLS apart"):

- every sidecar or gateway client of a sidecar-backed endpoint offers ``istio`` (plus
  ``h2`` on HTTP/2 clusters) from its cluster's UpstreamTlsContext;
- an inbound chain that terminates mesh mTLS in PERMISSIVE mode matches ``tls`` plus any
  mesh ALPN value; TLS without one is the application's own TLS and passes through;
- on a port whose protocol is sniffed, a client that carries HTTP says so with one of the
  HTTP values, so the server knows to run its HTTP connection manager after terminating.

The server's context asks for a client certificate, trusts the mesh root (SDS ``ROOTCA``)
and accepts only peers whose SPIFFE ID is in the mesh's trust domain.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from pilotfish.translators.common import pack
from pilotfish.translators.upstream_tls import (
    MESH_ALPN,
    ROOT_SECRET,
    TLS_TRANSPORT_SOCKET,
    WORKLOAD_SECRET,
    agent_sds,
    mesh_tls_params,
)

# Values a mesh client sends for HTTP inside mTLS. Istio's proxies send the first three;
# pilotfish clients that know they carry HTTP on a sniffed port send the same, so one
# match list serves both.
MESH_HTTP_ALPN = ("istio-http/1.0", "istio-http/1.1", "istio-h2")
# Values that mean "mesh mTLS, bytes not known to be HTTP".
MESH_TCP_ALPN = (MESH_ALPN, "istio-peer-exchange")
ALL_MESH_ALPN = (*MESH_TCP_ALPN, *MESH_HTTP_ALPN)

# What the server negotiates on HTTP chains: a mesh client offering ``h2`` gets it, one
# offering only mesh values negotiates nothing and the HTTP connection manager then tells
# HTTP/1 from HTTP/2 by the connection preface.
SERVER_HTTP_ALPN = ("h2", "http/1.1")


def trust_domain_matcher(trust_domain: str) -> common_pb2.SubjectAltNameMatcher:
    """Any SPIFFE ID of the trust domain: which workload it is, is authorization's call."""
    return common_pb2.SubjectAltNameMatcher(
        san_type=common_pb2.SubjectAltNameMatcher.URI,
        matcher=string_pb2.StringMatcher(prefix=f"spiffe://{trust_domain}/"),
    )


def downstream_context(trust_domain: str, http: bool) -> tls_pb2.DownstreamTlsContext:
    """The context a sidecar terminates mesh mTLS with."""
    common = tls_pb2.CommonTlsContext(
        tls_params=mesh_tls_params(),
        tls_certificate_sds_secret_configs=[agent_sds(WORKLOAD_SECRET)],
        alpn_protocols=list(SERVER_HTTP_ALPN) if http else [],
    )
    validation = common.combined_validation_context
    validation.default_validation_context.match_typed_subject_alt_names.append(
        trust_domain_matcher(trust_domain)
    )
    validation.validation_context_sds_secret_config.CopyFrom(agent_sds(ROOT_SECRET))
    context = tls_pb2.DownstreamTlsContext(common_tls_context=common)
    context.require_client_certificate.value = True
    return context


def transport_socket(trust_domain: str, http: bool) -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(
        name=TLS_TRANSPORT_SOCKET, typed_config=pack(downstream_context(trust_domain, http))
    )
