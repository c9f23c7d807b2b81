"""echo-basic's answers, as the Gateway API suite reads them (sans-IO)."""

from __future__ import annotations

import json

import pytest

from pilotfish.demo import echo_basic
from pilotfish.demo.echo_basic import Context, Request, RetrySimulation, TlsInfo

CONTEXT = Context(namespace="infra", pod="echo-abc-xyz12", http_port="3000")


def request(target: str = "/", headers: tuple[tuple[str, str], ...] = (),
            proto: str = "HTTP/1.1", tls: TlsInfo | None = None) -> Request:
    return Request("GET", target, "example.com", proto, headers, tls)


def answer(req: Request, h2c: bool = False) -> echo_basic.Answer:
    return echo_basic.answer(req, CONTEXT, RetrySimulation(), h2c_port=h2c)


def test_the_echo_has_every_field_captured_request_reads():
    got = answer(request("/a//b?x=1", (("x-custom", "1"), ("X-Custom", "2"),
                                        ("user-agent", "go"))))
    body = json.loads(got.body)
    assert body == {
        "path": "/a//b?x=1", "host": "example.com", "method": "GET", "proto": "HTTP/1.1",
        "headers": {"User-Agent": ["go"], "X-Custom": ["1", "2"]}, "httpPort": "3000",
        "namespace": "infra", "ingress": "", "service": "", "pod": "echo-abc-xyz12"}
    assert ("Content-Type", "application/json") in got.headers


def test_tls_is_echoed_as_go_names_it():
    tls = TlsInfo("TLSv1.2", "abc.example.com", "h2",
                  echo_basic.go_cipher("ECDHE-RSA-AES128-GCM-SHA256"))
    body = json.loads(answer(request(tls=tls)).body)
    assert body["tls"] == {"version": "TLSv1.2", "serverName": "abc.example.com",
                           "negotiatedProtocol": "h2",
                           "cipherSuite": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"}


def test_echo_set_header_sets_response_headers_and_joins_repeats():
    got = answer(request(headers=(("x-echo-set-header", "X-Foo:a, X-Bar:b,X-Foo:c"),)))
    assert ("X-Foo", "a,c") in got.headers and ("X-Bar", "b") in got.headers


def test_canonical_header_names_are_gos():
    assert echo_basic.canonical("x-forwarded-for") == "X-Forwarded-For"
    assert echo_basic.canonical("X-ECHO") == "X-Echo"
    assert echo_basic.canonical("bad name") == "bad name"


@pytest.mark.parametrize(("target", "status"), [
    ("/status/418", 418), ("/status/41", 400), ("/status/418?x=1", 400)])
def test_status_paths(target: str, status: int):
    assert answer(request(target)).status == status


def test_health_and_delay():
    assert answer(request("/health")).body == b"OK"
    assert answer(request("/x?delay=1.5s")).delay == 1.5
    assert answer(request("/x?delay=bogus")).status == 500


def test_go_durations():
    assert echo_basic.parse_duration("1m30s") == 90.0
    assert echo_basic.parse_duration("250ms") == 0.25
    with pytest.raises(ValueError):
        echo_basic.parse_duration("5")


def test_retry_fails_the_asked_number_of_times_per_uuid_then_echoes():
    retries = RetrySimulation()
    target = "/retry/?uuid=u1&succeedAfter=2"
    first, second, third = (echo_basic.answer(request(target), CONTEXT, retries)
                            for _ in range(3))
    assert first.reset and second.reset and third.status == 200 and not third.reset
    coded = echo_basic.answer(request("/retry/?uuid=u2&succeedAfter=1&responseCode=503"),
                              CONTEXT, retries)
    assert coded.status == 503 and not coded.reset
    assert echo_basic.answer(request("/retry/?succeedAfter=1"), CONTEXT, retries).status == 400


def test_the_h2c_port_wants_http2_or_an_upgrade():
    assert answer(request("/x"), h2c=True).status == 400
    assert answer(request("/x", proto="HTTP/2.0"), h2c=True).status == 200
    assert answer(request("/x", (("Upgrade", "h2c"),)), h2c=True).status == 200
    # everything on that port is echoed (no /status there, as in the Go server)
    assert answer(request("/status/500", proto="HTTP/2.0"), h2c=True).status == 200
