"""pilotfish's sniffers agree with Envoy's inspectors, and disabled inspectors do not wait.

A real Envoy listens with ``tls_inspector`` and ``http_inspector`` (built by the LDS
helpers) and filter chains that answer with the name of what they matched
(``direct_response``). The same bytes go to Envoy and to ``sniffing.detect``; the verdicts
must be the same. A second listener shows what the per-port ``filter_disabled`` predicate
buys server-first protocols: the server speaks at once instead of waiting for the client.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from pilotfish.core.sniffing import HTTP_INSPECTOR, TLS_INSPECTOR, Sniff, Verdict, detect
from pilotfish.plugins.envoy.backend import envoy_binary
from pilotfish.plugins.sniffers import http1, http2, tls
from pilotfish.testing.processes import Process, free_port, wait_until
from pilotfish.testing.sniffers import samples
from pilotfish.translators.listener_filters import listener_filter

pytestmark = pytest.mark.envoy

SNIFFERS = [tls.TlsSniffer(), http1.Http1Sniffer(), http2.Http2Sniffer()]
SNI = "api.example.com"


def _answer(text: str) -> list[dict[str, Any]]:
    return [{
        "name": "envoy.filters.network.direct_response",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.direct_response"
                     ".v3.Config",
            "response": {"inline_string": text},
        },
    }]


def _filters(*names: str, skip: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    return [json_format.MessageToDict(listener_filter(n, skip)) for n in names]


def _listener(name: str, port: int, filters: list[dict[str, Any]],
              chains: list[tuple[dict[str, Any], str]], timeout: str) -> dict[str, Any]:
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "listener_filters": filters,
        "listener_filters_timeout": timeout,
        "continue_on_listener_filters_timeout": True,
        "filter_chains": [{"filter_chain_match": match, "filters": _answer(text)}
                          for match, text in chains],
    }


# What each chain answers; the label says what Envoy decided.
CHAINS = [
    ({"server_names": [SNI], "transport_protocol": "tls"}, f"tls:{SNI}"),
    ({"transport_protocol": "tls", "application_protocols": ["h2"]}, "tls:h2"),
    ({"transport_protocol": "tls"}, "tls"),
    ({"application_protocols": ["http/1.1"]}, "http/1.1"),
    ({"application_protocols": ["http/1.0"]}, "http/1.0"),
    ({"application_protocols": ["h2c"]}, "h2c"),
    ({}, "unknown"),
]


def label(result: Sniff) -> str:
    """The chain our verdict would select, in the terms of CHAINS."""
    if result.verdict is not Verdict.DETECTED:
        return "unknown"
    if result.protocol == "tls":
        if result.server_name == SNI:
            return f"tls:{SNI}"
        return "tls:h2" if "h2" in result.alpn else "tls"
    return result.protocol


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    work = tmp_path_factory.mktemp("sniff-envoy")
    ports = {"sniff": free_port(), "quiet": free_port(), "waits": free_port(),
             "admin": free_port()}
    server_first = [({}, "220 server speaks first\r\n")]
    bootstrap = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": ports["admin"]}}},
        "static_resources": {"listeners": [
            _listener("sniff", ports["sniff"], _filters(TLS_INSPECTOR, HTTP_INSPECTOR),
                      CHAINS, "2s"),
            # The inspectors are off for this port, as virtualInbound has them for 3306.
            _listener("quiet", ports["quiet"],
                      _filters(TLS_INSPECTOR, HTTP_INSPECTOR, skip=(ports["quiet"],)),
                      server_first, "0s"),
            _listener("waits", ports["waits"], _filters(TLS_INSPECTOR, HTTP_INSPECTOR),
                      server_first, "0s"),
        ]},
    }
    path = Path(work) / "envoy.json"
    path.write_text(json.dumps(bootstrap))
    process = Process("envoy", [str(envoy_binary()), "-c", str(path), "--disable-hot-restart",
                                "--base-id", str(ports["admin"]), "-l", "warning"],
                      Path(work) / "envoy.log").start()
    try:
        for port in ports.values():
            wait_until(lambda p=port: _connects(p), what=f"Envoy listening on {port}")
        yield ports
    finally:
        process.stop()


def _connects(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        if data:
            sock.sendall(data)
        out = b""
        while True:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                return out
            if not chunk:
                return out
            out += chunk


CASES = samples()


@pytest.mark.parametrize("case", sorted(CASES))
def test_sniffers_decide_as_envoy_does(envoy: dict[str, int], case: str) -> None:
    data = CASES[case]
    ours = label(detect(SNIFFERS, data, complete=True))
    got = exchange(envoy["sniff"], data).decode()
    assert got == ours


def test_disabled_inspectors_let_the_server_speak_first(envoy: dict[str, int]) -> None:
    assert exchange(envoy["quiet"], b"", timeout=3.0) == b"220 server speaks first\r\n"
    # With the inspectors on and no detection timeout, nothing happens until the client
    # speaks: what a MySQL client would see.
    assert exchange(envoy["waits"], b"", timeout=1.0) == b""
