"""A sidecar's ``virtualInbound`` listener (15006), where iptables sends inbound traffic.

One listener serves every port: ``original_dst`` restores the port the client dialled and
filter chains match on it. Each service port of the workload gets chains named
``0.0.0.0_<targetPort>`` leading to ``inbound|<targetPort>||``; unknown ports fall through
to the passthrough chains, which forward to the original destination from 127.0.0.6.

Which chains a port gets depends on its protocol and on the peer-authentication mode.
`chain_options` is that table. Until PeerAuthentication is supported every port is served
in DISABLE (plaintext) mode; the mTLS rows go in the same table when it lands.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from functools import partial

import attrs
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2

from pilotfish.core.protocol import Protocol
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext
from pilotfish.translators.common import (
    BLACKHOLE_CLUSTER,
    INBOUND,
    INBOUND_PASSTHROUGH_CLUSTER,
    INBOUND_PORT,
    VIRTUAL_INBOUND,
    cluster_name,
    duration,
)
from pilotfish.translators.filter_chains import (
    HTTP_INSPECTOR,
    ORIGINAL_DST,
    PLAINTEXT_HTTP_ALPN,
    RAW_BUFFER,
    TLS,
    TLS_INSPECTOR,
    chain_match,
    filter_chain,
    listener_filter,
    socket_address,
    tcp_proxy,
)
from pilotfish.translators.http_filters import http_connection_manager
from pilotfish.translators.sidecar_outbound import RESERVED_PORTS, WILDCARD

log = logging.getLogger("pilotfish.lds")


class MtlsMode(enum.Enum):
    """PeerAuthentication modes, as they shape inbound chains."""

    DISABLE = "DISABLE"
    PERMISSIVE = "PERMISSIVE"
    STRICT = "STRICT"


class PortKind(enum.Enum):
    HTTP = "http"
    TCP = "tcp"
    AUTO = "auto"  # protocol not declared: sniffed per connection


def port_kind(protocol: Protocol) -> PortKind | None:
    if protocol.is_http:
        return PortKind.HTTP
    if protocol.is_unsupported:
        return PortKind.AUTO
    if protocol.is_tcp:
        return PortKind.TCP
    return None  # UDP is not proxied


@attrs.frozen
class ChainOption:
    """One inbound filter chain: what it matches and whether it carries HTTP."""

    http: bool
    transport: str = ""
    alpn: tuple[str, ...] = ()
    mtls: bool = False  # terminates mesh mTLS: needs the PeerAuthentication work

    @property
    def needs_tls_inspector(self) -> bool:
        return bool(self.transport)

    @property
    def needs_http_inspector(self) -> bool:
        return bool(set(self.alpn) & set(PLAINTEXT_HTTP_ALPN))


# Declared ports need no sniffing in plaintext, which also keeps server-first protocols
# (MySQL, SMTP) on declared TCP ports working: no inspector waits for the client to speak.
# An undeclared port tells HTTP from raw bytes from TLS; see filter_chains.sniffed_chains
# for why it takes three chains.
_OPTIONS: dict[tuple[PortKind, MtlsMode], tuple[ChainOption, ...]] = {
    (PortKind.HTTP, MtlsMode.DISABLE): (ChainOption(http=True),),
    (PortKind.TCP, MtlsMode.DISABLE): (ChainOption(http=False),),
    (PortKind.AUTO, MtlsMode.DISABLE): (
        ChainOption(http=True, transport=RAW_BUFFER, alpn=PLAINTEXT_HTTP_ALPN),
        ChainOption(http=False, transport=RAW_BUFFER),
        ChainOption(http=False, transport=TLS),
    ),
}


def chain_options(kind: PortKind, mode: MtlsMode) -> tuple[ChainOption, ...]:
    try:
        return _OPTIONS[(kind, mode)]
    except KeyError:
        raise ValueError(
            f"inbound {kind.value} chains in {mode.value} mode need mTLS termination, "
            "which pilotfish does not generate yet (PeerAuthentication support)"
        ) from None


def port_chains(
    port: int | None,
    kind: PortKind,
    mode: MtlsMode,
    *,
    http: Callable[[], lc_pb2.Filter],
    tcp: Callable[[], lc_pb2.Filter],
    names: tuple[str, str],
) -> list[lc_pb2.FilterChain]:
    """The chains for one destination port (None: any port) in one mode.

    ``names`` are the (HTTP, TCP) chain names; ``http``/``tcp`` build the terminal filter.
    """
    return [
        filter_chain(
            names[0] if option.http else names[1],
            chain_match(destination_port=port, transport=option.transport, alpn=option.alpn),
            http() if option.http else tcp(),
        )
        for option in chain_options(kind, mode)
    ]


def _inbound_route(name: str, vhost: str, cluster: str) -> route_pb2.RouteConfiguration:
    """A one-route table to the local app: no retries or timeouts, the caller owns those."""
    action = rc_pb2.RouteAction(cluster=cluster, timeout=duration(0))
    action.max_stream_duration.max_stream_duration.CopyFrom(duration(0))
    action.max_stream_duration.grpc_timeout_header_max.CopyFrom(duration(0))
    route = rc_pb2.Route(name="default", match=rc_pb2.RouteMatch(prefix="/"), route=action)
    table = route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[rc_pb2.VirtualHost(name=vhost, domains=["*"], routes=[route])],
    )
    table.validate_clusters.value = False
    return table


def _http(stat_prefix: str, route_name: str, vhost: str, cluster: str) -> lc_pb2.Filter:
    return http_connection_manager(
        stat_prefix, route_config=_inbound_route(route_name, vhost, cluster)
    )


def virtual_inbound(push: PushContext, proxy: Proxy) -> listener_pb2.Listener:
    mode = MtlsMode.DISABLE
    chains = [filter_chain(f"{VIRTUAL_INBOUND}-blackhole",
                           chain_match(destination_port=INBOUND_PORT),
                           tcp_proxy(BLACKHOLE_CLUSTER))]
    # Ports where an inspector decides nothing: it stays off there (the loop guard too).
    no_tls, no_http = {INBOUND_PORT}, {INBOUND_PORT}
    for instance in push.service_instances(proxy):
        port, kind = instance.target_port, port_kind(instance.port.protocol)
        if kind is None:
            continue
        if port in RESERVED_PORTS:
            log.warning("inbound %s: target port %d belongs to the proxy; skipped",
                        instance.service.hostname, port)
            continue
        name, cluster = f"{WILDCARD}_{port}", cluster_name(INBOUND, port)
        options = chain_options(kind, mode)
        if not any(o.needs_tls_inspector for o in options):
            no_tls.add(port)
        if not any(o.needs_http_inspector for o in options):
            no_http.add(port)
        chains += port_chains(
            port, kind, mode, names=(name, name),
            http=partial(_http, f"inbound_{name}", cluster, f"{INBOUND}|http|{port}", cluster),
            tcp=partial(tcp_proxy, cluster),
        )
    chains += port_chains(
        None, PortKind.AUTO, mode,
        names=(f"{VIRTUAL_INBOUND}-catchall-http", VIRTUAL_INBOUND),
        http=partial(_http, VIRTUAL_INBOUND, INBOUND_PASSTHROUGH_CLUSTER, f"{INBOUND}|http|0",
                     INBOUND_PASSTHROUGH_CLUSTER),
        tcp=partial(tcp_proxy, INBOUND_PASSTHROUGH_CLUSTER),
    )
    return listener_pb2.Listener(
        name=VIRTUAL_INBOUND,
        address=socket_address(WILDCARD, INBOUND_PORT),
        traffic_direction=base_pb2.INBOUND,
        listener_filters=[
            listener_filter(ORIGINAL_DST),
            listener_filter(TLS_INSPECTOR, no_tls),
            listener_filter(HTTP_INSPECTOR, no_http),
        ],
        listener_filters_timeout=duration(push.mesh.protocol_detection_timeout),
        continue_on_listener_filters_timeout=True,
        filter_chains=chains,
    )
