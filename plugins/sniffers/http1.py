"""The ``http1`` sniffer: an HTTP/1.x request line (``GET /path HTTP/1.1``).

Envoy's ``http_inspector`` makes the same call from the same bytes and reports ALPN
``http/1.1`` (``http/1.0`` for 1.0 requests). The request line is judged as it arrives, so
a client that is not speaking HTTP is told apart after a few bytes rather than after the
whole read bound: a method is a short run of capitals, and the version can only be one of
two strings.
"""

from __future__ import annotations

import re

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.sniffing import HTTP11, HTTP_INSPECTOR, NEED_MORE, UNKNOWN, Sniff, Verdict

HTTP10 = "http/1.0"
VERSIONS = {b"HTTP/1.1": HTTP11, b"HTTP/1.0": HTTP10}
# Registered methods are capitals with '-' or '_' (VERSION-CONTROL); none is longer than 20.
METHOD = re.compile(rb"[A-Z][A-Z_-]{0,31}")
MAX_METHOD = 32
# Envoy's inspector looks at no more than this much of a connection.
MAX_REQUEST_LINE = 8192


def _target_ok(target: bytes) -> bool:
    return all(0x21 <= byte < 0x7F for byte in target)


class Http1Sniffer:
    name = "http1"
    protocols = (HTTP11, HTTP10)
    listener_filter = HTTP_INSPECTOR
    max_prefix = MAX_REQUEST_LINE

    def sniff(self, prefix: bytes) -> Sniff:
        end = prefix.find(b"\n")
        line = prefix if end < 0 else prefix[:end].removesuffix(b"\r")
        complete = end >= 0
        method, space, rest = line.partition(b" ")
        if not space:
            # Still inside the method (or the whole line has no space at all).
            if complete or len(method) > MAX_METHOD or (
                method and not METHOD.fullmatch(method)
            ):
                return UNKNOWN
            return NEED_MORE
        if not METHOD.fullmatch(method):
            return UNKNOWN
        target, space, version = rest.partition(b" ")
        if not _target_ok(target) or (space and not target):
            return UNKNOWN
        if not space:
            return UNKNOWN if complete else NEED_MORE
        if complete:
            protocol = VERSIONS.get(version)
            return Sniff(Verdict.DETECTED, protocol) if protocol else UNKNOWN
        partial = version.removesuffix(b"\r")
        if any(known.startswith(partial) for known in VERSIONS) and (
            partial == version or partial in VERSIONS
        ):
            return NEED_MORE
        return UNKNOWN


@hookimpl
def pilotfish_sniffer() -> Http1Sniffer:
    return Http1Sniffer()
