"""HTTP/1.1 on the wire for the native proxy: httptools (llhttp, in C) parses, this module
collects what it reports into whole messages (``http1.Message``) and writes messages back
out.

One :class:`Parser` lives as long as its connection, so pipelined and keep-alive messages
come out one after another. Bodies are collected whole, up to ``MAX_BODY`` (beyond it the
message is refused) — except with ``stream_over`` set: a message longer than that, or of
unknown length (a chunked upload; an answer up to the close: server-sent events, streamed
output) comes out at its head, ``streamed``, and its body follows in ``chunks`` as it
arrives. A request that says ``Expect: 100-continue`` is answered ``100 Continue`` by the
proxy itself, as Envoy does (``continue_wanted``), and the header is not passed on.
An upgrade (WebSocket) stops parsing and hands back the bytes after the head, which then
flow unparsed.

It is apart from ``http1`` because it runs compiled (``compiled.py``) and ztunnel, which
imports ``http1`` through ``http2``, must not load the compiled library.
"""

from __future__ import annotations

from collections import deque
from http import HTTPStatus
from typing import Any

import httptools

from pilotfish.core.native.http1 import (
    HOP_BY_HOP,
    MAX_BODY,
    MAX_HEAD,
    Message,
    ParseError,
)

# What the proxy writes itself when it sends a message on: the hop-by-hop headers and the
# length (the body's framing is the proxy's own).
_REFRAMED = HOP_BY_HOP | {"content-length"}
# Header names as they come on the wire, and as the proxy keeps them (lower-cased text):
# the same few names come on every request, so each is decoded once, not once a message.
_NAMES: dict[bytes, str] = {}
_NAMES_HELD = 1024  # distinct names remembered; past it, names are decoded as they come
_METHODS = {method.encode(): method for method in (
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")}


class Parser:
    """Whole messages from a connection's bytes; :meth:`feed` then :meth:`next`."""

    def __init__(self, response: bool = False, head_only: bool = False) -> None:
        self._response = response
        self._parser = (httptools.HttpResponseParser if response
                        else httptools.HttpRequestParser)(self)
        self._done: deque[Message] = deque()
        self.head_only = head_only  # the response to a HEAD request: no body follows
        self.upgraded = False  # a message switched protocols: no more HTTP/1.1 follows
        self.stream_over = 0  # a response longer than this (or of unknown length) streams
        self.chunks: deque[bytes] = deque()  # a streamed body's parts not yet taken
        self.streaming = False  # a streamed message's body is still coming
        self.until_close = False  # ...and ends when the connection does (no length given)
        self.continue_wanted = False  # a request's head asked for 100 Continue, not yet sent
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._head = 0
        # the message's framing headers, noted as they come (``_long`` reads them)
        self._length = ""
        self._chunked = False

    # httptools' callbacks
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head += len(name) + len(value)
        if self._head > MAX_HEAD:
            raise ParseError(f"headers larger than {MAX_HEAD} bytes")
        key = _NAMES.get(name)
        if key is None:
            key = name.decode("latin-1").lower()
            if len(_NAMES) < _NAMES_HELD:
                _NAMES[name] = key
        text = value.decode("latin-1")
        if key == "content-length":
            self._length = text
        elif key == "transfer-encoding":
            self._chunked = "chunked" in text.lower()
        elif key == "expect" and not self._response and value.lower() == b"100-continue":
            self.continue_wanted = True  # the proxy answers it; upstreams never see it
            return
        self._headers.append((key, text))

    def on_headers_complete(self) -> None:
        if self.head_only:
            self._finish()
        elif self.stream_over and self._long():
            self._finish()
            self._done[-1].streamed = self.streaming = True

    def _long(self) -> bool:
        """Whether the answer's body is longer than ``stream_over``, or of unknown length
        (asked of every answer: the common one, short with its length, is told first)."""
        length, chunked = self._length, self._chunked
        if length.isdigit() and int(length) <= self.stream_over:
            return False
        if not self._response:  # a request without a length has no body
            return chunked or bool(length)
        parser: Any = self._parser
        status = parser.get_status_code()
        if status < 200 or status in (204, 304):
            return False
        self.until_close = not length and not chunked
        return True

    def on_body(self, body: bytes) -> None:
        if self.streaming:
            self.chunks.append(body)
            return
        self._size += len(body)
        if self._size > MAX_BODY:
            raise ParseError(f"body larger than {MAX_BODY} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self.streaming:
            self.streaming = False
        elif not self.head_only:
            self._finish()

    def _finish(self) -> None:
        parser: Any = self._parser
        body = self._body
        # (positional, in the fields' order: headers, body, method, target, status,
        # version, keep_alive)
        if self._response:
            message = Message(self._headers, b"".join(body) if body else b"", "", "",
                              parser.get_status_code(), parser.get_http_version(),
                              parser.should_keep_alive())
        else:
            method = parser.get_method()
            message = Message(self._headers, b"".join(body) if body else b"",
                              _METHODS.get(method) or method.decode(),
                              self._url.decode("latin-1"), 0, parser.get_http_version(),
                              parser.should_keep_alive())
        self._done.append(message)
        self._reset()

    def feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0] if upgrade.args else len(data)
            if not self._done:
                self._finish()
            self._done[-1].upgrade = data[offset:]
            self.upgraded = True
        except httptools.HttpParserError as exc:
            raise ParseError(str(exc) or type(exc).__name__) from None

    def next(self) -> Message | None:
        return self._done.popleft() if self._done else None

    def peek(self) -> Message | None:
        """The next whole message, left where it is."""
        return self._done[0] if self._done else None

    def unread(self, message: Message) -> None:
        """Put back a message taken with :meth:`next`: it comes out next again."""
        self._done.appendleft(message)


def _head(first: str, headers: list[tuple[str, str]]) -> bytes:
    # ": ".join of a (name, value) pair is its line, joined in C (an f-string per header
    # was most of the cost of writing a head)
    if not headers:
        return f"{first}\r\n".encode("latin-1")
    return f"{first}{CRLF.join(map(': '.join, headers))}\r\n\r\n".encode("latin-1")


CRLF = "\r\n"


def request_bytes(message: Message) -> bytes:
    """The request as sent upstream: its body framed by Content-Length; a streamed one's
    head only, its length kept when the client gave one, else chunked (`chunked_body`)."""
    headers = [(k, v) for k, v in message.headers if k not in _REFRAMED]
    if message.upgrade is not None:
        headers += [("connection", "Upgrade"), ("upgrade", message.header("upgrade") or "")]
    if message.streamed:
        length = message.header("content-length") or ""
        headers.append(("content-length", length) if length.isdigit()
                       else ("transfer-encoding", "chunked"))
        return _head(f"{message.method} {message.target} HTTP/1.1\r\n", headers)
    if message.body or message.method in ("POST", "PUT", "PATCH"):
        headers.append(("content-length", str(len(message.body))))
    return _head(f"{message.method} {message.target} HTTP/1.1\r\n", headers) + message.body


def chunked_body(message: Message) -> bool:
    """Whether a streamed message's body goes out chunked (it has no length of its own)."""
    return not (message.header("content-length") or "").isdigit()


_REASONS = {status.value: status.phrase for status in HTTPStatus}


def _reason(status: int) -> str:
    """The status line's reason phrase, as Envoy writes it."""
    return _REASONS.get(status, "Unknown")


def streamed_head(message: Message) -> tuple[bytes, bool]:
    """The head of an answer whose body follows as it comes, and whether that body goes
    chunked: the upstream's length is kept when it gave one."""
    length = message.header("content-length") or ""
    chunked = chunked_body(message)
    headers = [(k, v) for k, v in message.headers if k not in _REFRAMED]
    headers.append(("transfer-encoding", "chunked") if chunked else ("content-length", length))
    return _head(f"HTTP/1.1 {message.status} {_reason(message.status)}\r\n", headers), chunked


def response_bytes(message: Message, reason: str = "", head_request: bool = False,
                   close: bool = False) -> bytes:
    """A response as sent downstream (a 101 keeps its upgrade headers)."""
    upgrading = message.status == 101
    if upgrading:
        headers = list(message.headers)
    else:
        headers = [(k, v) for k, v in message.headers if k not in _REFRAMED]
    if not upgrading and message.status not in (204, 304) and message.status >= 200:
        headers.append(("content-length", str(len(message.body))))
    if close:
        headers.append(("connection", "close"))
    out = _head(f"HTTP/1.1 {message.status} {reason or _reason(message.status)}\r\n", headers)
    if not head_request and not upgrading:
        return out + message.body
    return out
