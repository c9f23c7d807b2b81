"""The ``http2`` sniffer: cleartext HTTP/2 with prior knowledge (h2c), by its preface.

Every HTTP/2 client starts with the same 24 bytes (RFC 9113 §3.4); Envoy's
``http_inspector`` reports ``h2c`` on exactly that. HTTP/2 over TLS is the ``tls``
sniffer's business (it shows up as ALPN ``h2``).
"""

from __future__ import annotations

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.sniffing import H2C, HTTP_INSPECTOR, NEED_MORE, UNKNOWN, Sniff, Verdict

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Http2Sniffer:
    name = "http2"
    protocols = (H2C,)
    listener_filter = HTTP_INSPECTOR
    max_prefix = len(PREFACE)

    def sniff(self, prefix: bytes) -> Sniff:
        if prefix.startswith(PREFACE):
            return Sniff(Verdict.DETECTED, H2C)
        if PREFACE.startswith(prefix):
            return NEED_MORE
        return UNKNOWN


@hookimpl
def pilotfish_sniffer() -> Http2Sniffer:
    return Http2Sniffer()
