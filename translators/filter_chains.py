"""Filter-chain building blocks shared by sidecar and gateway listeners.

Envoy picks a filter chain by narrowing criteria in a fixed order (destination port, then
destination IP, server name, transport protocol, application protocol) and keeps only the
most specific candidates at each step, with no fallback to a less specific chain once a
later step fails. `sniffed_chains` encodes what that means when HTTP and raw TCP share a
destination, so every listener builder gets it right the same way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from pilotfish.translators import access_logs
from pilotfish.translators.common import pack
from pilotfish.translators.listener_filters import ALL, Detection

TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"

RAW_BUFFER = "raw_buffer"
TLS = "tls"

Weighted = Sequence[tuple[str, int]]  # (cluster name, weight)


def socket_address(address: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=address, port_value=port)
    )


def tcp_proxy(destinations: str | Weighted, stat_prefix: str = "",
              tunnel: Mapping[str, Any] | None = None,
              hash_source_ip: bool = False) -> lc_pb2.Filter:
    """A tcp_proxy to one cluster, or split by weight (zero weights dropped, as Istio does);
    ``tunnel`` (a DestinationRule's, see translators/tunnel.py) carries the bytes through
    an HTTP CONNECT (or POST) to ``targetHost:targetPort``; ``hash_source_ip`` (a
    ``consistentHash`` with ``useSourceIp``) keys a hashed cluster on the client's IP."""
    proxy = tcp_proxy_pb2.TcpProxy(access_log=access_logs.for_tcp())
    if hash_source_ip:
        proxy.hash_policy.add().source_ip.SetInParent()
    if tunnel is not None:
        proxy.tunneling_config.hostname = f"{tunnel['targetHost']}:{int(tunnel['targetPort'])}"
        proxy.tunneling_config.use_post = str(tunnel.get("protocol") or "CONNECT") == "POST"
    # One entry when the upstream connects (the connection counts as opened), one at the end.
    proxy.access_log_options.flush_access_log_on_connected = True
    if isinstance(destinations, str):
        proxy.cluster = destinations
    else:
        kept = [(name, weight) for name, weight in destinations if weight > 0]
        if len(kept) == 1:
            proxy.cluster = kept[0][0]
        else:
            proxy.weighted_clusters.clusters.extend(
                tcp_proxy_pb2.TcpProxy.WeightedCluster.ClusterWeight(name=name, weight=weight)
                for name, weight in kept
            )
    proxy.stat_prefix = stat_prefix or proxy.cluster or (
        proxy.weighted_clusters.clusters[0].name if proxy.weighted_clusters.clusters else "tcp"
    )
    return lc_pb2.Filter(name=TCP_PROXY_FILTER, typed_config=pack(proxy))


def cidr(address: str) -> address_pb2.CidrRange | None:
    """``10.0.0.1`` → 10.0.0.1/32, ``10.1.0.0/16`` as is; None for anything else."""
    try:
        network = ipaddress.ip_network(address, strict=False)
    except ValueError:
        return None
    return address_pb2.CidrRange(
        address_prefix=str(network.network_address), prefix_len={"value": network.prefixlen}
    )


def sni_names(names: Iterable[str]) -> tuple[str, ...]:
    """SNI names for a chain to match: none (any name) when ``*`` is among them, as Istio
    does. Envoy refuses a bare ``*`` in ``server_names``."""
    names = tuple(dict.fromkeys(names))
    return () if "*" in names else names


def chain_match(
    *,
    destination_port: int | None = None,
    prefixes: Iterable[str] = (),
    server_names: Iterable[str] = (),
    transport: str = "",
    alpn: Iterable[str] = (),
) -> lc_pb2.FilterChainMatch:
    match = lc_pb2.FilterChainMatch(
        server_names=sni_names(server_names),
        transport_protocol=transport,
        application_protocols=list(alpn),
    )
    if destination_port is not None:
        match.destination_port.value = destination_port
    for prefix in prefixes:
        block = cidr(prefix)
        if block is not None:
            match.prefix_ranges.append(block)
    return match


def filter_chain(
    name: str, match: lc_pb2.FilterChainMatch | None, *filters: lc_pb2.Filter
) -> lc_pb2.FilterChain:
    chain = lc_pb2.FilterChain(name=name, filters=list(filters))
    if match is not None and match.ByteSize():
        chain.filter_chain_match.CopyFrom(match)
    return chain


def sniffed_chains(
    name: str,
    http: lc_pb2.Filter,
    tcp: lc_pb2.Filter | None,
    prefixes: Sequence[str] = (),
    detection: Detection = ALL,
) -> list[lc_pb2.FilterChain]:
    """Chains that send sniffed plaintext HTTP to ``http`` and everything else to ``tcp``.

    The HTTP chain must insist on ``raw_buffer``, or a TLS client offering ``http/1.1`` in
    its ALPN would land in the HTTP connection manager. Envoy then prefers that chain for
    every plaintext connection and drops non-HTTP bytes when its ALPN step fails, so raw TCP
    needs a ``raw_buffer`` chain of its own, and TLS a ``tls`` one. Without the TLS
    inspector no ALPN is read from a ClientHello, so the transport steps go and one chain
    without a transport takes the rest. Without ``tcp`` only the HTTP chain is made and
    the listener's default chain takes the rest.
    """
    if not detection.http:
        raise ValueError("sniffed chains need an HTTP sniffer (http1 or http2)")
    plain = RAW_BUFFER if detection.tls else ""

    def match(transport: str = "", alpn: Sequence[str] = ()) -> lc_pb2.FilterChainMatch:
        return chain_match(prefixes=prefixes, transport=transport, alpn=alpn)

    chains = [filter_chain(name, match(plain, detection.http_alpn), http)]
    if tcp is not None:
        chains.append(filter_chain(name, match(plain), tcp))
        if detection.tls:
            chains.append(filter_chain(name, match(TLS), tcp))
    return chains
