"""The bootstrap the native proxy starts from: Envoy's, as the agent writes it.

What it reads: the node (sent on the ADS stream), the admin address, the ADS config
(``DELTA_GRPC`` or ``GRPC``, state of the world) and the static cluster it points at
(``xds-grpc``, one address: a socket address or a unix pipe, in plaintext or mutual TLS
with certificates from the agent's SDS), and the agent's SDS cluster (``sds-grpc``).
Anything the native proxy cannot do with it — REST polling, say — is a ``BootstrapError``
that says so, before the proxy starts.

A bootstrap without ``dynamic_resources`` is a static one (as a hand-written Envoy config):
its ``static_resources`` — listeners, clusters and secrets — are the whole configuration,
checked against the subset as an xDS update would be.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2

# The typed configs a bootstrap's clusters carry, so the JSON parser can resolve them (and
# through the subset, every extension a static bootstrap's listeners may name).
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format

from pilotfish.core.native import subset  # noqa: F401  (registers the extensions' types)
from pilotfish.core.proxy_backend import SDS_CLUSTER
from pilotfish.core.xds import types

PARSED = ("node", "dynamic_resources", "static_resources")
API_TYPES = ("DELTA_GRPC", "GRPC")  # delta and state-of-the-world ADS


class BootstrapError(Exception):
    """The bootstrap cannot run on the native proxy; the message says why."""


@attrs.frozen
class Bootstrap:
    node: base_pb2.Node
    admin_host: str
    admin_port: int
    xds_target: str  # a gRPC target: host:port or unix:PATH ("" for a static bootstrap)
    path: Path
    sds_target: str = ""  # the agent's SDS (static cluster sds-grpc), "" if none
    xds_tls: XdsTls | None = None  # mutual TLS to discovery (through the agent's relay)
    api_type: str = "DELTA_GRPC"  # the ADS flavour: one of API_TYPES
    # a static bootstrap's resources: (type URL, [(name, serialized)]), secrets first
    static: tuple[tuple[str, tuple[tuple[str, bytes], ...]], ...] = ()


@attrs.frozen
class XdsTls:
    """xDS over mutual TLS: the workload certificate and trust bundle from SDS, and the
    name discovery's certificate must carry (sent as SNI)."""

    server_name: str
    certificate: str  # SDS secret names
    trust: str


def _grpc_target(cluster: Any) -> str:
    for locality in cluster.load_assignment.endpoints:
        for lb_endpoint in locality.lb_endpoints:
            address = lb_endpoint.endpoint.address
            if address.HasField("pipe"):
                return f"unix:{address.pipe.path}"
            socket = address.socket_address
            host = f"[{socket.address}]" if ":" in socket.address else socket.address
            return f"{host}:{socket.port_value}"
    raise BootstrapError(f"static cluster {cluster.name} has no endpoint")


def _xds_tls(cluster: Any, path: Path) -> XdsTls:
    context = tls_pb2.UpstreamTlsContext()
    if not cluster.transport_socket.typed_config.Unpack(context):
        raise BootstrapError(f"{path}: static cluster {cluster.name}: the transport socket "
                             "is not an UpstreamTlsContext")
    common = context.common_tls_context
    certificates = common.tls_certificate_sds_secret_configs
    trust = common.combined_validation_context.validation_context_sds_secret_config.name
    if len(certificates) != 1 or not trust or not context.sni:
        raise BootstrapError(f"{path}: static cluster {cluster.name}: xDS over TLS needs one "
                             "SDS certificate, an SDS trust bundle and an SNI")
    return XdsTls(context.sni, certificates[0].name, trust)


def load(path: Path) -> Bootstrap:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BootstrapError(f"{path}: {exc}") from None
    # Only the parts read here are parsed: the rest (stats, overload, runtime) is Envoy's.
    bootstrap = bootstrap_pb2.Bootstrap()
    try:
        json_format.ParseDict({key: data[key] for key in PARSED if key in data}, bootstrap)
    except json_format.ParseError as exc:
        raise BootstrapError(f"{path}: {exc}") from None
    admin = (data.get("admin") or {}).get("address", {}).get("socket_address", {})
    admin_host, admin_port = str(admin.get("address") or "127.0.0.1"), \
        int(admin.get("port_value") or 15000)
    if not bootstrap.HasField("dynamic_resources"):
        return Bootstrap(bootstrap.node, admin_host, admin_port, "", path,
                         static=_static(bootstrap.static_resources))
    ads = bootstrap.dynamic_resources.ads_config
    api_type = config_source_pb2.ApiConfigSource.ApiType.Name(ads.api_type)
    if api_type not in API_TYPES:
        raise BootstrapError(f"{path}: dynamic_resources.ads_config.api_type {api_type}: the "
                             "native proxy speaks ADS over gRPC only, delta (DELTA_GRPC) or "
                             "state of the world (GRPC)")
    if len(ads.grpc_services) != 1 or not ads.grpc_services[0].envoy_grpc.cluster_name:
        raise BootstrapError(f"{path}: dynamic_resources.ads_config: expected one "
                             "envoy_grpc service")
    name = ads.grpc_services[0].envoy_grpc.cluster_name
    cluster = next((c for c in bootstrap.static_resources.clusters if c.name == name), None)
    if cluster is None:
        raise BootstrapError(f"{path}: the ADS cluster {name} is not a static cluster")
    xds_tls = _xds_tls(cluster, path) if cluster.HasField("transport_socket") else None
    sds = next((c for c in bootstrap.static_resources.clusters if c.name == SDS_CLUSTER), None)
    return Bootstrap(bootstrap.node, admin_host, admin_port,
                     _grpc_target(cluster), path, _grpc_target(sds) if sds else "", xds_tls,
                     api_type)


def _static(resources: Any) -> tuple[tuple[str, tuple[tuple[str, bytes], ...]], ...]:
    return tuple((type_url, tuple((item.name, item.SerializeToString()) for item in items))
                 for type_url, items in ((types.SECRET, resources.secrets),
                                         (types.CLUSTER, resources.clusters),
                                         (types.LISTENER, resources.listeners)))
