"""The native proxy's configuration: the xDS resources it accepted, as what it runs.

Sans-IO. :class:`ConfigState` takes each xDS update (resources added or changed, names
removed) for one type, checks every resource against the subset (``subset.check``) and
builds its runtime form; one bad resource refuses the whole update (``Rejected``, which the
client turns into a NACK naming the resource, field and type URL) and the state keeps what
it had. The runtime forms are frozen: a connection holds the listener or route table it
started with while the proxy swaps in new ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from pilotfish.core.native import access_log, routing, subset
from pilotfish.core.xds import types

TCP_PROXY = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
STDOUT_LOG = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
MESSAGES: Mapping[str, type[Message]] = {
    types.CLUSTER: cluster_pb2.Cluster,
    types.ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    types.LISTENER: listener_pb2.Listener,
    types.ROUTE: route_pb2.RouteConfiguration,
    types.SECRET: secret_pb2.Secret,
}
SPOKEN_ALPN = ("http/1.1",)  # what the native proxy speaks (ALPN offers are cut to these)


class Rejected(Exception):
    """An update the proxy cannot take; the message is the NACK's error detail."""


@attrs.frozen
class Endpoint:
    host: str
    port: int
    weight: int = 1
    healthy: bool = True


@attrs.frozen
class Cluster:
    name: str
    kind: str  # EDS | STATIC
    service_name: str  # what EDS knows it by
    lb: str  # ROUND_ROBIN | LEAST_REQUEST | RANDOM
    connect_timeout: float
    endpoints: tuple[Endpoint, ...] = ()  # STATIC's own; EDS's come from ``ConfigState``
    max_connections: int = 2**32 - 1
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    resource: Message | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class TcpProxy:
    cluster: str
    stat_prefix: str
    idle_timeout: float = 3600.0
    access: access_log.Format | None = None  # the stdout access log's format


@attrs.frozen
class HttpManager:
    stat_prefix: str
    route_name: str  # RDS name ("" with an inline table)
    inline: routing.RouteTable | None
    websocket: bool
    access: access_log.Format | None  # the stdout access log's format


@attrs.frozen
class Termination:
    """TLS ended at the listener with a certificate from SDS."""

    secret: str
    alpn: tuple[str, ...] = ()
    min_version: str = "TLSv1_2"
    max_version: str = ""


@attrs.frozen
class TlsSecret:
    chain: bytes
    key: bytes


@attrs.frozen
class FilterChain:
    name: str
    destination_port: int  # 0: any
    network: TcpProxy | HttpManager
    server_names: tuple[str, ...] = ()
    tls: Termination | None = None

    def serves(self, server_name: str) -> int:
        """How well this chain's server names match (Envoy's order): 3 exact, 2 wildcard,
        1 any name (none listed), 0 not at all."""
        if not self.server_names:
            return 1
        name = server_name.lower()
        if name in self.server_names:
            return 3
        if any(n.startswith("*.") and name.endswith(n[1:]) for n in self.server_names):
            return 2
        return 0


@attrs.frozen
class Listener:
    name: str
    host: str
    port: int
    chains: tuple[FilterChain, ...]
    resource: Message | None = attrs.field(default=None, eq=False, repr=False)

    def chain(self, destination_port: int, server_name: str = "") -> FilterChain | None:
        exact = [c for c in self.chains if c.destination_port == destination_port]
        found = exact or [c for c in self.chains if not c.destination_port]
        ranked = sorted(((c.serves(server_name), i) for i, c in enumerate(found)),
                        key=lambda r: (-r[0], r[1]))
        return found[ranked[0][1]] if ranked and ranked[0][0] else None

    @property
    def tls(self) -> bool:
        return any(c.tls is not None for c in self.chains)

    def secrets(self) -> set[str]:
        return {c.tls.secret for c in self.chains if c.tls is not None}


def _seconds(duration: Any, default: float) -> float:
    return duration.ToTimedelta().total_seconds() if duration.ByteSize() else default


def build_cluster(resource: cluster_pb2.Cluster) -> Cluster:
    kind = cluster_pb2.Cluster.DiscoveryType.Name(resource.type)
    if kind not in ("EDS", "STATIC"):
        raise subset.Unsupported("type", f"cluster type {kind} is not supported by the "
                                 "native proxy (EDS, STATIC are)")
    lb = cluster_pb2.Cluster.LbPolicy.Name(resource.lb_policy)
    if lb not in ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"):
        raise subset.Unsupported("lb_policy", f"load balancing {lb} is not supported by the "
                                 "native proxy")
    endpoints = tuple(endpoints_of(resource.load_assignment)) if kind == "STATIC" else ()
    limit = 2**32 - 1
    for threshold in resource.circuit_breakers.thresholds:
        if threshold.priority == 0 and threshold.HasField("max_connections"):
            limit = threshold.max_connections.value
    return Cluster(
        name=resource.name, kind=kind,
        service_name=resource.eds_cluster_config.service_name or resource.name, lb=lb,
        connect_timeout=_seconds(resource.connect_timeout, 5.0), endpoints=endpoints,
        max_connections=limit,
        metadata=json_format.MessageToDict(resource.metadata) if resource.HasField(
            "metadata") else {},
        resource=resource)


def endpoints_of(assignment: endpoint_pb2.ClusterLoadAssignment) -> list[Endpoint]:
    out = []
    for locality in assignment.endpoints:
        if locality.priority:  # failover priorities: only the first is served here
            continue
        for lb_endpoint in locality.lb_endpoints:
            address = lb_endpoint.endpoint.address.socket_address
            weight = lb_endpoint.load_balancing_weight.value or 1
            out.append(Endpoint(address.address, address.port_value, weight,
                                lb_endpoint.health_status in (0, 1)))  # UNKNOWN, HEALTHY
    return out


def _access_format(logs: Iterable[Any]) -> access_log.Format | None:
    for log in logs:
        if log.typed_config.type_url.endswith(STDOUT_LOG):
            message: Any = subset.unpack(log.typed_config)
            text = str(message.log_format.text_format_source.inline_string)
            return access_log.compile_format(text or access_log.DEFAULT_FORMAT)
    return None


def _network(filter_: Any, where: str) -> TcpProxy | HttpManager:
    message = subset.unpack(filter_.typed_config, f"{where}.typed_config")
    if isinstance(message, tcp_proxy_pb2.TcpProxy):
        if not message.cluster:
            raise subset.Unsupported(f"{where}.typed_config", "tcp_proxy without a cluster")
        return TcpProxy(message.cluster, message.stat_prefix,
                        _seconds(message.idle_timeout, 3600.0),
                        _access_format(message.access_log))
    if isinstance(message, hcm_pb2.HttpConnectionManager):
        for index, http_filter in enumerate(message.http_filters):
            subset.unpack(http_filter.typed_config, f"{where}.http_filters[{index}]")
        inline = routing.compile_routes(message.route_config) if message.HasField(
            "route_config") else None
        return HttpManager(
            message.stat_prefix, message.rds.route_config_name, inline,
            any(u.upgrade_type.lower() == "websocket" for u in message.upgrade_configs),
            _access_format(message.access_log))
    raise subset.Unsupported(where, f"network filter {filter_.name} is not supported")


def _termination(socket: Any, where: str) -> Termination:
    message = subset.unpack(socket.typed_config, f"{where}.typed_config")
    if not isinstance(message, tls_pb2.DownstreamTlsContext):
        raise subset.Unsupported(f"{where}.typed_config", "a listener's transport socket must "
                                 "be a DownstreamTlsContext")
    if message.require_client_certificate.value:
        raise subset.Unsupported(f"{where}.typed_config.require_client_certificate",
                                 "client certificates (mutual TLS) are not supported by the "
                                 "native proxy yet")
    common = message.common_tls_context
    if len(common.tls_certificate_sds_secret_configs) != 1:
        raise subset.Unsupported(f"{where}.typed_config.common_tls_context",
                                 "expected one SDS certificate")
    versions = common_pb2.TlsParameters.TlsProtocol
    params = common.tls_params
    return Termination(
        common.tls_certificate_sds_secret_configs[0].name,
        tuple(a for a in common.alpn_protocols if a in SPOKEN_ALPN),
        versions.Name(params.tls_minimum_protocol_version)
        if params.tls_minimum_protocol_version else "TLSv1_2",
        versions.Name(params.tls_maximum_protocol_version)
        if params.tls_maximum_protocol_version else "")


def build_listener(resource: listener_pb2.Listener) -> Listener:
    chains = []
    for index, chain in enumerate(resource.filter_chains):
        where = f"filter_chains[{index}]"
        if len(chain.filters) != 1:
            raise subset.Unsupported(f"{where}.filters", "the native proxy runs exactly one "
                                     "network filter per chain (tcp_proxy or "
                                     "http_connection_manager)")
        tls = _termination(chain.transport_socket, f"{where}.transport_socket") \
            if chain.HasField("transport_socket") else None
        chains.append(FilterChain(
            chain.name, chain.filter_chain_match.destination_port.value,
            _network(chain.filters[0], f"{where}.filters[0]"),
            tuple(n.lower() for n in chain.filter_chain_match.server_names), tls))
    if chains and len({c.tls is None for c in chains}) > 1:
        raise subset.Unsupported("filter_chains", "a listener mixing TLS and plaintext "
                                 "chains is not supported by the native proxy yet")
    address = resource.address.socket_address
    return Listener(resource.name, address.address, address.port_value, tuple(chains),
                    resource)


def build_secret(resource: secret_pb2.Secret) -> TlsSecret | None:
    """A certificate and key (None for a trust bundle, which nothing here uses yet)."""
    if not resource.HasField("tls_certificate"):
        return None
    certificate = resource.tls_certificate

    def data(source: Any) -> bytes:
        return bytes(source.inline_bytes) or source.inline_string.encode()
    return TlsSecret(data(certificate.certificate_chain), data(certificate.private_key))


@attrs.define
class ConfigState:
    """Everything accepted so far, by type and name."""

    clusters: dict[str, Cluster] = attrs.field(factory=dict)
    endpoints: dict[str, tuple[Endpoint, ...]] = attrs.field(factory=dict)
    listeners: dict[str, Listener] = attrs.field(factory=dict)
    routes: dict[str, routing.RouteTable] = attrs.field(factory=dict)
    secrets: dict[str, TlsSecret | None] = attrs.field(factory=dict)
    resources: dict[str, dict[str, Message]] = attrs.field(
        factory=lambda: {type_url: {} for type_url in MESSAGES})
    versions: dict[str, str] = attrs.field(factory=dict)

    def apply(self, type_url: str, added: Iterable[tuple[str, bytes]],
              removed: Iterable[str], version: str = "") -> None:
        """Take one update of ``type_url`` (serialized resources by name), all or nothing;
        raise ``Rejected`` naming the resource, the field and the type."""
        message_type = MESSAGES.get(type_url)
        if message_type is None:
            raise Rejected(f"{type_url}: the native proxy does not take this type")
        built: dict[str, tuple[Message, Any]] = {}
        for name, data in added:
            resource = message_type()
            try:
                resource.ParseFromString(data)
                subset.check(resource)
                built[name] = (resource, self._build(type_url, resource))
            except subset.Unsupported as exc:
                raise Rejected(f"{type_url} {name}: {exc}") from None
            except Exception as exc:  # a decode error, a bad regex: refused, named
                raise Rejected(f"{type_url} {name}: {type(exc).__name__}: {exc}") from None
        table = self._table(type_url)
        for name in removed:
            table.pop(name, None)
            self.resources[type_url].pop(name, None)
        for name, (resource, runtime) in built.items():
            table[name] = runtime
            self.resources[type_url][name] = resource
        if version:
            self.versions[type_url] = version

    def _table(self, type_url: str) -> dict[str, Any]:
        tables: dict[str, dict[str, Any]] = {
            types.CLUSTER: self.clusters, types.ENDPOINT: self.endpoints,
            types.LISTENER: self.listeners, types.ROUTE: self.routes,
            types.SECRET: self.secrets}
        return tables[type_url]

    @staticmethod
    def _build(type_url: str, resource: Any) -> Any:
        if type_url == types.CLUSTER:
            return build_cluster(resource)
        if type_url == types.ENDPOINT:
            return tuple(endpoints_of(resource))
        if type_url == types.LISTENER:
            return build_listener(resource)
        if type_url == types.SECRET:
            return build_secret(resource)
        return routing.compile_routes(resource)

    def eds_names(self) -> set[str]:
        return {c.service_name for c in self.clusters.values() if c.kind == "EDS"}

    def rds_names(self) -> set[str]:
        return {chain.network.route_name for listener in self.listeners.values()
                for chain in listener.chains
                if isinstance(chain.network, HttpManager) and chain.network.route_name}

    def secret_names(self) -> set[str]:
        return {name for listener in self.listeners.values() for name in listener.secrets()}

    def endpoints_of(self, cluster: Cluster) -> tuple[Endpoint, ...]:
        if cluster.kind == "STATIC":
            return cluster.endpoints
        return self.endpoints.get(cluster.service_name, ())
