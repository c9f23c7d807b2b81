"""DestinationRule ``tls`` → the cluster's upstream TLS transport socket.

DISABLE sends plaintext; SIMPLE originates TLS and verifies the server (given CA file, a
credential served over SDS, or the system roots); MUTUAL adds a client certificate. Files
are handed over by the agent's SDS (``file-cert:``/``file-root:``, as Istio's agent);
ISTIO_MUTUAL uses the workload certificate and mesh root the agent serves over SDS
(secrets ``default`` and ``ROOTCA`` on the ``sds-grpc`` cluster of the bootstrap).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2, grpc_service_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from pilotfish.core.gateway_api.backend_tls import CONFIGMAP_REF
from pilotfish.core.protocol import Protocol
from pilotfish.core.proxy_backend import SDS_CLUSTER
from pilotfish.core.security import file_secrets
from pilotfish.translators.common import ads_config_source, pack

TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"
WORKLOAD_SECRET = "default"
ROOT_SECRET = "ROOTCA"
CREDENTIAL_PREFIX = "kubernetes://"
# The ALPN value that marks a connection as mesh mTLS (see inbound_tls for the scheme).
MESH_ALPN = "istio"
# Istio's default for mesh mTLS: forward-secret AEAD suites first, two static-RSA AEAD
# suites kept for old peers. TLS 1.3 suites are not configurable in Envoy and all allowed.
CIPHER_SUITES = (
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
)


def client_alpn(protocol: Protocol) -> list[str]:
    """ALPN a mesh client offers: the mesh marker, plus ``h2`` when the cluster speaks
    HTTP/2 so that the server's connection manager negotiates it."""
    return [MESH_ALPN, "h2"] if protocol.is_http2 else [MESH_ALPN]


def mesh_tls_params() -> common_pb2.TlsParameters:
    return common_pb2.TlsParameters(
        tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2,
        tls_maximum_protocol_version=common_pb2.TlsParameters.TLSv1_3,
        cipher_suites=list(CIPHER_SUITES),
    )


def agent_sds(name: str) -> secret_pb2.SdsSecretConfig:
    """A secret served by the pilotfish agent over its SDS socket."""
    return secret_pb2.SdsSecretConfig(
        name=name,
        sds_config=config_source_pb2.ConfigSource(
            api_config_source=config_source_pb2.ApiConfigSource(
                api_type=config_source_pb2.ApiConfigSource.GRPC,
                set_node_on_first_message_only=True,
                transport_api_version=config_source_pb2.V3,
                grpc_services=[grpc_service_pb2.GrpcService(
                    envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=SDS_CLUSTER)
                )],
            ),
            resource_api_version=config_source_pb2.V3,
        ),
    )


def credential_sds(name: str, prefix: str = CREDENTIAL_PREFIX) -> secret_pb2.SdsSecretConfig:
    """A ``credentialName`` secret, served by discovery over ADS."""
    source = ads_config_source()
    source.ClearField("initial_fetch_timeout")  # a missing secret must not block forever
    return secret_pb2.SdsSecretConfig(name=prefix + name, sds_config=source)


def _san_matchers(names: list[str]) -> list[common_pb2.SubjectAltNameMatcher]:
    out = []
    for name in names:
        kind = (common_pb2.SubjectAltNameMatcher.URI if name.startswith("spiffe://")
                else common_pb2.SubjectAltNameMatcher.DNS)
        out.append(common_pb2.SubjectAltNameMatcher(
            san_type=kind, matcher=string_pb2.StringMatcher(exact=name)
        ))
    return out


def istio_mutual_context(
    sni: str, sans: list[str], alpn: list[str]
) -> tls_pb2.UpstreamTlsContext:
    common = tls_pb2.CommonTlsContext(
        tls_params=common_pb2.TlsParameters(
            tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2,
            tls_maximum_protocol_version=common_pb2.TlsParameters.TLSv1_3,
        ),
        tls_certificate_sds_secret_configs=[agent_sds(WORKLOAD_SECRET)],
        alpn_protocols=alpn,
    )
    common.combined_validation_context.default_validation_context.match_typed_subject_alt_names.extend(
        _san_matchers(sans)
    )
    common.combined_validation_context.validation_context_sds_secret_config.CopyFrom(
        agent_sds(ROOT_SECRET)
    )
    return tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=sni)


def _simple_context(tls: Mapping[str, Any], sni: str, protocol: Protocol, mutual: bool
                    ) -> tls_pb2.UpstreamTlsContext:
    common = tls_pb2.CommonTlsContext()
    if protocol.is_http2:
        common.alpn_protocols.append("h2")
    credential = str(tls.get("credentialName") or "")
    if credential:
        if mutual:
            common.tls_certificate_sds_secret_configs.append(credential_sds(credential))
        # A BackendTLSPolicy's CA ConfigMap is its own resource (core/gateway_api).
        trust = (credential_sds(credential, prefix="") if credential.startswith(CONFIGMAP_REF)
                 else credential_sds(f"{credential}-cacert"))
        common.combined_validation_context.validation_context_sds_secret_config.CopyFrom(trust)
        common.combined_validation_context.default_validation_context.match_typed_subject_alt_names.extend(
            _san_matchers(list(tls.get("subjectAltNames") or []))
        )
    else:
        # Files come through the agent's SDS (core/security/file_secrets.py): the cluster
        # waits for them rather than failing, and takes rotated files without a restart.
        if mutual and tls.get("clientCertificate"):
            common.tls_certificate_sds_secret_configs.append(agent_sds(file_secrets.cert_name(
                str(tls["clientCertificate"]), str(tls.get("privateKey") or ""))))
        if not tls.get("insecureSkipVerify"):
            combined = common.combined_validation_context
            if tls.get("caCertificates"):
                combined.validation_context_sds_secret_config.CopyFrom(
                    agent_sds(file_secrets.root_name(str(tls["caCertificates"]))))
                validation = combined.default_validation_context
            else:
                common.ClearField("combined_validation_context")
                validation = common.validation_context
                validation.trusted_ca.filename = SYSTEM_CA_FILE
            validation.match_typed_subject_alt_names.extend(
                _san_matchers(list(tls.get("subjectAltNames") or []))
            )
            if tls.get("caCrl"):
                validation.crl.filename = tls["caCrl"]
    return tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=tls.get("sni") or sni)


def apply(
    cluster: cluster_pb2.Cluster, tls: Mapping[str, Any], protocol: Protocol,
    host: str = "", istio_sni: str = "", sans: list[str] | None = None,
) -> None:
    mode = str(tls.get("mode") or "DISABLE")
    if mode == "DISABLE":
        cluster.ClearField("transport_socket")
        return
    if mode == "ISTIO_MUTUAL":
        # The same SNI, SANs and ALPN as auto mTLS: a rule spelling out ISTIO_MUTUAL must
        # not reach the server any differently from the default.
        names = list(tls.get("subjectAltNames") or sans or [])
        context = istio_mutual_context(tls.get("sni") or istio_sni, names, client_alpn(protocol))
    else:
        default_sni = host if host and not host.startswith("*") else ""
        context = _simple_context(tls, default_sni, protocol, mutual=mode == "MUTUAL")
    cluster.transport_socket.CopyFrom(base_pb2.TransportSocket(
        name=TLS_TRANSPORT_SOCKET, typed_config=pack(context)
    ))
