"""Fuzz: the native proxy's HTTP/1.1 path (``core/native/http1.py``) on any bytes.

What a client or an upstream sends goes through ``Parser`` (httptools) before anything
else looks at it; what the proxy writes comes from ``request_bytes`` and
``response_bytes``. Each example is one of:

* arbitrary bytes, fed to a request or a response parser in arbitrary pieces;
* a valid message (generated: method or status, target, headers, body), written out by
  the proxy's own writers, then mutated: bytes flipped, inserted, deleted, truncated,
  pieces repeated — and fed in arbitrary pieces;
* a valid message written out and parsed back, whole or piecewise.

Properties: parsing yields whole messages or ``http1.ParseError`` and nothing else (an
upgrade ends parsing: the bytes after it flow unparsed, as the proxy treats them); how the
bytes are split into reads does not change what is parsed; what the writers produce parses
back to the same message (hop-by-hop headers and framing aside, as the writers mean to).
"""

from __future__ import annotations

import itertools

from hypothesis import example, given
from hypothesis import strategies as st

from pilotfish.core.native import http1, http1_codec

METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "PURGE"]
TOKEN = st.text("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz", min_size=1,
                max_size=20)
# Field values: visible ASCII, spaces inside (not at either end: parsers trim them), and
# obs-text (a latin-1 byte past 0x7f), which HTTP/1.1 still allows.
VALUE_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0xFF,
                            blacklist_characters="\x7f", blacklist_categories=("Cc",))
values = st.builds(lambda head, rest: (head + rest).strip() or head,
                   st.text(VALUE_CHARS, max_size=1),
                   st.text(st.one_of(VALUE_CHARS, st.just(" ")), max_size=40))
headers = st.lists(st.tuples(TOKEN, values), max_size=8)
targets = st.builds("/{}".format, st.text(st.characters(min_codepoint=0x21,
                                                         max_codepoint=0x7E), max_size=40))
bodies = st.binary(max_size=300)


@st.composite
def requests(draw: st.DrawFn) -> http1.Message:
    method = draw(st.sampled_from(METHODS))
    return http1.Message(draw(headers), draw(bodies) if method != "HEAD" else b"",
                         method=method, target=draw(targets))


@st.composite
def responses(draw: st.DrawFn) -> http1.Message:
    status = draw(st.one_of(st.sampled_from([200, 204, 302, 304, 404, 503]),
                            st.integers(200, 599)))
    body = b"" if status in (204, 304) else draw(bodies)
    return http1.Message(draw(headers), body, status=status)


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` split at ``cuts`` (positions, any order, repeats allowed)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)] or [b""]


def parse(chunks: list[bytes], response: bool = False) -> list[http1.Message]:
    """Everything a parser makes of ``chunks``; ParseError is let through, as to the
    proxy. Parsing stops at an upgrade, as the proxy's does."""
    parser = http1_codec.Parser(response=response)
    out: list[http1.Message] = []
    for chunk in chunks:
        parser.feed(chunk)
        while (message := parser.next()) is not None:
            out.append(message)
            if message.upgrade is not None:
                return out
    return out


def parse_or_refuse(chunks: list[bytes], response: bool = False) -> list[http1.Message] | str:
    try:
        return parse(chunks, response)
    except http1.ParseError as exc:
        assert str(exc), "a ParseError says what was wrong"
        return "refused"


def _comparable(messages: list[http1.Message] | str) -> object:
    if isinstance(messages, str):
        return messages
    # An upgrade's bytes are what came after its head in the same read: they depend on
    # the split by design (the proxy forwards the rest unparsed).
    return [(m.method, m.target, m.status, m.headers, m.body, m.keep_alive,
             m.upgrade is not None) for m in messages]


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not out:
            out += draw(st.binary(min_size=1, max_size=8))
            continue
        at = draw(st.integers(0, len(out) - 1))
        operation = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "repeat",
                                          "special"]))
        if operation == "flip":
            out[at] = draw(st.integers(0, 255))
        elif operation == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif operation == "delete":
            del out[at:at + draw(st.integers(1, 8))]
        elif operation == "truncate":
            del out[at:]
        elif operation == "repeat":
            out[at:at] = out[at:at + draw(st.integers(1, 64))]
        else:  # bytes that mean something to an HTTP parser
            out[at:at] = draw(st.sampled_from([
                b"\r\n", b"\n", b"\r", b"\x00", b":", b" ", b"\t", b"\r\n\r\n",
                b"Content-Length: 5\r\n", b"Content-Length: -1\r\n",
                b"Content-Length: 99999999999999999999\r\n",
                b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", b"ffffffffffffffff\r\n",
                b"Connection: Upgrade\r\nUpgrade: websocket\r\n", b"HTTP/1.1 101 x\r\n",
                b"GET / HTTP/1.1\r\n\r\n", b"HTTP/9.9", b"\xff\xfe"]))
    return bytes(out)


# -- arbitrary bytes ------------------------------------------------------------------------


@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=6), st.booleans())
@example(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nConnection: Upgrade\r\n"
         b"Upgrade: websocket\r\n\r\nrest", [], False)
@example(b"HTTP/1.1 101 Switching\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\nraw", [], True)
def test_arbitrary_bytes_parse_into_messages_or_a_parse_error(data: bytes, cuts: list[int],
                                                               response: bool) -> None:
    assert _comparable(parse_or_refuse(pieces(data, cuts), response)) == \
        _comparable(parse_or_refuse([data], response))


@given(st.data())
def test_mutated_requests_and_responses_parse_or_are_refused_however_they_are_split(
        data: st.DataObject) -> None:
    response = data.draw(st.booleans())
    messages = data.draw(st.lists(responses() if response else requests(), min_size=1,
                                  max_size=3))
    write = http1_codec.response_bytes if response else http1_codec.request_bytes
    wire = data.draw(mutated(b"".join(write(m) for m in messages)))
    whole = parse_or_refuse([wire], response)
    split = parse_or_refuse(pieces(wire, data.draw(st.lists(st.integers(0, len(wire)),
                                                            max_size=8))), response)
    assert _comparable(split) == _comparable(whole)


# -- round trips ----------------------------------------------------------------------------


def _expected_headers(message: http1.Message) -> list[tuple[str, str]]:
    return [(k.lower(), v) for k, v in message.headers
            if k.lower() not in http1.HOP_BY_HOP and k.lower() != "content-length"]


@given(st.lists(requests(), min_size=1, max_size=3), st.lists(st.integers(0, 2000),
                                                              max_size=6))
def test_requests_the_proxy_writes_parse_back_to_what_it_meant(
        messages: list[http1.Message], cuts: list[int]) -> None:
    wire = b"".join(http1_codec.request_bytes(m) for m in messages)
    parsed = parse(pieces(wire, cuts))
    assert len(parsed) == len(messages)
    for sent, got in zip(messages, parsed, strict=True):
        assert (got.method, got.target, got.body) == (sent.method, sent.target, sent.body)
        assert [h for h in got.headers if h[0] != "content-length"] == \
            _expected_headers(sent)
        assert got.keep_alive


@given(responses(), st.lists(st.integers(0, 2000), max_size=6))
def test_responses_the_proxy_writes_parse_back_to_what_it_meant(
        message: http1.Message, cuts: list[int]) -> None:
    (got,) = parse(pieces(http1_codec.response_bytes(message, "Reason"), cuts), response=True)
    assert (got.status, got.body) == (message.status, message.body)
    assert [h for h in got.headers if h[0] != "content-length"] == _expected_headers(message)
