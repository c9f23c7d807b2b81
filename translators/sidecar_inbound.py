"""A sidecar's ``virtualInbound`` listener (15006), where iptables sends inbound traffic.

One listener serves every port: ``original_dst`` restores the port the client dialled and
filter chains match on it. Each service port of the workload gets chains named
``0.0.0.0_<targetPort>`` leading to ``inbound|<targetPort>||``; unknown ports fall through
to the passthrough chains, which forward to the original destination from 127.0.0.6.

Which chains a port gets depends on its protocol, on what the active sniffers can tell
apart, and on the peer-authentication mode. `chain_options` is that table. Until
PeerAuthentication is supported every port is served in DISABLE (plaintext) mode; the mTLS
rows go in the same table when it lands.

Inspectors run per destination port: each is switched off (``filter_disabled``) on the
ports where no chain needs it, so declared HTTP and TCP ports are never sniffed, and
neither are the well-known server-first ports (MySQL, SMTP, ...) even when no service
declares them: there the passthrough chains take the bytes as TCP without waiting.
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

from pilotfish.core.protocol import SERVER_FIRST_PORTS, Protocol
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext
from pilotfish.core.sniffing import HTTP_INSPECTOR, TLS_INSPECTOR
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
    RAW_BUFFER,
    TLS,
    chain_match,
    filter_chain,
    socket_address,
    tcp_proxy,
)
from pilotfish.translators.http_filters import http_connection_manager
from pilotfish.translators.listener_filters import (
    ALL,
    ORIGINAL_DST,
    PLAINTEXT_HTTP_ALPN,
    Detection,
    listener_filter,
)
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


def port_kind(protocol: Protocol, port: int, detection: Detection = ALL) -> PortKind | None:
    """How a port is served; undeclared ports nothing may sniff are plain TCP."""
    if protocol.is_http:
        return PortKind.HTTP
    if protocol.is_unsupported:
        return PortKind.AUTO if detection.sniffs(port) else PortKind.TCP
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


def chain_options(
    kind: PortKind, mode: MtlsMode, detection: Detection = ALL
) -> tuple[ChainOption, ...]:
    """The chains for a port kind in a mode, as far as the active sniffers can match them.

    Without the TLS inspector nothing sets the transport protocol, so the ``tls`` chain
    could never match and the ``raw_buffer`` ones match everything: both steps go. The
    HTTP chain matches only the plaintext protocols an active sniffer reports.
    """
    if kind is PortKind.AUTO and not detection.http:
        kind = PortKind.TCP
    try:
        options = _OPTIONS[(kind, mode)]
    except KeyError:
        raise ValueError(
            f"inbound {kind.value} chains in {mode.value} mode need mTLS termination, "
            "which pilotfish does not generate yet (PeerAuthentication support)"
        ) from None
    out = []
    for option in options:
        if option.mtls and not detection.tls:
            raise ValueError(f"inbound {kind.value} chains in {mode.value} mode need the "
                             "tls sniffer (plugins.sniffers in the mesh config)")
        if not detection.tls and option.transport == TLS:
            continue
        alpn = detection.http_alpn if option.needs_http_inspector else option.alpn
        out.append(attrs.evolve(option, transport=option.transport if detection.tls else "",
                                alpn=alpn))
    return tuple(out)


def port_chains(
    port: int | None,
    kind: PortKind,
    mode: MtlsMode,
    *,
    http: Callable[[], lc_pb2.Filter],
    tcp: Callable[[], lc_pb2.Filter],
    names: tuple[str, str],
    detection: Detection = ALL,
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
        for option in chain_options(kind, mode, detection)
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


def virtual_inbound(
    push: PushContext, proxy: Proxy, detection: Detection = ALL
) -> listener_pb2.Listener:
    mode = MtlsMode.DISABLE
    chains = [filter_chain(f"{VIRTUAL_INBOUND}-blackhole",
                           chain_match(destination_port=INBOUND_PORT),
                           tcp_proxy(BLACKHOLE_CLUSTER))]
    # Ports where an inspector decides nothing: it stays off there (the loop guard too,
    # and server-first ports, which the passthrough chains then take as TCP at once).
    no_tls = {INBOUND_PORT, *SERVER_FIRST_PORTS}
    no_http = set(no_tls)
    used: list[ChainOption] = []
    for instance in push.service_instances(proxy):
        port = instance.target_port
        kind = port_kind(instance.port.protocol, port, detection)
        if kind is None:
            continue
        if port in RESERVED_PORTS:
            log.warning("inbound %s: target port %d belongs to the proxy; skipped",
                        instance.service.hostname, port)
            continue
        name, cluster = f"{WILDCARD}_{port}", cluster_name(INBOUND, port)
        options = chain_options(kind, mode, detection)
        used += options
        if not any(o.needs_tls_inspector for o in options):
            no_tls.add(port)
        if not any(o.needs_http_inspector for o in options):
            no_http.add(port)
        chains += port_chains(
            port, kind, mode, names=(name, name), detection=detection,
            http=partial(_http, f"inbound_{name}", cluster, f"{INBOUND}|http|{port}", cluster),
            tcp=partial(tcp_proxy, cluster),
        )
    used += chain_options(PortKind.AUTO, mode, detection)
    chains += port_chains(
        None, PortKind.AUTO, mode, detection=detection,
        names=(f"{VIRTUAL_INBOUND}-catchall-http", VIRTUAL_INBOUND),
        http=partial(_http, VIRTUAL_INBOUND, INBOUND_PASSTHROUGH_CLUSTER, f"{INBOUND}|http|0",
                     INBOUND_PASSTHROUGH_CLUSTER),
        tcp=partial(tcp_proxy, INBOUND_PASSTHROUGH_CLUSTER),
    )
    filters = [listener_filter(ORIGINAL_DST)]
    if any(o.needs_tls_inspector for o in used):
        filters.append(listener_filter(TLS_INSPECTOR, no_tls))
    if any(o.needs_http_inspector for o in used):
        filters.append(listener_filter(HTTP_INSPECTOR, no_http))
    return listener_pb2.Listener(
        name=VIRTUAL_INBOUND,
        address=socket_address(WILDCARD, INBOUND_PORT),
        traffic_direction=base_pb2.INBOUND,
        listener_filters=filters,
        listener_filters_timeout=duration(push.mesh.protocol_detection_timeout),
        continue_on_listener_filters_timeout=True,
        filter_chains=chains,
    )
