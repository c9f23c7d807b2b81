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
}


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
class FilterChain:
    name: str
    destination_port: int  # 0: any
    network: TcpProxy | HttpManager


@attrs.frozen
class Listener:
    name: str
    host: str
    port: int
    chains: tuple[FilterChain, ...]
    resource: Message | None = attrs.field(default=None, eq=False, repr=False)

    def chain(self, destination_port: int) -> FilterChain | None:
        exact = [c for c in self.chains if c.destination_port == destination_port]
        found = exact or [c for c in self.chains if not c.destination_port]
        return found[0] if found else None


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


def build_listener(resource: listener_pb2.Listener) -> Listener:
    chains = []
    for index, chain in enumerate(resource.filter_chains):
        where = f"filter_chains[{index}]"
        if len(chain.filters) != 1:
            raise subset.Unsupported(f"{where}.filters", "the native proxy runs exactly one "
                                     "network filter per chain (tcp_proxy or "
                                     "http_connection_manager)")
        chains.append(FilterChain(
            chain.name, chain.filter_chain_match.destination_port.value,
            _network(chain.filters[0], f"{where}.filters[0]")))
    address = resource.address.socket_address
    return Listener(resource.name, address.address, address.port_value, tuple(chains),
                    resource)


@attrs.define
class ConfigState:
    """Everything accepted so far, by type and name."""

    clusters: dict[str, Cluster] = attrs.field(factory=dict)
    endpoints: dict[str, tuple[Endpoint, ...]] = attrs.field(factory=dict)
    listeners: dict[str, Listener] = attrs.field(factory=dict)
    routes: dict[str, routing.RouteTable] = attrs.field(factory=dict)
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
            types.LISTENER: self.listeners, types.ROUTE: self.routes}
        return tables[type_url]

    @staticmethod
    def _build(type_url: str, resource: Any) -> Any:
        if type_url == types.CLUSTER:
            return build_cluster(resource)
        if type_url == types.ENDPOINT:
            return tuple(endpoints_of(resource))
        if type_url == types.LISTENER:
            return build_listener(resource)
        return routing.compile_routes(resource)

    def eds_names(self) -> set[str]:
        return {c.service_name for c in self.clusters.values() if c.kind == "EDS"}

    def rds_names(self) -> set[str]:
        return {chain.network.route_name for listener in self.listeners.values()
                for chain in listener.chains
                if isinstance(chain.network, HttpManager) and chain.network.route_name}

    def endpoints_of(self, cluster: Cluster) -> tuple[Endpoint, ...]:
        if cluster.kind == "STATIC":
            return cluster.endpoints
        return self.endpoints.get(cluster.service_name, ())
