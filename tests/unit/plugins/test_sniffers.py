"""Sniffers on real byte prefixes: TLS ClientHellos made by Python's ssl, HTTP/1.x request
lines, the HTTP/2 preface, and bytes of protocols that are none of these."""

from __future__ import annotations

import struct

import pytest

from pilotfish.core import meshconfig, plugins, sniffing
from pilotfish.core.sniffing import NEED_MORE, UNKNOWN, Sniff, Verdict, detect, read_bound
from pilotfish.plugins.sniffers import http1, http2, tls
from pilotfish.testing.sniffers import check_sniffer, client_hello, samples

TLS_SNIFFER = tls.TlsSniffer()
HTTP1 = http1.Http1Sniffer()
HTTP2 = http2.Http2Sniffer()
ALL = [TLS_SNIFFER, HTTP1, HTTP2]

MYSQL_GREETING = samples()["mysql-greeting"]
SSH_IDENT = samples()["ssh"]
REDIS = samples()["redis"]


def split_records(hello: bytes, at: int) -> bytes:
    """The same ClientHello carried in two handshake records, as TLS allows."""
    body = hello[5:]
    version = hello[1:3]
    first, second = body[:at], body[at:]
    return (b"\x16" + version + struct.pack(">H", len(first)) + first
            + b"\x16" + version + struct.pack(">H", len(second)) + second)


@pytest.mark.parametrize("sniffer", ALL, ids=lambda s: s.name)
def test_builtin_sniffers_keep_the_plugin_contract(sniffer: sniffing.Sniffer) -> None:
    check_sniffer(sniffer)


# -- TLS ---------------------------------------------------------------------------------


def test_client_hello_gives_sni_and_alpn() -> None:
    result = TLS_SNIFFER.sniff(client_hello("API.Example.com", ["h2", "http/1.1"]))
    assert result == Sniff(Verdict.DETECTED, "tls", "api.example.com", ("h2", "http/1.1"))


def test_client_hello_without_sni_or_alpn_is_still_tls() -> None:
    assert TLS_SNIFFER.sniff(client_hello(None)) == Sniff(Verdict.DETECTED, "tls")


def test_every_proper_prefix_of_a_client_hello_needs_more() -> None:
    hello = client_hello(alpn=["istio-peer-exchange", "istio"])
    assert all(TLS_SNIFFER.sniff(hello[:n]) == NEED_MORE for n in range(len(hello)))


def test_client_hello_across_two_records() -> None:
    hello = client_hello(alpn=["h2"])
    result = TLS_SNIFFER.sniff(split_records(hello, 40))
    assert (result.verdict, result.server_name, result.alpn) == (
        Verdict.DETECTED, "api.example.com", ("h2",))


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n", http2.PREFACE, MYSQL_GREETING, SSH_IDENT, REDIS,
    b"\x16\x03\x03\x00\x05\x02\x00\x00\x01\x00",  # a ServerHello: TLS, not a client
    b"\x16\x02",  # not a TLS 1.x record version
    b"\x17\x03\x03\x00\x10",  # application data without a handshake
])
def test_what_is_not_a_client_hello(data: bytes) -> None:
    assert TLS_SNIFFER.sniff(data) == UNKNOWN


def test_truncated_client_hello_body_is_unknown() -> None:
    hello = client_hello()
    # Claim a shorter handshake than the extensions need: malformed, not "need more".
    broken = bytearray(hello)
    broken[6:9] = (60).to_bytes(3, "big")
    assert TLS_SNIFFER.sniff(bytes(broken)) == UNKNOWN


# -- HTTP/1.x ----------------------------------------------------------------------------


@pytest.mark.parametrize(("request_line", "protocol"), [
    (b"GET /productpage HTTP/1.1\r\nHost: bookinfo\r\n\r\n", "http/1.1"),
    (b"POST /api/v1/items?id=3 HTTP/1.1\r\n", "http/1.1"),
    (b"OPTIONS * HTTP/1.1\r\n", "http/1.1"),
    (b"CONNECT db.example.com:5432 HTTP/1.1\r\n", "http/1.1"),
    (b"VERSION-CONTROL /x HTTP/1.1\r\n", "http/1.1"),
    (b"GET / HTTP/1.0\r\n\r\n", "http/1.0"),
    (b"GET / HTTP/1.1\n", "http/1.1"),  # bare LF, which servers tolerate
])
def test_http1_request_lines(request_line: bytes, protocol: str) -> None:
    assert HTTP1.sniff(request_line) == Sniff(Verdict.DETECTED, protocol)


def test_every_proper_prefix_of_a_request_line_needs_more() -> None:
    line = b"GET /reviews/0 HTTP/1.1\r\n"
    assert all(HTTP1.sniff(line[:n]) == NEED_MORE for n in range(len(line)))


@pytest.mark.parametrize("data", [
    http2.PREFACE, b"PRI * HTTP/2.0\r\n", SSH_IDENT, MYSQL_GREETING, REDIS,
    b"get / HTTP/1.1\r\n",  # methods are case-sensitive
    b"GET / HTTP/2\r\n", b"GET / HTTP/1.1 extra\r\n", b"GET  / HTTP/1.1\r\n",
    b"GET /\x00 HTTP/1.1\r\n", b"GET\r\n", b"GET / HTTP/1.2", b"GET / HTTP/1.1\rX",
    b"A" * 40,  # no method is this long
])
def test_what_is_not_http1(data: bytes) -> None:
    assert HTTP1.sniff(data) == UNKNOWN


def test_http1_rejects_binary_at_the_first_byte() -> None:
    assert HTTP1.sniff(b"\x16") == UNKNOWN
    assert HTTP1.sniff(b"\x4a") == NEED_MORE  # "J" could start a method


# -- HTTP/2 ------------------------------------------------------------------------------


def test_h2c_preface() -> None:
    preface_and_settings = http2.PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    assert HTTP2.sniff(preface_and_settings) == Sniff(Verdict.DETECTED, "h2c")
    assert all(HTTP2.sniff(http2.PREFACE[:n]) == NEED_MORE for n in range(24))
    assert HTTP2.sniff(b"GET / HTTP/1.1\r\n") == UNKNOWN
    assert HTTP2.sniff(b"PRI * HTTP/1.1\r\n") == UNKNOWN


# -- detect: several sniffers ------------------------------------------------------------


@pytest.mark.parametrize(("data", "protocol"), [
    (client_hello(), "tls"),
    (b"GET / HTTP/1.1\r\n", "http/1.1"),
    (http2.PREFACE, "h2c"),
])
def test_detect_picks_the_sniffer_that_recognises_the_bytes(data: bytes, protocol: str) -> None:
    assert detect(ALL, data).protocol == protocol


def test_detect_waits_while_any_sniffer_may_still_match() -> None:
    assert detect(ALL, b"PRI * HTTP/2") == NEED_MORE  # http1 has ruled it out, http2 not
    assert detect(ALL, b"PRI * HTTP/2", complete=True) == UNKNOWN
    assert detect(ALL, MYSQL_GREETING) == UNKNOWN


def test_detect_order_is_priority() -> None:
    class Greedy:
        name, protocols, listener_filter, max_prefix = "greedy", ("x",), "", 4

        def sniff(self, prefix: bytes) -> Sniff:
            return Sniff(Verdict.DETECTED, "x") if len(prefix) >= 4 else NEED_MORE

    assert detect([Greedy(), HTTP1], b"GET / HTTP/1.1\r\n").protocol == "x"
    assert detect([HTTP1, Greedy()], b"GET / HTTP/1.1\r\n").protocol == "http/1.1"
    # The earlier sniffer still needs bytes: the later one's verdict must wait.
    assert detect([HTTP1, Greedy()], b"GET / HT") == NEED_MORE


def test_read_bound_is_the_largest_prefix_any_sniffer_needs() -> None:
    assert read_bound(ALL) == tls.MAX_CLIENT_HELLO
    assert read_bound([HTTP2]) == 24
    assert read_bound([]) == 0


# -- as plugins --------------------------------------------------------------------------


def test_sidecar_profile_activates_the_three_sniffers_in_order() -> None:
    active = plugins.Plugins.from_config(meshconfig.MeshConfig(), groups=["sniffers"])
    found = active.sniffers()
    assert [s.name for s in found] == ["tls", "http1", "http2"]
    assert [s.listener_filter for s in found] == [
        sniffing.TLS_INSPECTOR, sniffing.HTTP_INSPECTOR, sniffing.HTTP_INSPECTOR]


def test_mesh_config_removes_sniffers() -> None:
    config = meshconfig.from_dict({"plugins": {"sniffers": {"remove": ["http1", "http2"]}}})
    active = plugins.Plugins.from_config(config, groups=["sniffers"])
    assert [s.name for s in active.sniffers()] == ["tls"]
