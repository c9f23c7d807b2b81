"""HTTP/1.1 messages for the native proxy: what a request or a response is once parsed,
and the limits on it. ``http1_codec`` turns bytes into these and back; HTTP/2 (``http2``)
carries the same messages.
"""

from __future__ import annotations

from typing import Protocol

import attrs

MAX_BODY = 16 * 1024 * 1024
MAX_HEAD = 64 * 1024
# Hop-by-hop headers: they describe one connection and are not forwarded.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                        "te", "trailer", "upgrade"})


class ParseError(Exception):
    """Bytes that are not HTTP/1.1; the message says what was wrong."""


class BodySource(Protocol):
    """Where a streamed message's body comes from."""

    @property
    def taken(self) -> int:
        """How much of the body has been taken so far."""

    async def chunk(self) -> bytes:
        """The next part of the body; b"" once it has all come."""

    def close(self) -> None:
        """The rest is not wanted (or could not come): give up the connection."""


@attrs.define
class Message:
    """A request (``method``, ``target``) or a response (``status``)."""

    headers: list[tuple[str, str]]  # names lower-cased, in order
    body: bytes = b""
    method: str = ""
    target: str = ""
    status: int = 0
    version: str = "1.1"
    keep_alive: bool = True
    upgrade: bytes | None = None  # the bytes after the head of an upgrading request
    trailers: list[tuple[str, str]] = attrs.field(factory=list)  # HTTP/2's (gRPC status)
    # The body is still coming (``Parser.stream_over``): read it from ``body_source``.
    streamed: bool = False
    body_source: BodySource | None = None

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None
