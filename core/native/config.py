"""The native proxy's configuration: the xDS resources it accepted, as what it runs.

Sans-IO. :class:`ConfigState` takes each xDS update (resources added or changed, names
removed) for one type, checks every resource against the subset (``subset.check``) and
builds its runtime form; one bad resource refuses the whole update (``Rejected``, which the
client turns into a NACK naming the resource, field and type URL) and the state keeps what
it had. The runtime forms are frozen: a connection holds the listener or route table it
started with while the proxy swaps in new ones.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.common.set_filter_state.v3 import value_pb2  # noqa: F401
from envoy.extensions.filters.http.set_filter_state.v3 import (
    set_filter_state_pb2 as http_state_pb2,
)
from envoy.extensions.filters.listener.original_src.v3 import original_src_pb2
from envoy.extensions.filters.network.direct_response.v3 import config_pb2 as direct_pb2
from envoy.extensions.filters.network.echo.v3 import echo_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.filters.network.set_filter_state.v3 import (
    set_filter_state_pb2 as network_state_pb2,
)
from envoy.extensions.filters.network.sni_cluster.v3 import sni_cluster_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.internal_upstream.v3 import (
    internal_upstream_pb2 as internal_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from pilotfish.core.metric_overrides import ALL_OFF, NO_OVERRIDES, Overrides
from pilotfish.core.native import (
    access_log,
    breakers,
    filter_state,
    hashing,
    http_filters,
    matchers,
    outlier,
    rbac,
    routing,
    subset,
)
from pilotfish.core.native.sockets import Keepalive
from pilotfish.core.native.tls import load_identity
from pilotfish.core.xds import types

TCP_PROXY = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
STDOUT_LOG = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
GRPC_LOGS = ("envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
             "envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig")
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
MESSAGES: Mapping[str, type[Message]] = {
    types.CLUSTER: cluster_pb2.Cluster,
    types.ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    types.LISTENER: listener_pb2.Listener,
    types.ROUTE: route_pb2.RouteConfiguration,
    types.SECRET: secret_pb2.Secret,
}
SPOKEN_ALPN = ("h2", "http/1.1")  # what the native proxy speaks (ALPN offers are cut to these)


class Rejected(Exception):
    """An update the proxy cannot take; the message is the NACK's error detail."""


@attrs.frozen
class Update:
    """One update of one type, as :meth:`ConfigState.apply` takes it."""

    type_url: str
    added: list[tuple[str, bytes]]
    removed: list[str]
    version: str = ""


# The endpoint metadata namespace transport_socket_matches match on (Envoy's).
SOCKET_MATCH = "envoy.transport_socket_match"


@attrs.frozen
class Endpoint:
    host: str
    port: int
    weight: int = 1
    healthy: bool = True
    tls_mode: str = ""  # the endpoint's istio metadata tlsMode ("istio" with a sidecar)
    priority: int = 0
    locality: str = ""  # region/zone/sub_zone
    locality_weight: int = 0  # its LocalityLbEndpoints' load_balancing_weight (0: unset)
    # an internal address: the internal listener it reaches (host and port are then its
    # endpoint_id's "ip:port", or the listener's name and 0), and the string values of its
    # metadata (namespace, key, value), of which the cluster's internal transport passes on
    # the namespaces it names
    internal: str = ""
    metadata: tuple[tuple[str, str, str], ...] = ()

    def socket_match(self, key: str) -> str:
        """The endpoint's value for ``key`` in what transport_socket_matches match on
        (``envoy.transport_socket_match``; "" when it has none)."""
        if key == "tlsMode" and self.tls_mode:
            return self.tls_mode
        return next((value for namespace, name, value in self.metadata
                     if namespace == SOCKET_MATCH and name == key), "")


@attrs.frozen
class SocketMatch:
    """One of a cluster's transport_socket_matches: what an endpoint's
    ``envoy.transport_socket_match`` metadata must hold (every key; none: any endpoint),
    and the transport it then gets: TLS (None: plaintext) and, for an internal upstream
    transport, the host metadata namespaces it passes to the internal listener."""

    criteria: tuple[tuple[str, str], ...]
    tls: Origination | None = None
    passthrough: tuple[str, ...] | None = None

    def takes(self, endpoint: Endpoint | None) -> bool:
        if endpoint is None:
            return not self.criteria
        return all(endpoint.socket_match(key) == value for key, value in self.criteria)


@attrs.frozen
class Cluster:
    name: str
    kind: str  # EDS | STATIC | ORIGINAL_DST
    service_name: str  # what EDS knows it by
    lb: str  # ROUND_ROBIN | LEAST_REQUEST | RANDOM | RING_HASH | MAGLEV | CLUSTER_PROVIDED
    connect_timeout: float
    endpoints: tuple[Endpoint, ...] = ()  # STATIC's own; EDS's come from ``ConfigState``
    limits: breakers.Limits = attrs.field(factory=breakers.Limits)
    outlier_detection: outlier.Outlier | None = None
    locality_weighted: bool = False  # common_lb_config.locality_weighted_lb_config
    ring_size: tuple[int, int] = (hashing.RING_MIN, hashing.RING_MAX)  # RING_HASH (min, max)
    maglev_size: int = hashing.MAGLEV_SIZE
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    resource: Message | None = attrs.field(default=None, eq=False, repr=False)
    bind_address: str = ""  # upstream_bind_config: connect from this address
    max_requests_per_connection: int = 0  # 0: no limit
    idle_timeout: float = 0.0  # an upstream connection idle this long is not reused (0: default)
    max_connection_duration: float = 0.0  # nor one open this long (0: no limit)
    panic_threshold: float = 50.0  # healthy_panic_threshold, percent (Envoy's default)
    keepalive: Keepalive | None = None  # upstream_connection_options.tcp_keepalive
    slow_start: SlowStart | None = None  # round robin's or least request's slow_start_config
    tls: Origination | None = None
    protocol: str = "http1"  # to the endpoints: http1 | h2 | downstream (as the request came)
    # transport_socket_matches, in order: the first that takes an endpoint decides its
    # transport, else the cluster's own (tls, passthrough)
    tls_matches: tuple[SocketMatch, ...] = ()
    # internal_upstream transport: the host metadata namespaces passed to the internal
    # listener (None: not an internal transport)
    passthrough: tuple[str, ...] | None = None
    port_override: int = 0  # ORIGINAL_DST: connect to this port of the original destination

    def _match(self, endpoint: Endpoint | None) -> SocketMatch | None:
        return next((m for m in self.tls_matches if m.takes(endpoint)), None)

    def origination(self, endpoint: Endpoint | None) -> Origination | None:
        """The TLS to use towards ``endpoint`` (auto mTLS picks it by the endpoint)."""
        match = self._match(endpoint)
        return self.tls if match is None else match.tls

    def passthrough_for(self, endpoint: Endpoint) -> tuple[str, ...] | None:
        """What the internal upstream transport towards ``endpoint`` passes on (as
        `passthrough`), chosen as `origination` is."""
        match = self._match(endpoint)
        return self.passthrough if match is None else match.passthrough


@attrs.frozen
class SlowStart:
    window: float  # seconds a new host warms up
    aggression: float = 1.0
    min_weight: float = 0.1  # a warming host's least share of its weight


@attrs.frozen
class TcpProxy:
    cluster: str
    stat_prefix: str
    idle_timeout: float = 3600.0
    logging: Logging = attrs.Factory(lambda: Logging())
    tunnel: str = ""  # tunneling_config: CONNECT to this authority through the cluster
    hash_policy: tuple[hashing.HashPolicy, ...] = ()  # for RING_HASH / MAGLEV clusters
    # the authority rendered from the connection (a format string such as
    # %DOWNSTREAM_LOCAL_ADDRESS%); None: ``tunnel`` as it is
    tunnel_render: filter_state.Render | None = attrs.field(default=None, eq=False)


@attrs.frozen
class DirectResponse:
    """direct_response: these bytes (often none), then the connection is closed. On an
    internal listener it is a refusal: the tunnel that led there answers 503."""

    body: bytes = b""


@attrs.frozen
class Echo:
    """The echo network filter: what comes in goes back (a test's or a probe's app)."""


@attrs.frozen
class HttpManager:
    stat_prefix: str
    route_name: str  # RDS name ("" with an inline table)
    inline: routing.RouteTable | None
    websocket: bool
    logging: Logging
    filters: tuple[http_filters.HttpFilter, ...] = ()  # before the router, in order
    connect: bool = False  # CONNECT requests may be terminated (upgrade_configs CONNECT)
    # set_filter_state (on request headers), shared with the connection a CONNECT opens
    state: tuple[filter_state.Setter, ...] = ()


@attrs.frozen
class Validation:
    """How a peer's certificate is checked: the trust bundle from SDS (or inline), and its
    subject alternative names (any matcher; none: any name)."""

    ca_secret: str = ""
    ca_inline: bytes = b""
    sans: tuple[matchers.StringMatch, ...] = ()
    over_ads: bool = False  # the trust bundle comes over ADS (discovery), not the agent

    def names_match(self, names: list[str]) -> bool:
        return not self.sans or any(m.holds(n) for m in self.sans for n in names)


@attrs.frozen
class Termination:
    """TLS ended at the listener with a certificate from SDS."""

    secret: str
    alpn: tuple[str, ...] = ()
    min_version: str = "TLSv1_2"
    max_version: str = ""
    client: Validation | None = None  # a client certificate is required and checked
    over_ads: bool = False  # the certificate comes over ADS (gateway credentials)


@attrs.frozen
class Origination:
    """TLS from a cluster to its endpoints."""

    sni: str = ""
    secret: str = ""  # the client certificate ("" for none)
    alpn: tuple[str, ...] = ()
    server: Validation = Validation()
    over_ads: bool = False  # the client certificate comes over ADS


@attrs.frozen
class TlsSecret:
    chain: bytes = b""
    key: bytes = b""
    ca: bytes = b""  # a trust bundle (ROOTCA, a -cacert)


@attrs.frozen
class FilterChain:
    name: str
    destination_port: int  # 0: any
    network: TcpProxy | HttpManager | Echo | DirectResponse
    server_names: tuple[str, ...] = ()
    tls: Termination | None = None
    transport: str = ""  # "tls" | "raw_buffer" | "" (any)
    alpn: tuple[str, ...] = ()  # application protocols matched (any of them)
    guards: tuple[rbac.Filter, ...] = ()  # network RBAC filters before ``network``
    prefixes: tuple[matchers.Cidr, ...] = ()  # destination addresses matched (any)
    sources: tuple[matchers.Cidr, ...] = ()  # source addresses matched (any)
    source_ports: tuple[int, ...] = ()
    sni_cluster: bool = False  # sni_cluster: tcp_proxy's cluster is the one the SNI names
    state: tuple[filter_state.Setter, ...] = ()  # set_filter_state on the new connection

    def prefix_length(self, address: str) -> int:
        """The longest of this chain's destination prefixes holding ``address``: 0 for a
        chain that names none, -1 when none holds it."""
        return _longest(self.prefixes, address)

    def source_length(self, address: str) -> int:
        return _longest(self.sources, address)

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


def _longest(blocks: tuple[matchers.Cidr, ...], address: str) -> int:
    if not blocks:
        return 0
    lengths = [b.network.prefixlen + 1 for b in blocks if b.holds(address)]
    return max(lengths, default=-1)


@attrs.frozen
class Inspector:
    """A listener filter that looks at the first bytes (tls_inspector, http_inspector)."""

    protocol: str  # "tls" | "http"
    disabled_ports: tuple[tuple[int, int], ...] = ()  # [start, end) ranges

    def applies(self, port: int) -> bool:
        return not any(start <= port < end for start, end in self.disabled_ports)


@attrs.frozen
class Listener:
    name: str
    host: str
    port: int
    chains: tuple[FilterChain, ...]
    resource: Message | None = attrs.field(default=None, eq=False, repr=False)
    bind: bool = True  # bind_to_port: false for a sidecar's per-port listeners
    use_original_dst: bool = False  # hand connections to the listener of their destination
    original_dst: bool = False  # original_dst listener filter: match on the destination
    inspectors: tuple[Inspector, ...] = ()
    transparent: bool = False  # IP_TRANSPARENT: takes the connections TPROXY hands over
    # original_src listener filter: connect upstream from the client's own address
    # (transparently), with this SO_MARK when not 0.
    original_src: bool = False
    original_src_mark: int = 0
    default: FilterChain | None = None
    internal: bool = False  # an internal listener: no socket, reached by internal addresses

    def chain(self, destination_port: int, server_name: str = "", transport: str = "",
              alpn: tuple[str, ...] = (), destination_ip: str = "",
              source: tuple[str, int] = ("", 0)) -> FilterChain | None:
        """Envoy's filter-chain match: the most specific chains at each step (destination
        port, destination address, server name, transport protocol, application protocol,
        source address, source port); else the default."""
        found = [c for c in self.chains if c.destination_port == destination_port] or \
            [c for c in self.chains if not c.destination_port]
        found = _most_specific(found, lambda c: c.prefix_length(destination_ip))
        best = max((c.serves(server_name) for c in found), default=0)
        found = [c for c in found if best and c.serves(server_name) == best]
        found = [c for c in found if c.transport == transport] or \
            [c for c in found if not c.transport]
        found = [c for c in found if set(c.alpn) & set(alpn)] or \
            [c for c in found if not c.alpn]
        found = _most_specific(found, lambda c: c.source_length(source[0]))
        found = [c for c in found if source[1] in c.source_ports] or \
            [c for c in found if not c.source_ports]
        return found[0] if found else self.default

    def secrets(self) -> set[tuple[str, bool]]:
        """The secrets its chains name: (name, whether it comes over ADS)."""
        names = set()
        for chain in (*self.chains, *((self.default,) if self.default else ())):
            if chain.tls is not None:
                names.add((chain.tls.secret, chain.tls.over_ads))
                client = chain.tls.client
                if client is not None and client.ca_secret:
                    names.add((client.ca_secret, client.over_ads))
        return names


def _most_specific(chains: list[FilterChain], rank: Any) -> list[FilterChain]:
    """The chains ranking highest (a rank below 0: not a match)."""
    best = max((rank(c) for c in chains), default=-1)
    return [c for c in chains if best >= 0 and rank(c) == best]


def _seconds(duration: Any, default: float) -> float:
    return duration.ToTimedelta().total_seconds() if duration.ByteSize() else default


def _over_ads(reference: Any) -> bool:
    """Whether an SDS reference asks ADS (discovery) rather than an SDS server (the agent)."""
    return bool(reference.sds_config.HasField("ads"))


def _validation(common: Any) -> Validation:
    combined = common.combined_validation_context
    default = combined.default_validation_context
    reference = combined.validation_context_sds_secret_config
    return Validation(
        reference.name,
        subset.data(default.trusted_ca),
        tuple(matchers.string_match(m.matcher) for m in default.match_typed_subject_alt_names),
        _over_ads(reference))


def _origination(socket: Any, where: str) -> Origination | None:
    message = subset.unpack(socket.typed_config, f"{where}.typed_config")
    if isinstance(message, internal_pb2.InternalUpstreamTransport):
        return _origination(message.transport_socket, f"{where}.typed_config.transport_socket")
    if not isinstance(message, tls_pb2.UpstreamTlsContext):
        return None  # raw_buffer: plaintext
    common = message.common_tls_context
    secrets = common.tls_certificate_sds_secret_configs
    return Origination(message.sni, secrets[0].name if secrets else "",
                       tuple(common.alpn_protocols), _validation(common),
                       bool(secrets) and _over_ads(secrets[0]))


def _http_options(resource: cluster_pb2.Cluster) -> dict[str, Any]:
    packed = resource.typed_extension_protocol_options.get(HTTP_OPTIONS)
    if packed is None:
        return {}
    options: Any = subset.unpack(packed, f"typed_extension_protocol_options[{HTTP_OPTIONS}]")
    common = options.common_http_protocol_options
    protocol = "http1"
    if options.HasField("use_downstream_protocol_config"):
        protocol = "downstream"
    elif options.explicit_http_config.HasField("http2_protocol_options"):
        protocol = "h2"
    return {"max_requests_per_connection": common.max_requests_per_connection.value,
            "idle_timeout": _seconds(common.idle_timeout, 0.0),
            "max_connection_duration": _seconds(common.max_connection_duration, 0.0),
            "protocol": protocol}


def _limits(resource: cluster_pb2.Cluster) -> breakers.Limits:
    """The thresholds at DEFAULT priority; what they leave unset keeps Envoy's default."""
    limits = breakers.Limits()
    for threshold in resource.circuit_breakers.thresholds:
        if threshold.priority != 0:  # HIGH: the native proxy routes everything at DEFAULT
            continue
        for name in ("max_connections", "max_pending_requests", "max_requests",
                     "max_retries"):
            if threshold.HasField(name):
                limits = attrs.evolve(limits, **{name: getattr(threshold, name).value})
        if threshold.HasField("retry_budget"):
            budget = threshold.retry_budget
            limits = attrs.evolve(limits, retry_budget=(
                budget.budget_percent.value if budget.HasField("budget_percent") else 20.0,
                budget.min_retry_concurrency.value
                if budget.HasField("min_retry_concurrency") else 3))
    return limits


def _outlier(resource: cluster_pb2.Cluster) -> outlier.Outlier | None:
    if not resource.HasField("outlier_detection"):
        return None
    detection = resource.outlier_detection
    # Success-rate ejection (Envoy enforces it unless told 0) is not implemented here:
    # refused rather than ignored. Istio always sets it to 0.
    for name in ("enforcing_success_rate", "enforcing_local_origin_success_rate"):
        if not detection.HasField(name) or getattr(detection, name).value:
            if name == "enforcing_local_origin_success_rate" and \
                    not detection.split_external_local_origin_errors:
                continue  # only split errors have a local-origin success rate
            raise subset.Unsupported(f"outlier_detection.{name}", "success-rate ejection is "
                                     "not supported by the native proxy (set it to 0)")
    defaults = outlier.Outlier()
    values: dict[str, Any] = {}
    for name in ("consecutive_5xx", "consecutive_gateway_failure",
                 "consecutive_local_origin_failure", "enforcing_consecutive_5xx",
                 "enforcing_consecutive_gateway_failure",
                 "enforcing_consecutive_local_origin_failure", "max_ejection_percent"):
        if detection.HasField(name):
            values[name] = getattr(detection, name).value
    for name in ("interval", "base_ejection_time", "max_ejection_time"):
        values[name] = _seconds(getattr(detection, name), getattr(defaults, name))
    values["split_external_local_origin_errors"] = \
        detection.split_external_local_origin_errors
    return outlier.Outlier(**values)


def _balancing(resource: cluster_pb2.Cluster) -> dict[str, Any]:
    ring = resource.ring_hash_lb_config
    if ring.hash_function != ring.XX_HASH:
        raise subset.Unsupported("ring_hash_lb_config.hash_function", "only XX_HASH (the "
                                 "default; hashed here with BLAKE2b) is supported")
    size = resource.maglev_lb_config.table_size.value or hashing.MAGLEV_SIZE
    if resource.lb_policy == cluster_pb2.Cluster.MAGLEV and (size < 2 or any(
            size % d == 0 for d in range(2, int(size ** 0.5) + 1))):
        raise subset.Unsupported("maglev_lb_config.table_size", "must be a prime")
    return {
        "limits": _limits(resource), "outlier_detection": _outlier(resource),
        "locality_weighted": resource.common_lb_config.HasField(
            "locality_weighted_lb_config"),
        "ring_size": (ring.minimum_ring_size.value or hashing.RING_MIN,
                      ring.maximum_ring_size.value or hashing.RING_MAX),
        "maglev_size": size,
        "panic_threshold": resource.common_lb_config.healthy_panic_threshold.value
        if resource.common_lb_config.HasField("healthy_panic_threshold") else 50.0,
        "slow_start": _slow_start(resource),
    }


def _slow_start(resource: cluster_pb2.Cluster) -> SlowStart | None:
    config = resource.round_robin_lb_config.slow_start_config \
        if resource.HasField("round_robin_lb_config") else \
        resource.least_request_lb_config.slow_start_config
    window = _seconds(config.slow_start_window, 0.0)
    if not window:
        return None
    aggression = config.aggression.default_value if config.HasField("aggression") else 1.0
    if aggression <= 0:
        raise subset.Unsupported("slow_start_config.aggression", "must be above 0")
    return SlowStart(window, aggression, config.min_weight_percent.value / 100
                     if config.HasField("min_weight_percent") else 0.1)


def _passthrough(socket: Any, where: str) -> tuple[str, ...] | None:
    """The host metadata namespaces an internal upstream transport passes on (None: the
    transport ``socket`` at ``where`` is not one)."""
    message = subset.unpack(socket.typed_config, f"{where}.typed_config")
    if not isinstance(message, internal_pb2.InternalUpstreamTransport):
        return None
    names = []
    for index, source in enumerate(message.passthrough_metadata):
        if source.kind.WhichOneof("kind") != "host":
            raise subset.Unsupported(
                f"{where}.typed_config.passthrough_metadata[{index}].kind",
                "only the host's metadata is passed through by the native proxy")
        names.append(source.name)
    if message.HasField("transport_socket") and _origination(
            message.transport_socket, f"{where}.typed_config.transport_socket"):
        raise subset.Unsupported(f"{where}.typed_config.transport_socket",
                                 "TLS inside an internal connection is not supported by the "
                                 "native proxy (raw_buffer is)")
    return tuple(names)


def build_cluster(resource: cluster_pb2.Cluster) -> Cluster:
    kind = cluster_pb2.Cluster.DiscoveryType.Name(resource.type)
    if kind not in ("EDS", "STATIC", "ORIGINAL_DST"):
        raise subset.Unsupported("type", f"cluster type {kind} is not supported by the "
                                 "native proxy (EDS, STATIC, ORIGINAL_DST are)")
    lb = cluster_pb2.Cluster.LbPolicy.Name(resource.lb_policy)
    if lb not in ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV",
                  "CLUSTER_PROVIDED"):
        raise subset.Unsupported("lb_policy", f"load balancing {lb} is not supported by the "
                                 "native proxy")
    endpoints = tuple(endpoints_of(resource.load_assignment)) if kind == "STATIC" else ()
    keepalive = resource.upstream_connection_options.tcp_keepalive
    matches = []
    for index, match in enumerate(resource.transport_socket_matches):
        where = f"transport_socket_matches[{index}]"
        criteria = []
        for key, value in sorted(match.match.fields.items()):
            if value.WhichOneof("kind") != "string_value":
                raise subset.Unsupported(f"{where}.match.{key}", "the native proxy matches "
                                         "endpoints on string values only")
            criteria.append((key, value.string_value))
        matches.append(SocketMatch(
            tuple(criteria), _origination(match.transport_socket, f"{where}.transport_socket"),
            _passthrough(match.transport_socket, f"{where}.transport_socket")))
    return Cluster(
        name=resource.name, kind=kind,
        service_name=resource.eds_cluster_config.service_name or resource.name, lb=lb,
        connect_timeout=_seconds(resource.connect_timeout, 5.0), endpoints=endpoints,
        **_balancing(resource),
        metadata=json_format.MessageToDict(resource.metadata) if resource.HasField(
            "metadata") else {},
        resource=resource,
        bind_address=resource.upstream_bind_config.source_address.address,
        keepalive=Keepalive(keepalive.keepalive_probes.value, keepalive.keepalive_time.value,
                            keepalive.keepalive_interval.value)
        if resource.upstream_connection_options.HasField("tcp_keepalive") else None,
        **_http_options(resource),
        tls=_origination(resource.transport_socket, "transport_socket")
        if resource.HasField("transport_socket") else None,
        tls_matches=tuple(matches),
        passthrough=_passthrough(resource.transport_socket, "transport_socket")
        if resource.HasField("transport_socket") else None,
        port_override=resource.original_dst_lb_config.upstream_port_override.value)


def endpoints_of(assignment: endpoint_pb2.ClusterLoadAssignment) -> list[Endpoint]:
    out = []
    for locality in assignment.endpoints:
        where = locality.locality
        place = "/".join((where.region, where.zone, where.sub_zone)).rstrip("/")
        # with locality_weighted_lb_config, a locality without a weight gets no traffic
        locality_weight = locality.load_balancing_weight.value
        for lb_endpoint in locality.lb_endpoints:
            address = lb_endpoint.endpoint.address.socket_address
            internal = _internal_endpoint(lb_endpoint)
            if internal is not None:
                out.append(attrs.evolve(internal, weight=lb_endpoint.load_balancing_weight.value
                                        or 1, healthy=lb_endpoint.health_status in (0, 1),
                                        priority=locality.priority, locality=place,
                                        locality_weight=locality_weight))
                continue
            weight = lb_endpoint.load_balancing_weight.value or 1
            # what transport_socket_matches match on (Envoy's key for it)
            marks = lb_endpoint.metadata.filter_metadata.get(SOCKET_MATCH)
            mode = marks.fields["tlsMode"].string_value if marks is not None and \
                "tlsMode" in marks.fields else ""
            out.append(Endpoint(address.address, address.port_value, weight,
                                lb_endpoint.health_status in (0, 1),  # UNKNOWN, HEALTHY
                                mode, locality.priority, place, locality_weight))
    return out


def _internal_endpoint(lb_endpoint: Any) -> Endpoint | None:
    """An endpoint at an internal address (None for a socket address)."""
    address = lb_endpoint.endpoint.address
    if not address.HasField("envoy_internal_address"):
        return None
    internal = address.envoy_internal_address
    found = filter_state.address(internal.endpoint_id)
    host, port = found if found is not None else (internal.server_listener_name, 0)
    metadata = tuple((namespace, key, value.string_value)
                     for namespace, struct in lb_endpoint.metadata.filter_metadata.items()
                     for key, value in struct.fields.items()
                     if value.WhichOneof("kind") == "string_value")
    return Endpoint(host, port, internal=internal.server_listener_name, metadata=metadata)


@attrs.frozen
class Logging:
    """What a network filter's access loggers ask: the stdout line (its format, and the
    CEL filters an entry must pass), and Istio's metrics with a Telemetry's overrides
    (`metric_overrides.ALL_OFF` when there is no metrics logger: none are counted)."""

    access: access_log.Format | None = None
    access_when: tuple[str, ...] = ()
    metrics: Overrides = NO_OVERRIDES


def _logging(logs: Iterable[Any], where: str = "access_log") -> Logging:
    found: access_log.Format | None = None
    when: tuple[str, ...] = ()
    metrics = ALL_OFF
    for index, log in enumerate(logs):
        message: Any = subset.unpack(log.typed_config, f"{where}[{index}].typed_config")
        if log.typed_config.type_url.endswith(STDOUT_LOG) and found is None:
            if message.log_format.HasField("json_format"):
                found = access_log.compile_json(
                    json_format.MessageToDict(message.log_format.json_format))
            else:
                text = subset.data(message.log_format.text_format_source).decode()
                found = access_log.compile_format(text or access_log.DEFAULT_FORMAT)
            when = _expressions(log.filter, f"{where}[{index}].filter") \
                if log.HasField("filter") else ()
        elif log.typed_config.type_url.endswith(GRPC_LOGS):
            metrics = Overrides.from_log_name(message.common_config.log_name)
    return Logging(found, when, metrics)


def _expressions(found: Any, where: str) -> tuple[str, ...]:
    """The CEL expressions an access-log filter holds (all must hold): Telemetry's
    ``filter.expression``, alone or beside tcp_proxy's end-of-connection type filter,
    which the native proxy's single entry per connection meets anyway."""
    kind = found.WhichOneof("filter_specifier")
    if kind == "extension_filter":
        expression: Any = subset.unpack(found.extension_filter.typed_config,
                                        f"{where}.extension_filter.typed_config")
        return (expression.expression,)
    if kind == "and_filter":
        return tuple(e for index, item in enumerate(found.and_filter.filters)
                     for e in _expressions(item, f"{where}.and_filter.filters[{index}]"))
    return ()


def _network(filter_: Any, where: str) -> TcpProxy | HttpManager | Echo | DirectResponse:
    message = subset.unpack(filter_.typed_config, f"{where}.typed_config")
    if isinstance(message, echo_pb2.Echo):
        return Echo()
    if isinstance(message, direct_pb2.Config):
        return DirectResponse(subset.data(message.response))
    if isinstance(message, tcp_proxy_pb2.TcpProxy):
        if not message.cluster:
            raise subset.Unsupported(f"{where}.typed_config", "tcp_proxy without a cluster")
        if message.tunneling_config.use_post:
            raise subset.Unsupported(f"{where}.typed_config.tunneling_config.use_post",
                                     "tunneling over POST is not supported by the native "
                                     "proxy (CONNECT is)")
        hostname = message.tunneling_config.hostname
        return TcpProxy(message.cluster, message.stat_prefix,
                        _seconds(message.idle_timeout, 3600.0),
                        _logging(message.access_log, f"{where}.typed_config.access_log"),
                        hostname, hashing.tcp_policies(message.hash_policy),
                        filter_state.compile_text(
                            hostname, f"{where}.typed_config.tunneling_config.hostname")
                        if "%" in hostname else None)
    if isinstance(message, hcm_pb2.HttpConnectionManager):
        filters = http_filters.compile_filters(message.http_filters, f"{where}.typed_config")
        state: list[filter_state.Setter] = []
        for index, item in enumerate(message.http_filters):
            found = subset.unpack(item.typed_config, f"{where}.typed_config.http_filters"
                                  f"[{index}].typed_config")
            if isinstance(found, http_state_pb2.Config):
                state.extend(filter_state.setters(
                    found.on_request_headers, f"{where}.typed_config.http_filters[{index}]"
                    ".typed_config.on_request_headers"))
        inline = routing.compile_routes(message.route_config) if message.HasField(
            "route_config") else None
        return HttpManager(
            message.stat_prefix, message.rds.route_config_name, inline,
            any(u.upgrade_type.lower() == "websocket" for u in message.upgrade_configs),
            _logging(message.access_log, f"{where}.typed_config.access_log"), filters,
            any(u.upgrade_type.upper() == "CONNECT" for u in message.upgrade_configs),
            tuple(state))
    raise subset.Unsupported(where, f"network filter {filter_.name} is not supported")


def _termination(socket: Any, where: str) -> Termination:
    message = subset.unpack(socket.typed_config, f"{where}.typed_config")
    if not isinstance(message, tls_pb2.DownstreamTlsContext):
        raise subset.Unsupported(f"{where}.typed_config", "a listener's transport socket must "
                                 "be a DownstreamTlsContext")
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
        if params.tls_maximum_protocol_version else "",
        _validation(common) if message.require_client_certificate.value else None,
        _over_ads(common.tls_certificate_sds_secret_configs[0]))


_INSPECTORS = {"envoy.filters.listener.tls_inspector": "tls",
               "envoy.filters.listener.http_inspector": "http"}
ORIGINAL_DST_FILTER = "envoy.filters.listener.original_dst"


def _chain(chain: Any, where: str) -> FilterChain:
    if not chain.filters:
        raise subset.Unsupported(f"{where}.filters", "a chain needs tcp_proxy or "
                                 "http_connection_manager last")
    guards = []
    state: list[filter_state.Setter] = []
    sni_cluster = False
    for index, guard in enumerate(chain.filters[:-1]):
        message = subset.unpack(guard.typed_config, f"{where}.filters[{index}].typed_config")
        if isinstance(message, sni_cluster_pb2.SniCluster):
            sni_cluster = True
        elif isinstance(message, network_rbac_pb2.RBAC):
            guards.append(rbac.rbac_filter(message))
        elif isinstance(message, network_state_pb2.Config):
            if guards:  # the native proxy sets the state first: keep Envoy's order honest
                raise subset.Unsupported(f"{where}.filters[{index}]", "set_filter_state must "
                                         "come before RBAC on the native proxy")
            state.extend(filter_state.setters(
                message.on_new_connection,
                f"{where}.filters[{index}].typed_config.on_new_connection"))
        else:
            raise subset.Unsupported(f"{where}.filters[{index}]", "only set_filter_state, "
                                     "RBAC and sni_cluster may come before a chain's "
                                     "tcp_proxy or http_connection_manager")
    tls = None
    if chain.HasField("transport_socket"):
        tls = _termination(chain.transport_socket, f"{where}.transport_socket")
    match = chain.filter_chain_match
    last = len(chain.filters) - 1
    return FilterChain(chain.name, match.destination_port.value,
                       _network(chain.filters[last], f"{where}.filters[{last}]"),
                       tuple(n.lower() for n in match.server_names), tls,
                       match.transport_protocol, tuple(match.application_protocols),
                       tuple(guards), tuple(matchers.cidr(r) for r in match.prefix_ranges),
                       tuple(matchers.cidr(r) for r in match.source_prefix_ranges),
                       tuple(match.source_ports), sni_cluster, tuple(state))


def build_listener(resource: listener_pb2.Listener) -> Listener:
    chains = tuple(_chain(chain, f"filter_chains[{index}]")
                   for index, chain in enumerate(resource.filter_chains))
    inspectors = []
    original_dst = False
    source: original_src_pb2.OriginalSrc | None = None
    for index, listener_filter in enumerate(resource.listener_filters):
        message = subset.unpack(listener_filter.typed_config,
                                f"listener_filters[{index}].typed_config")
        if listener_filter.name == ORIGINAL_DST_FILTER:
            original_dst = True
            continue
        if isinstance(message, original_src_pb2.OriginalSrc):
            source = message
            continue
        ranges = tuple((rule.destination_port_range.start, rule.destination_port_range.end)
                       for rule in listener_filter.filter_disabled.or_match.rules)
        if listener_filter.filter_disabled.HasField("destination_port_range"):
            port_range = listener_filter.filter_disabled.destination_port_range
            ranges += ((port_range.start, port_range.end),)
        inspectors.append(Inspector(_INSPECTORS.get(listener_filter.name, "tls"), ranges))
    default = _chain(resource.default_filter_chain, "default_filter_chain") \
        if resource.HasField("default_filter_chain") else None
    address = resource.address.socket_address
    internal = resource.HasField("internal_listener")
    bind = resource.bind_to_port.value if resource.HasField("bind_to_port") else True
    return Listener(resource.name, address.address, address.port_value, chains, resource,
                    bind=bind and not internal,
                    use_original_dst=resource.use_original_dst.value,
                    original_dst=original_dst, inspectors=tuple(inspectors), default=default,
                    transparent=resource.transparent.value, original_src=source is not None,
                    original_src_mark=source.mark if source is not None else 0,
                    internal=internal)


def build_secret(resource: secret_pb2.Secret) -> TlsSecret | None:
    """A certificate and key, or a trust bundle; each loaded once here, so that one that
    does not load (a user's Secret with a broken key) is refused with its name, as Envoy
    refuses it, rather than failing the listeners and clusters that name it."""
    if resource.HasField("tls_certificate"):
        certificate = resource.tls_certificate
        found = TlsSecret(subset.data(certificate.certificate_chain),
                          subset.data(certificate.private_key))
        if found.chain or found.key:
            load_identity(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), found.chain, found.key)
        return found
    if resource.HasField("validation_context"):
        found = TlsSecret(ca=subset.data(resource.validation_context.trusted_ca))
        if found.ca:
            try:
                ssl.create_default_context(cadata=found.ca.decode())
            except (ssl.SSLError, UnicodeDecodeError) as exc:
                raise ValueError(f"the trusted CA does not load ({exc})") from None
        return found
    return None


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
    # told of every update taken, as it came (--concurrency: the workers get it too)
    observers: list[Callable[[Update], None]] = attrs.field(factory=list)

    def apply(self, type_url: str, added: Iterable[tuple[str, bytes]],
              removed: Iterable[str], version: str = "") -> None:
        """Take one update of ``type_url`` (serialized resources by name), all or nothing;
        raise ``Rejected`` naming the resource, the field and the type."""
        added, removed = list(added), list(removed)
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
        for observer in self.observers:
            observer(Update(type_url, added, removed, version))

    def snapshot(self) -> list[Update]:
        """Everything held, as updates that rebuild it (secrets first, so listeners can
        bind at once; listeners last)."""
        order = (types.SECRET, types.CLUSTER, types.ENDPOINT, types.ROUTE, types.LISTENER)
        return [Update(type_url, [(name, resource.SerializeToString()) for name, resource
                                  in self.resources[type_url].items()], [],
                       self.versions.get(type_url, "")) for type_url in order]

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

    def ads_secret_names(self) -> set[str]:
        return self.secret_names(over_ads=True)

    def secret_names(self, over_ads: bool | None = None) -> set[str]:
        """Every secret a listener or cluster names (certificates and trust bundles); with
        ``over_ads``, only those that come over ADS (True) or from the agent (False)."""
        named = {item for listener in self.listeners.values() for item in listener.secrets()}
        for cluster in self.clusters.values():
            for tls in (cluster.tls, *(m.tls for m in cluster.tls_matches)):
                if tls is not None:
                    named |= {(tls.secret, tls.over_ads),
                              (tls.server.ca_secret, tls.server.over_ads)}
        return {name for name, ads in named if name and (over_ads is None or ads == over_ads)}

    def endpoints_of(self, cluster: Cluster) -> tuple[Endpoint, ...]:
        if cluster.kind == "STATIC":
            return cluster.endpoints
        return self.endpoints.get(cluster.service_name, ())
