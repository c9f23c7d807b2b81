"""PeerAuthentication → which inbound filter chains a port gets.

A port's chains follow its protocol (declared HTTP, declared TCP, or sniffed) and its mTLS
mode. Each chain is a `ChainOption`: what it matches (transport protocol, ALPN), whether it
runs the HTTP connection manager, and whether it terminates mesh mTLS. The ALPN values are
the scheme in `inbound_tls`.

STRICT never has a plaintext chain, so plaintext finds no chain and is closed. On declared
ports it needs no match at all (everything is mTLS), so nothing waits for the client to
speak and server-first protocols keep working. PERMISSIVE tells mesh mTLS (``tls`` plus a
mesh ALPN value) from plaintext (``raw_buffer``) and from the application's own TLS (``tls``
without one, passed through as TCP); that takes the TLS inspector, which waits for the
client's first bytes, as in Istio. DISABLE is plaintext only.

Without the TLS sniffer nothing can tell mTLS from plaintext: PERMISSIVE is then served as
STRICT, so mesh clients (which use mTLS automatically) keep working and plaintext is
refused, and sniffed ports take mTLS as TCP.
"""

from __future__ import annotations

import enum
import logging

import attrs

from pilotfish.core.protocol import Protocol
from pilotfish.core.security_policies import MtlsMode
from pilotfish.translators.filter_chains import RAW_BUFFER, TLS
from pilotfish.translators.inbound_tls import ALL_MESH_ALPN, MESH_HTTP_ALPN, MESH_TCP_ALPN
from pilotfish.translators.listener_filters import ALL, PLAINTEXT_HTTP_ALPN, Detection

log = logging.getLogger("pilotfish.lds")


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
    """One inbound filter chain: what it matches and what it runs."""

    http: bool
    transport: str = ""
    alpn: tuple[str, ...] = ()
    mtls: bool = False  # terminates mesh mTLS (needs the workload certificate)

    @property
    def needs_tls_inspector(self) -> bool:
        return bool(self.transport)

    @property
    def needs_http_inspector(self) -> bool:
        return bool(set(self.alpn) & set(PLAINTEXT_HTTP_ALPN))


_PLAIN_HTTP = ChainOption(http=True, transport=RAW_BUFFER, alpn=PLAINTEXT_HTTP_ALPN)
_PLAIN_TCP = ChainOption(http=False, transport=RAW_BUFFER)
_OWN_TLS = ChainOption(http=False, transport=TLS)  # the app's TLS, passed through
_MESH_HTTP = ChainOption(http=True, transport=TLS, alpn=MESH_HTTP_ALPN, mtls=True)

# Declared ports need no sniffing in plaintext or STRICT, which also keeps server-first
# protocols (MySQL, SMTP) on declared TCP ports working there: no inspector waits for the
# client. A sniffed port tells HTTP from raw bytes from TLS; see
# filter_chains.sniffed_chains for why that takes three chains.
_OPTIONS: dict[tuple[PortKind, MtlsMode], tuple[ChainOption, ...]] = {
    (PortKind.HTTP, MtlsMode.DISABLE): (ChainOption(http=True),),
    (PortKind.TCP, MtlsMode.DISABLE): (ChainOption(http=False),),
    (PortKind.AUTO, MtlsMode.DISABLE): (_PLAIN_HTTP, _PLAIN_TCP, _OWN_TLS),
    (PortKind.HTTP, MtlsMode.STRICT): (ChainOption(http=True, mtls=True),),
    (PortKind.TCP, MtlsMode.STRICT): (ChainOption(http=False, mtls=True),),
    (PortKind.AUTO, MtlsMode.STRICT): (
        _MESH_HTTP,
        ChainOption(http=False, transport=TLS, mtls=True),
    ),
    (PortKind.HTTP, MtlsMode.PERMISSIVE): (
        ChainOption(http=True, transport=TLS, alpn=ALL_MESH_ALPN, mtls=True),
        ChainOption(http=True, transport=RAW_BUFFER),
    ),
    (PortKind.TCP, MtlsMode.PERMISSIVE): (
        ChainOption(http=False, transport=TLS, alpn=ALL_MESH_ALPN, mtls=True),
        _OWN_TLS,
        ChainOption(http=False, transport=RAW_BUFFER),
    ),
    (PortKind.AUTO, MtlsMode.PERMISSIVE): (
        _MESH_HTTP,
        ChainOption(http=False, transport=TLS, alpn=MESH_TCP_ALPN, mtls=True),
        _PLAIN_HTTP,
        _PLAIN_TCP,
        _OWN_TLS,
    ),
}


def served_mode(mode: MtlsMode, detection: Detection) -> MtlsMode:
    """The mode a listener can actually serve with the active sniffers."""
    if mode is MtlsMode.UNSET:
        return MtlsMode.PERMISSIVE
    if mode is MtlsMode.PERMISSIVE and not detection.tls:
        return MtlsMode.STRICT
    return mode


def chain_options(
    kind: PortKind, mode: MtlsMode, detection: Detection = ALL
) -> tuple[ChainOption, ...]:
    """The chains for a port kind in a mode, as far as the active sniffers can match them.

    Without the TLS inspector nothing sets the transport protocol or reads ALPN from a
    ClientHello, so chains that need either go, and a sniffed port under mTLS is TCP. The
    plaintext HTTP chain matches only the protocols an active sniffer reports.
    """
    mode = served_mode(mode, detection)
    if kind is PortKind.AUTO and (
        not detection.http or (mode is MtlsMode.STRICT and not detection.tls)
    ):
        kind = PortKind.TCP
    out = []
    for option in _OPTIONS[(kind, mode)]:
        if not detection.tls and option.transport == TLS:
            continue
        alpn = detection.http_alpn if option.needs_http_inspector else option.alpn
        out.append(attrs.evolve(option, transport=option.transport if detection.tls else "",
                                alpn=alpn))
    return tuple(out)
