"""Fuzz: the sniffers (``plugins/sniffers``) on any first bytes, as the native proxy asks.

The native proxy's listener filters peek at a connection's first bytes and call
``sniffing.detect`` with the sniffers a listener's inspectors allow (tls_inspector: the
``tls`` sniffer; http_inspector: ``http1`` and ``http2``), again as more bytes arrive,
then once more with ``complete=True`` (``core/native/proxy.py``'s ``_inspect``). Each
example is a first flight:

* arbitrary bytes;
* a real one (a ClientHello Python's ``ssl`` made, with and without SNI and ALPN; request
  lines; the h2c preface), truncated, or mutated: bytes flipped, inserted, deleted, TLS
  length fields set to edge values.

Properties, for every sniffer on its own and for each set ``_inspect`` uses: an answer,
never an exception; detections only of protocols the sniffer declares; and monotone: on
any longer prefix a detection (or an unknown) stays the same answer — more bytes never
turn it back into NEED_MORE, so the proxy may stop reading at the first answer.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from pilotfish.core import sniffing
from pilotfish.plugins.sniffers.http1 import Http1Sniffer
from pilotfish.plugins.sniffers.http2 import Http2Sniffer
from pilotfish.plugins.sniffers.tls import TlsSniffer
from pilotfish.testing.sniffers import client_hello, samples

SNIFFERS: list[sniffing.Sniffer] = [TlsSniffer(), Http1Sniffer(), Http2Sniffer()]
# What _inspect passes detect(): tls_inspector, http_inspector, or both (in that order).
SETS = [SNIFFERS[:1], SNIFFERS[1:], SNIFFERS]
SEEDS = [*samples().values(), client_hello(".".join(["a" * 60] * 4), ["h2", "http/1.1", "x" * 100]),
         b"POST /x?y=1 HTTP/1.0\r\n", b"VERSION-CONTROL * HTTP/1.1\r\n\r\n"]
# The TLS length fields: record length (3..5), handshake length (6..9), then the
# session id, cipher suites and extensions vectors further in.
LENGTH_AT = [3, 4, 6, 7, 8, 43, 44, 45]


@st.composite
def first_flights(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=400))
    out = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 3))):
        if not out:
            break
        at = draw(st.integers(0, len(out) - 1))
        operation = draw(st.sampled_from(["flip", "insert", "delete", "length", "truncate"]))
        if operation == "flip":
            out[at] = draw(st.integers(0, 255))
        elif operation == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif operation == "delete":
            del out[at:at + draw(st.integers(1, 16))]
        elif operation == "length":
            at = draw(st.sampled_from(LENGTH_AT))
            if at + 1 < len(out):
                out[at:at + 2] = draw(st.sampled_from([0, 1, 0x3FFF, 0x4800, 0xFFFF,
                                                       len(out)])).to_bytes(2, "big")
        else:
            del out[at:]
    if draw(st.booleans()):
        out += draw(st.binary(max_size=40))  # whatever the client sends next
    return bytes(out)


def _check_monotone(judge: object, data: bytes, cuts: list[int],
                    protocols: tuple[str, ...]) -> None:
    assert callable(judge)
    points = sorted({c % (len(data) + 1) for c in cuts} | {len(data)})
    settled: tuple[int, sniffing.Sniff] | None = None
    for end in points:
        found = judge(data[:end])
        assert isinstance(found, sniffing.Sniff)
        assert (found.protocol in protocols) == found.detected, found
        if settled is not None:
            assert found == settled[1], (
                f"{settled[1]} after {settled[0]} bytes, then {found} after {end}")
        elif found.verdict is not sniffing.Verdict.NEED_MORE:
            settled = (end, found)


@given(first_flights(), st.lists(st.integers(0, 500), max_size=12))
@example(b"\x16\x03\x01\x00\x05\x01\x00\x00\x10", [5, 9])
@example(b"GET / HTTP/1.1\r", [14, 15])
def test_each_sniffer_answers_and_more_bytes_never_change_an_answer(
        data: bytes, cuts: list[int]) -> None:
    for sniffer in SNIFFERS:
        _check_monotone(sniffer.sniff, data, cuts, sniffer.protocols)


@given(first_flights(), st.lists(st.integers(0, 500), max_size=12), st.sampled_from(SETS))
def test_detect_as_the_native_proxy_calls_it_is_monotone_and_complete_settles(
        data: bytes, cuts: list[int], sniffers: list[sniffing.Sniffer]) -> None:
    protocols = tuple(p for s in sniffers for p in s.protocols)
    _check_monotone(lambda prefix: sniffing.detect(sniffers, prefix), data, cuts, protocols)
    final = sniffing.detect(sniffers, data, complete=True)
    assert final.verdict is not sniffing.Verdict.NEED_MORE
    partial = sniffing.detect(sniffers, data)
    if partial.verdict is not sniffing.Verdict.NEED_MORE:
        assert final == partial  # what the proxy decided early, it would decide at the end
