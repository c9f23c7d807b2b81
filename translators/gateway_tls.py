"""A Gateway server's ``tls`` block → the DownstreamTlsContext of its filter chain.

Certificates come from one of three places: a ``credentialName`` (a Kubernetes secret that
discovery serves over ADS as SDS resource ``kubernetes://<name>``, its CA as
``kubernetes://<name>-cacert``), files on the gateway's disk (which the gateway's agent
serves over SDS as ``file-cert:`` and ``file-root:`` secrets), or for ISTIO_MUTUAL the
workload certificate and mesh root the agent serves on its ``sds-grpc`` cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from pilotfish.core.push_context import GatewayServer
from pilotfish.core.security import file_secrets
from pilotfish.translators.common import pack
from pilotfish.translators.upstream_tls import (
    ROOT_SECRET,
    WORKLOAD_SECRET,
    agent_sds,
    credential_sds,
)

TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"

TERMINATING_MODES = frozenset({"SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL", "ISTIO_MUTUAL"})
_VERSIONS = {
    "TLSV1_0": common_pb2.TlsParameters.TLSv1_0,
    "TLSV1_1": common_pb2.TlsParameters.TLSv1_1,
    "TLSV1_2": common_pb2.TlsParameters.TLSv1_2,
    "TLSV1_3": common_pb2.TlsParameters.TLSv1_3,
}


class GatewayTlsError(ValueError):
    """A server's ``tls`` block cannot be served (the message says which field)."""


def tls_mode(server: GatewayServer) -> str:
    # The API's zero value is PASSTHROUGH: an HTTPS server without a mode passes TLS through.
    return str(server.tls.get("mode") or "PASSTHROUGH").upper()


def terminates_tls(server: GatewayServer) -> bool:
    return tls_mode(server) in TERMINATING_MODES


def _peer_checks(tls: Mapping[str, Any]) -> common_pb2.CertificateValidationContext:
    """What a client certificate must carry beyond a trusted chain."""
    checks = common_pb2.CertificateValidationContext(
        verify_certificate_spki=[str(v) for v in tls.get("verifyCertificateSpki") or ()],
        verify_certificate_hash=[str(v) for v in tls.get("verifyCertificateHash") or ()],
    )
    for name in tls.get("subjectAltNames") or ():
        kind = (common_pb2.SubjectAltNameMatcher.URI if str(name).startswith("spiffe://")
                else common_pb2.SubjectAltNameMatcher.DNS)
        checks.match_typed_subject_alt_names.append(common_pb2.SubjectAltNameMatcher(
            san_type=kind, matcher=string_pb2.StringMatcher(exact=str(name))
        ))
    return checks


def _tls_params(tls: Mapping[str, Any]) -> common_pb2.TlsParameters:
    params = common_pb2.TlsParameters(
        tls_minimum_protocol_version=_VERSIONS.get(
            str(tls.get("minProtocolVersion") or "TLSV1_2").upper(),
            common_pb2.TlsParameters.TLSv1_2,
        ),
        cipher_suites=[str(c) for c in tls.get("cipherSuites") or ()],
    )
    maximum = _VERSIONS.get(str(tls.get("maxProtocolVersion") or "").upper())
    if maximum is not None:
        params.tls_maximum_protocol_version = maximum
    return params


def downstream_tls(server: GatewayServer, http: bool) -> tls_pb2.DownstreamTlsContext:
    """The TLS context terminating a server's connections; raises GatewayTlsError."""
    where = f"Gateway {server.gateway.ref} server {server.index} (port {server.port})"
    return server_tls(server.tls, where, http)


def server_tls(tls: Mapping[str, Any], where: str, http: bool) -> tls_pb2.DownstreamTlsContext:
    """A ServerTLSSettings block (a Gateway server's, a Sidecar ingress listener's) as the
    context terminating its connections; raises GatewayTlsError naming ``where``."""
    mode = str(tls.get("mode") or "PASSTHROUGH").upper()
    if mode not in TERMINATING_MODES:
        raise GatewayTlsError(f"{where}: tls.mode {mode} does not terminate TLS")
    common = tls_pb2.CommonTlsContext(
        tls_params=_tls_params(tls), alpn_protocols=["h2", "http/1.1"] if http else []
    )
    mutual = mode in ("MUTUAL", "OPTIONAL_MUTUAL", "ISTIO_MUTUAL")
    credential = str(tls.get("credentialName") or "")
    if mode == "ISTIO_MUTUAL":
        common.tls_certificate_sds_secret_configs.append(agent_sds(WORKLOAD_SECRET))
        ca_secret: secret_pb2.SdsSecretConfig | None = agent_sds(ROOT_SECRET)
    elif credential:
        common.tls_certificate_sds_secret_configs.append(credential_sds(credential))
        ca_name = str(tls.get("caCertCredentialName") or f"{credential}-cacert")
        ca_secret = credential_sds(ca_name) if mutual else None
    elif tls.get("serverCertificate") and tls.get("privateKey"):
        # Through the agent's SDS, as Istio: the listener waits for files not there yet.
        common.tls_certificate_sds_secret_configs.append(agent_sds(file_secrets.cert_name(
            str(tls["serverCertificate"]), str(tls["privateKey"]))))
        ca_secret = None
        if mutual:
            if not tls.get("caCertificates"):
                raise GatewayTlsError(f"{where}: tls.mode {mode} needs tls.caCertificates")
            ca_secret = agent_sds(file_secrets.root_name(str(tls["caCertificates"])))
    else:
        raise GatewayTlsError(
            f"{where}: tls.mode {mode} needs tls.credentialName or "
            "tls.serverCertificate and tls.privateKey"
        )
    if ca_secret is not None:
        common.combined_validation_context.default_validation_context.CopyFrom(_peer_checks(tls))
        common.combined_validation_context.validation_context_sds_secret_config.CopyFrom(
            ca_secret
        )
    context = tls_pb2.DownstreamTlsContext(common_tls_context=common)
    # OPTIONAL_MUTUAL asks for a client certificate but admits clients without one.
    context.require_client_certificate.value = mode in ("MUTUAL", "ISTIO_MUTUAL")
    return context


def transport_socket(context: tls_pb2.DownstreamTlsContext) -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=pack(context))
