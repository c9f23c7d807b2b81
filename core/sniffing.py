"""Protocol detection on the first bytes of a connection: the sniffer contract.

A sniffer (group ``pilotfish.sniffers``) looks at a bounded prefix of what the client sent
and answers *detected* (with the protocol, and for TLS the SNI and ALPN it offered), *need
more* or *unknown*. It never reads a socket: the IO side does one bounded read, calls
`detect`, and replays the bytes to whatever handles the connection (STYLE.md §8).

Each sniffer also names the Envoy listener filter that does the same job, which is how the
LDS translator knows which inspectors the active sniffers allow it to emit.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import attrs

TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
HTTP_INSPECTOR = "envoy.filters.listener.http_inspector"

# The protocol names sniffers report; Envoy's inspectors use the same strings (the TLS
# inspector sets transport "tls", the HTTP inspector sets ALPN "http/1.1" or "h2c").
TLS = "tls"
HTTP11 = "http/1.1"
H2C = "h2c"


class Verdict(enum.Enum):
    DETECTED = "detected"
    NEED_MORE = "need more"  # the prefix is consistent with the protocol but too short
    UNKNOWN = "unknown"  # not this protocol, whatever follows


@attrs.frozen
class Sniff:
    """What a sniffer concluded from one prefix."""

    verdict: Verdict
    protocol: str = ""  # set when DETECTED: "tls", "http/1.1", "h2c", ...
    server_name: str = ""  # TLS: the SNI the client asked for
    alpn: tuple[str, ...] = ()  # TLS: the application protocols the client offered

    @property
    def detected(self) -> bool:
        return self.verdict is Verdict.DETECTED


NEED_MORE = Sniff(Verdict.NEED_MORE)
UNKNOWN = Sniff(Verdict.UNKNOWN)


@runtime_checkable
class Sniffer(Protocol):
    """What a ``pilotfish.sniffers`` plugin returns from ``pilotfish_sniffer``."""

    name: str  # short name, as in the mesh config ("tls", "http1", "http2")
    protocols: tuple[str, ...]  # every protocol `sniff` may report
    # The Envoy listener filter that makes the same distinction, or "" if none does.
    listener_filter: str
    max_prefix: int  # bytes after which the answer can no longer be NEED_MORE

    def sniff(self, prefix: bytes) -> Sniff:
        """Judge the first bytes of a connection (at most ``max_prefix`` are looked at)."""
        ...


def detect(sniffers: Sequence[Sniffer], prefix: bytes, *, complete: bool = False) -> Sniff:
    """The first sniffer's answer that is not UNKNOWN, in order.

    Order is priority: while an earlier sniffer still needs more bytes a later one cannot
    win, so one connection is never judged differently depending on how its bytes were
    split into reads. ``complete`` says no more bytes will come (end of stream, detection
    timeout, or the read bound was reached): a NEED_MORE then becomes UNKNOWN.
    """
    for sniffer in sniffers:
        result = sniffer.sniff(prefix[: sniffer.max_prefix])
        if result.verdict is Verdict.UNKNOWN:
            continue
        if result.verdict is Verdict.NEED_MORE and (
            complete or len(prefix) >= sniffer.max_prefix
        ):
            continue
        return result
    return UNKNOWN


def read_bound(sniffers: Sequence[Sniffer]) -> int:
    """How many bytes the IO side should read at most before calling it unknown."""
    return max((s.max_prefix for s in sniffers), default=0)
