"""The ``tls`` sniffer: a TLS ClientHello, with the SNI and ALPN the client offered.

Envoy's ``tls_inspector`` makes the same call; it is what lets filter chains match on
``transport_protocol: tls``, ``server_names`` and ``application_protocols``. Detection
needs the whole ClientHello (the SNI and ALPN extensions can sit anywhere in it), which may
span several handshake records; anything malformed is not TLS.
"""

from __future__ import annotations

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.sniffing import NEED_MORE, TLS, TLS_INSPECTOR, UNKNOWN, Sniff, Verdict

HANDSHAKE_RECORD = 0x16
CLIENT_HELLO = 0x01
EXT_SERVER_NAME = 0x0000
EXT_ALPN = 0x0010
RECORD_HEADER = 5
MAX_RECORD = 16384 + 2048  # TLSPlaintext limit plus the slack TLS 1.2 allows for ciphertext
# Envoy's inspector gives up on ClientHellos beyond 64 KiB; the same bound here.
MAX_CLIENT_HELLO = 64 * 1024


class _Malformed(Exception):
    pass


class _Reader:
    """Big-endian fields out of a byte string; running off the end is malformed."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _Malformed
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> _Reader:
        return _Reader(self.take(self.number(length_bytes)))

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)


def _handshake_bytes(prefix: bytes) -> bytes | None:
    """The handshake payload of the leading handshake records (None: not TLS)."""
    out = bytearray()
    pos = 0
    while pos + RECORD_HEADER <= len(prefix):
        kind, major, length = prefix[pos], prefix[pos + 1], int.from_bytes(
            prefix[pos + 3:pos + 5], "big")
        if kind != HANDSHAKE_RECORD or major != 3 or not 0 < length <= MAX_RECORD:
            return None if pos == 0 else bytes(out)
        out += prefix[pos + RECORD_HEADER:pos + RECORD_HEADER + length]
        pos += RECORD_HEADER + length
    if pos < len(prefix):  # a partial record header: check what is there
        head = prefix[pos:]
        if head[0] != HANDSHAKE_RECORD or (len(head) > 1 and head[1] != 3):
            return None if pos == 0 else bytes(out)
    return bytes(out)


def _parse_client_hello(body: bytes) -> Sniff:
    reader = _Reader(body)
    reader.take(2 + 32)  # legacy_version, random
    reader.vector(1)  # legacy_session_id
    suites = reader.vector(2)
    if not suites.data or len(suites.data) % 2:
        raise _Malformed
    if not reader.vector(1).data:  # compression methods: at least "null"
        raise _Malformed
    server_name = ""
    alpn: tuple[str, ...] = ()
    if not reader.done:
        extensions = reader.vector(2)
        while not extensions.done:
            kind, data = extensions.number(2), extensions.vector(2)
            if kind == EXT_SERVER_NAME:
                server_name = _server_name(data)
            elif kind == EXT_ALPN:
                alpn = _alpn(data)
    return Sniff(Verdict.DETECTED, TLS, server_name, alpn)


def _server_name(data: _Reader) -> str:
    names = data.vector(2)
    while not names.done:
        kind, name = names.number(1), names.vector(2).data
        if kind == 0:  # host_name
            return name.decode("ascii", "replace").lower()
    return ""


def _alpn(data: _Reader) -> tuple[str, ...]:
    names = data.vector(2)
    out = []
    while not names.done:
        out.append(names.vector(1).data.decode("ascii", "replace"))
    return tuple(out)


class TlsSniffer:
    name = "tls"
    protocols = (TLS,)
    listener_filter = TLS_INSPECTOR
    max_prefix = MAX_CLIENT_HELLO

    def sniff(self, prefix: bytes) -> Sniff:
        handshake = _handshake_bytes(prefix[:self.max_prefix])
        if handshake is None:
            return UNKNOWN
        if len(handshake) < 4:
            return NEED_MORE
        if handshake[0] != CLIENT_HELLO:
            return UNKNOWN
        length = int.from_bytes(handshake[1:4], "big")
        if length > MAX_CLIENT_HELLO:
            return UNKNOWN
        if len(handshake) < 4 + length:
            return NEED_MORE
        try:
            return _parse_client_hello(handshake[4:4 + length])
        except _Malformed:
            return UNKNOWN


@hookimpl
def pilotfish_sniffer() -> TlsSniffer:
    return TlsSniffer()
