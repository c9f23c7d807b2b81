"""Listener filters, and what the active sniffers let a listener detect.

Envoy's inspectors (``tls_inspector``, ``http_inspector``) read a connection's first bytes
before a filter chain is chosen, which is what chains matching on transport protocol, SNI
or ALPN need. They are also a cost: an inspector waits for the client to speak, so a
server-first protocol (MySQL, SMTP) stalls behind it until the detection timeout, and
that timeout is off by default. So a listener gets an inspector only when one of its
chains needs it, and only if the sniffer doing that job is active in the mesh config
(`Detection`); on ``virtualInbound``, where one listener serves every port, each inspector
is switched off by destination port where it decides nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.original_src.v3 import original_src_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.type.v3 import range_pb2

from pilotfish.core.protocol import SERVER_FIRST_PORTS
from pilotfish.core.sniffing import HTTP_INSPECTOR, TLS_INSPECTOR, Sniffer
from pilotfish.translators.common import pack

ORIGINAL_DST = "envoy.filters.listener.original_dst"
ORIGINAL_SRC = "envoy.filters.listener.original_src"
# The mark on connections a TPROXY sidecar makes from its clients' addresses: istio-iptables
# saves it on the connection and routes the app's replies back to the proxy by it.
TPROXY_MARK = 1337

# What http_inspector reports for plaintext HTTP/1.1 and prior-knowledge HTTP/2, and so
# the ALPN values plaintext HTTP chains match on (Istio leaves http/1.0 out by default).
PLAINTEXT_HTTP_ALPN = ("http/1.1", "h2c")


@attrs.frozen
class Detection:
    """What the listeners may tell apart, given the active sniffers.

    ``tls``: the TLS inspector may run (transport, SNI and ALPN matches work).
    ``http_alpn``: the plaintext HTTP protocols the HTTP inspector may report and chains
    may match; empty means no HTTP inspector, and undeclared ports are plain TCP.
    """

    tls: bool = True
    http_alpn: tuple[str, ...] = PLAINTEXT_HTTP_ALPN

    @classmethod
    def of(cls, sniffers: Sequence[Sniffer]) -> Detection:
        tls = any(s.listener_filter == TLS_INSPECTOR for s in sniffers)
        reported = {p for s in sniffers if s.listener_filter == HTTP_INSPECTOR
                    for p in s.protocols}
        return cls(tls=tls, http_alpn=tuple(p for p in PLAINTEXT_HTTP_ALPN if p in reported))

    @property
    def http(self) -> bool:
        return bool(self.http_alpn)

    def sniffs(self, port: int) -> bool:
        """May an undeclared port be sniffed? Never on the well-known server-first ports."""
        return self.http and port not in SERVER_FIRST_PORTS


ALL = Detection()
NONE = Detection(tls=False, http_alpn=())


def needs_tls_inspector(chains: Iterable[lc_pb2.FilterChain]) -> bool:
    """Something must read the ClientHello before chains on SNI/transport/ALPN can match."""
    return any(
        c.filter_chain_match.server_names or c.filter_chain_match.transport_protocol
        for c in chains
    )


def needs_http_inspector(chains: Iterable[lc_pb2.FilterChain]) -> bool:
    return any(
        set(c.filter_chain_match.application_protocols) & set(PLAINTEXT_HTTP_ALPN)
        for c in chains
    )


def _port_ranges(ports: Iterable[int]) -> list[range_pb2.Int32Range]:
    """Sorted ports folded into half-open ranges: 80, 81, 90 → [80, 82), [90, 91)."""
    out: list[range_pb2.Int32Range] = []
    for port in sorted(set(ports)):
        if out and out[-1].end == port:
            out[-1].end = port + 1
        else:
            out.append(range_pb2.Int32Range(start=port, end=port + 1))
    return out


def disabled_on_ports(ports: Iterable[int]) -> lc_pb2.ListenerFilterChainMatchPredicate | None:
    """A predicate true for the given destination ports (None when there are none)."""
    rules = [lc_pb2.ListenerFilterChainMatchPredicate(destination_port_range=r)
             for r in _port_ranges(ports)]
    if not rules:
        return None
    if len(rules) == 1:
        return rules[0]
    # A match set needs at least two rules, hence the single-rule case above.
    return lc_pb2.ListenerFilterChainMatchPredicate(
        or_match=lc_pb2.ListenerFilterChainMatchPredicate.MatchSet(rules=rules)
    )


def listener_filter(name: str, skip_ports: Iterable[int] = ()) -> lc_pb2.ListenerFilter:
    """One of the three listener filters pilotfish uses, optionally off for some ports."""
    config = {
        ORIGINAL_DST: original_dst_pb2.OriginalDst,
        TLS_INSPECTOR: tls_inspector_pb2.TlsInspector,
        HTTP_INSPECTOR: http_inspector_pb2.HttpInspector,
    }[name]()
    out = lc_pb2.ListenerFilter(name=name, typed_config=pack(config))
    predicate = disabled_on_ports(skip_ports)
    if predicate is not None:
        out.filter_disabled.CopyFrom(predicate)
    return out


def original_src() -> lc_pb2.ListenerFilter:
    """Istio's virtualInbound filter in TPROXY mode: connections to the app leave from the
    client's own address (transparently bound), marked for the route back."""
    return lc_pb2.ListenerFilter(name=ORIGINAL_SRC, typed_config=pack(
        original_src_pb2.OriginalSrc(mark=TPROXY_MARK)))


def inspectors_for(chains: Sequence[lc_pb2.FilterChain]) -> list[lc_pb2.ListenerFilter]:
    """The inspectors a single-port listener's chains need, TLS before HTTP.

    Chain builders consult `Detection` first, so chains never ask for an inspector whose
    sniffer is off.
    """
    out = []
    if needs_tls_inspector(chains):
        out.append(listener_filter(TLS_INSPECTOR))
    if needs_http_inspector(chains):
        out.append(listener_filter(HTTP_INSPECTOR))
    return out
