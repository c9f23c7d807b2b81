"""The Gateway API conformance suite's backend, ``echo-basic``, as pilotfish runs it.

The suite's Deployments run ``registry.k8s.io/gateway-api/conformance/echo-basic`` with no
command; the local node runs this module for that image (``node/pods.py``). It answers as
the Go server does (kubernetes-sigs/gateway-api-conformance-images ``echo-basic``), chosen
by its environment:

- default: HTTP on ``HTTP_PORT`` (3000, HTTP/1.1), h2c on ``H2C_PORT`` (3001, HTTP/2 with
  prior knowledge; HTTP/1.1 only with ``Upgrade: h2c``), and with ``TLS_SERVER_CERT`` and
  ``TLS_SERVER_PRIVKEY`` HTTPS on ``HTTPS_PORT`` (8443, ALPN h2 and http/1.1; client
  certificates checked against ``TLS_CLIENT_CACERTS`` when given). Every request is
  answered with the JSON the suite's ``roundtripper.CapturedRequest`` reads: path (the
  request target as sent), host, method, proto, headers (Go's canonical names, lists of
  values), httpPort, namespace, ingress, service, pod and, over TLS, tls. ``/health``
  answers OK, ``/status/NNN`` that status, ``/retry/?uuid=U&succeedAfter=N`` fails N times
  per uuid (a TCP reset, or ``responseCode``) then echoes; ``?delay=1s`` waits first;
  ``X-Echo-Set-Header: name:value,...`` sets response headers. A WebSocket handshake to
  ``/ws`` (HTTP/1.1) echoes every message back.
- ``GRPC_ECHO_SERVER``: the suite's ``GrpcEcho`` service (``demo/echo_grpc.py``).
- ``TCP_ECHO_SERVER``: the line protocol of its TCP server (``demo/echo_tcp.py``).

This module holds the decisions (sans-IO); ``demo/echo_http.py`` moves the bytes.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs

SET_HEADER = "X-Echo-Set-Header"
_STATUS = re.compile(r"^/status/(\d\d\d)$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# OpenSSL's names of TLS 1.2 suites → Go's (tls.CipherSuiteName), which the suite compares.
_GO_CIPHERS = {
    "ECDHE-RSA-AES128-GCM-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
}


@attrs.frozen
class Context:
    """Where the server runs (its environment), echoed in every answer."""

    namespace: str = ""
    ingress: str = ""
    service: str = ""
    pod: str = ""
    http_port: str = "3000"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Context:
        return cls(env.get("NAMESPACE", ""), env.get("INGRESS_NAME", ""),
                   env.get("SERVICE_NAME", ""), env.get("POD_NAME", ""),
                   env.get("HTTP_PORT") or "3000")


@attrs.frozen
class TlsInfo:
    version: str  # "TLSv1.3"
    server_name: str
    negotiated_protocol: str
    cipher_suite: str
    peer_certificates: tuple[str, ...] = ()  # PEM

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version}
        if self.peer_certificates:
            out["peerCertificates"] = list(self.peer_certificates)
        out["serverName"] = self.server_name
        if self.negotiated_protocol:
            out["negotiatedProtocol"] = self.negotiated_protocol
        out["cipherSuite"] = self.cipher_suite
        return out


def go_cipher(name: str) -> str:
    return _GO_CIPHERS.get(name, name)


@attrs.frozen
class Request:
    method: str
    target: str  # the request target as sent (Go's RequestURI)
    host: str
    proto: str  # "HTTP/1.1", "HTTP/2.0"
    headers: tuple[tuple[str, str], ...]  # as received, names in any case, no Host
    tls: TlsInfo | None = None


@attrs.frozen
class Answer:
    """What to do with a request: answer, or (``reset``) drop the connection with a RST."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    delay: float = 0.0  # seconds to wait before answering
    reset: bool = False


def canonical(name: str) -> str:
    """Go's ``textproto.CanonicalMIMEHeaderKey``: ``x-echo-set-header`` →
    ``X-Echo-Set-Header`` (names with characters outside a token stay as they are)."""
    if not name or any(not (c.isalnum() or c in "-!#$%&'*+.^_`|~") for c in name):
        return name
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def header_map(headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in headers:
        if name.startswith(":"):
            continue
        out.setdefault(canonical(name), []).append(value)
    return out


def parse_duration(text: str) -> float:
    """Go's ``time.ParseDuration`` (``1s``, ``500ms``, ``1m30s``), in seconds."""
    if text in ("0", "+0", "-0"):
        return 0.0
    sign = -1.0 if text.startswith("-") else 1.0
    rest = text.lstrip("+-")
    total, pos = 0.0, 0
    while pos < len(rest):
        match = _DURATION_PART.match(rest, pos)
        if match is None:
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not rest:
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * total


def _query(target: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(target).query, keep_blank_values=True)


def answer_error(message: str, status: int = 500) -> Answer:
    body = json.dumps({"message": message}, separators=(",", ":")).encode()
    return Answer(status, (("Content-Type", "application/json"),
                           ("X-Content-Type-Options", "nosniff")), body)


def echo_headers(headers: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    """The response headers ``X-Echo-Set-Header: name:value,...`` asks for; a name given
    twice gets its values joined with commas, as the Go server does."""
    out: dict[str, str] = {}
    for listed in headers.get(SET_HEADER, ()):
        for pair in listed.split(","):
            name, _, value = pair.strip().partition(":")
            if name not in out:
                out[name] = value
            else:
                out[name] += "," + value.strip()
    return [(name, value) for name, value in out.items() if name]


def echo(request: Request, context: Context, delay: float = 0.0) -> Answer:
    """The JSON answer to any request: what arrived and where it arrived."""
    headers = header_map(request.headers)
    body: dict[str, Any] = {
        "path": request.target, "host": request.host, "method": request.method,
        "proto": request.proto, "headers": dict(sorted(headers.items())),
        "httpPort": context.http_port, "namespace": context.namespace,
        "ingress": context.ingress, "service": context.service, "pod": context.pod,
    }
    if request.tls is not None:
        body["tls"] = request.tls.as_dict()
    return Answer(200, (*echo_headers(headers), ("Content-Type", "application/json"),
                        ("X-Content-Type-Options", "nosniff")),
                  json.dumps(body, indent=" ", ensure_ascii=False).encode(), delay)


@attrs.define
class RetrySimulation:
    """``/retry/``: a flaky backend; counts attempts per uuid (shared by the connections
    of one process, which may serve them from several threads)."""

    attempts: dict[str, int] = attrs.Factory(dict)
    lock: threading.Lock = attrs.Factory(threading.Lock)

    def answer(self, request: Request, context: Context) -> Answer:
        query = _query(request.target)
        uuid = (query.get("uuid") or [""])[0]
        if not uuid:
            return Answer(400, (("Content-Type", "text/plain; charset=utf-8"),),
                          b"uuid is required")
        try:
            succeed_after = int((query.get("succeedAfter") or [""])[0])
        except ValueError:
            return Answer(400, (("Content-Type", "text/plain; charset=utf-8"),),
                          b"succeedAfter is required")
        with self.lock:
            failing = self.attempts.get(uuid, 0) < succeed_after
            if failing:
                self.attempts[uuid] = self.attempts.get(uuid, 0) + 1
        try:
            delay = _delay(query, "delayRetry") if failing else _delay(query, "delay")
        except ValueError as exc:
            return answer_error(str(exc))
        if not failing:
            return echo(request, context, delay)
        code = (query.get("responseCode") or [""])[0]
        if code.lstrip("-").isdigit():
            return Answer(int(code), delay=delay)
        return Answer(delay=delay, reset=True)


def _delay(query: Mapping[str, list[str]], key: str) -> float:
    text = (query.get(key) or [""])[0]
    return parse_duration(text) if text else 0.0


def answer(request: Request, context: Context, retries: RetrySimulation,
           h2c_port: bool = False) -> Answer:
    """What the Go server's mux does with a request (``h2c_port``: it came to the h2c
    port, which answers HTTP/1.1 only to an ``Upgrade: h2c`` request)."""
    path = urlsplit(request.target).path.replace("//", "/")
    if h2c_port:
        upgrade = next((v for k, v in request.headers if k.lower() == "upgrade"), "")
        if request.proto != "HTTP/2.0" and upgrade != "h2c":
            return Answer(400, (("Content-Type", "text/plain; charset=utf-8"),),
                          b"Expected h2c request")
    elif path == "/health":
        return Answer(200, (("Content-Type", "text/plain; charset=utf-8"),), b"OK")
    elif path.startswith("/status/"):
        match = _STATUS.match(request.target)
        return Answer(int(match.group(1)) if match else 400)
    elif path.startswith("/retry/"):
        return retries.answer(request, context)
    try:
        delay = _delay(_query(request.target), "delay")
    except ValueError as exc:
        return answer_error(str(exc))
    return echo(request, context, delay)


def websocket_key(request: Request) -> str:
    """The key of a WebSocket handshake to ``/ws`` (the Go server's WebSocket handler), ""
    for any other request."""
    if urlsplit(request.target).path != "/ws" or request.method != "GET":
        return ""
    headers = {k.lower(): v for k, v in request.headers}
    upgrade = headers.get("upgrade", "").lower() == "websocket"
    connection = "upgrade" in [t.strip().lower() for t in headers.get("connection", "").split(",")]
    return headers.get("sec-websocket-key", "") if upgrade and connection else ""


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    if env.get("GRPC_ECHO_SERVER"):
        from pilotfish.demo import echo_grpc
        return echo_grpc.main(env)
    if env.get("TCP_ECHO_SERVER"):
        from pilotfish.demo import echo_tcp
        return echo_tcp.main(env)
    from pilotfish.demo import echo_http
    return echo_http.main(env)


if __name__ == "__main__":
    raise SystemExit(main())
