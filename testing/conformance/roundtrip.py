"""The suite's HTTP client (``utils/roundtripper``), as Go's ``net/http`` sends requests.

``capture`` makes one request and returns what the echo backend said it received (its JSON
answer, when the response is ``application/json``) and the response: HTTP/1.1 on h11 with
``Connection: close`` (Go's ``DisableKeepAlives``), HTTPS with the test's SNI and trusted
certificate (a leaf trusted as such, as Go's pool allows), HTTP/2 over TLS (``H2``, ALPN
h2) or cleartext with prior knowledge (``H2C_PRIOR_KNOWLEDGE``) on h2. Go's client adds
``User-Agent: Go-http-client/1.1`` (``/2.0``) and ``Accept-Encoding: gzip``; it follows up
to 10 redirects unless told not to, carrying a custom Host only to a relative location.
Transport errors raise ``OSError`` (Go's round-trip error).
"""

from __future__ import annotations

import contextlib
import gzip
import ipaddress
import json
import socket
import ssl
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import h2.config
import h2.connection
import h2.events
import h11

HTTPS = "HTTPS"
H2 = "H2"
H2C = "H2C_PRIOR_KNOWLEDGE"
REDIRECTS = frozenset({300, 301, 302, 303, 304, 305, 307, 308})
_MAX_BODY = 4 * 1024 * 1024


@attrs.frozen
class RoundTripRequest:
    """Go's ``roundtripper.Request``: ``url`` is where to connect (the Gateway's address),
    ``host`` the Host header when set."""

    url: str
    host: str = ""
    method: str = "GET"
    protocol: str = "HTTP"  # HTTP | HTTPS | H2 | H2C_PRIOR_KNOWLEDGE
    headers: Mapping[str, str] = attrs.field(factory=dict)
    unfollow_redirect: bool = False
    body: str = ""
    server_name: str = ""
    server_certificate: str = ""  # PEM the client trusts
    client_certificate: tuple[str, str] | None = None  # (certificate PEM, key PEM)
    timeout: float = 10.0


@attrs.frozen
class CapturedRequest:
    """What the echo backend said it got (Go's ``CapturedRequest``)."""

    path: str = ""
    host: str = ""
    method: str = ""
    protocol: str = ""
    headers: Mapping[str, list[str]] = attrs.field(factory=dict)
    http_port: str = ""
    namespace: str = ""
    pod: str = ""
    tls_server_name: str = ""
    tls_peer_certificates: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CapturedRequest:
        tls = data.get("tls") or {}
        return cls(path=str(data.get("path") or ""), host=str(data.get("host") or ""),
                   method=str(data.get("method") or ""), protocol=str(data.get("proto") or ""),
                   headers={str(k): [str(v) for v in vs]
                            for k, vs in (data.get("headers") or {}).items()},
                   http_port=str(data.get("httpPort") or ""),
                   namespace=str(data.get("namespace") or ""),
                   pod=str(data.get("pod") or ""),
                   tls_server_name=str(tls.get("serverName") or ""),
                   tls_peer_certificates=tuple(str(c) for c in tls.get("peerCertificates") or ()))


@attrs.frozen
class RedirectRequest:
    scheme: str
    host: str
    port: str
    path: str


@attrs.frozen
class CapturedResponse:
    status_code: int
    protocol: str  # HTTP/1.1, HTTP/2.0
    headers: Mapping[str, list[str]]  # lower-case names
    content_length: int = -1
    redirect: RedirectRequest | None = None


@attrs.frozen
class _Raw:
    status: int
    protocol: str
    headers: list[tuple[str, str]]
    body: bytes


def capture(request: RoundTripRequest) -> tuple[CapturedRequest, CapturedResponse]:
    """``CaptureRoundTrip``."""
    url, host, hops = request.url, request.host, 0
    while True:
        raw = _send(request, url, host)
        if request.unfollow_redirect or raw.status not in (301, 302, 303, 307, 308) or \
                not _header(raw.headers, "location") or hops >= 10:
            break
        location = _header(raw.headers, "location")
        relative = not urllib.parse.urlsplit(location).scheme
        url = urllib.parse.urljoin(url, location)
        host = host if relative else ""
        hops += 1
    return _captured(request, url, raw)


def _captured(request: RoundTripRequest, url: str, raw: _Raw
              ) -> tuple[CapturedRequest, CapturedResponse]:
    headers: dict[str, list[str]] = {}
    for name, value in raw.headers:
        headers.setdefault(name.lower(), []).append(value)
    body = raw.body
    if headers.get("content-encoding") == ["gzip"]:  # Go's transparent decompression
        body = gzip.decompress(body)
        headers.pop("content-encoding")
        headers.pop("content-length", None)
    captured = CapturedRequest(method=request.method or "GET")
    if headers.get("content-type", [""])[0] == "application/json":
        try:
            captured = CapturedRequest.from_json(json.loads(body))
        except ValueError as exc:
            raise OSError(f"unexpected error reading response: {exc}") from exc
    redirect = None
    if raw.status in REDIRECTS:
        location = headers.get("location", [""])[0]
        if not location:
            raise OSError(f"{raw.status} response missing Location header")
        target = urllib.parse.urlsplit(urllib.parse.urljoin(url, location))
        redirect = RedirectRequest(scheme=target.scheme, host=target.hostname or "",
                                   port=str(target.port) if target.port is not None else "",
                                   path=urllib.parse.unquote(target.path))
    length = int(headers["content-length"][0]) if "content-length" in headers else -1
    return captured, CapturedResponse(raw.status, raw.protocol, headers, length, redirect)


def _header(headers: list[tuple[str, str]], name: str) -> str:
    return next((v for k, v in headers if k.lower() == name), "")


def _canonical(name: str) -> str:
    """Go's ``CanonicalMIMEHeaderKey``."""
    if any(not (c.isalnum() or c == "-") for c in name):
        return name
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _request_headers(request: RoundTripRequest, host: str, netloc: str, h2_: bool
                     ) -> list[tuple[str, str]]:
    out = [] if h2_ else [("Host", host or netloc)]
    out.append(("User-Agent", "Go-http-client/2.0" if h2_ else "Go-http-client/1.1"))
    sent = {_canonical(name): value for name, value in request.headers.items()}
    for name, value in sent.items():
        if name not in ("Host",):
            out.append((name, value))
    if request.body:
        out.append(("Content-Length", str(len(request.body.encode()))))
    if "Accept-Encoding" not in sent and request.method != "HEAD":
        out.append(("Accept-Encoding", "gzip"))
    if not h2_:
        out.append(("Connection", "close"))
    return out


@contextlib.contextmanager
def _connection(request: RoundTripRequest, scheme: str, address: tuple[str, int],
                alpn: list[str]) -> Iterator[socket.socket]:
    sock = socket.create_connection(address, timeout=request.timeout)
    try:
        if scheme == "https":
            context = _tls_context(request, alpn)
            sock = context.wrap_socket(sock, server_hostname=request.server_name or None)
            verify_hostname(sock, request.server_name)
        yield sock
    finally:
        sock.close()


def tls_client_context(server_name: str, trusted_pem: str,
                       client_certificate: tuple[str, str] | None = None,
                       alpn: list[str] | None = None) -> ssl.SSLContext:
    """Go's ``createTLSClientConfig``: trust exactly ``trusted_pem`` (a leaf counts as a
    root, as in Go's pool) and check the server's name; present a client certificate when
    asked."""
    if not server_name:
        raise OSError("https request has no server name configured")
    if not trusted_pem:
        raise OSError("https request has no trusted certificates configured")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # Go's rules, not OpenSSL's: verify_hostname
    context.load_verify_locations(cadata=trusted_pem)
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    if alpn:
        context.set_alpn_protocols(alpn)
    if client_certificate is not None:
        with tempfile.TemporaryDirectory() as folder:
            cert, key = Path(folder) / "cert.pem", Path(folder) / "key.pem"
            cert.write_text(client_certificate[0])
            key.write_text(client_certificate[1])
            context.load_cert_chain(cert, key)
    return context


def _match(pattern: str, host: str) -> bool:
    """Go's ``matchHostnames``: label by label, ``*`` standing for one whole first label
    (so ``*.org`` takes ``example.org``, which OpenSSL refuses)."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if not pattern or not host:
        return False
    want, have = pattern.split("."), host.split(".")
    return len(want) == len(have) and all(
        (i == 0 and w == "*") or w == h for i, (w, h) in enumerate(zip(want, have, strict=True)))


def verify_hostname(sock: ssl.SSLSocket, server_name: str) -> None:
    """Go's ``Certificate.VerifyHostname`` on the verified peer certificate."""
    cert = sock.getpeercert() or {}
    sans = [(str(entry[0]), str(entry[1])) for entry in cert.get("subjectAltName") or ()]
    try:
        ipaddress.ip_address(server_name)
        names = [value for kind, value in sans if kind == "IP Address"]
        ok = any(ipaddress.ip_address(v.strip()) == ipaddress.ip_address(server_name)
                 for v in names)
    except ValueError:
        names = [value for kind, value in sans if kind == "DNS"]
        ok = any(_match(name, server_name) for name in names)
    if not ok:
        sock.close()
        raise ssl.SSLCertVerificationError(
            f"tls: failed to verify certificate: x509: certificate is valid for "
            f"{', '.join(names) or 'no names'}, not {server_name}")


def _tls_context(request: RoundTripRequest, alpn: list[str]) -> ssl.SSLContext:
    return tls_client_context(request.server_name, request.server_certificate,
                              request.client_certificate, alpn)


def _send(request: RoundTripRequest, url: str, host: str) -> _Raw:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme
    if request.protocol == H2C and request.server_name and request.server_certificate:
        raise OSError("request has configured trusted CA certificates but h2 prior knowledge "
                      "is not encrypted")
    if request.protocol == H2 and scheme != "https":
        raise OSError("http2: unsupported scheme")
    address = (parts.hostname or "", parts.port or (443 if scheme == "https" else 80))
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    deadline = time.monotonic() + request.timeout
    if request.protocol in (H2, H2C):
        with _connection(request, scheme, address, ["h2"]) as sock:
            return _h2(sock, request, scheme, parts.netloc, host, target, deadline)
    with _connection(request, scheme, address, ["http/1.1"]) as sock:
        return _h1(sock, request, parts.netloc, host, target, deadline)


def _recv(sock: socket.socket, deadline: float) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("context deadline exceeded (Client.Timeout exceeded)")
    sock.settimeout(left)
    return sock.recv(65536)


def _h1(sock: socket.socket, request: RoundTripRequest, netloc: str, host: str, target: str,
        deadline: float) -> _Raw:
    conn = h11.Connection(h11.CLIENT)
    headers = _request_headers(request, host, netloc, h2_=False)
    sock.sendall(conn.send(h11.Request(method=request.method or "GET", target=target,
                                       headers=headers)) or b"")
    if request.body:
        sock.sendall(conn.send(h11.Data(data=request.body.encode())) or b"")
    sock.sendall(conn.send(h11.EndOfMessage()) or b"")
    response: h11.Response | None = None
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise OSError(f"malformed HTTP response: {exc}") from exc
        if event is h11.NEED_DATA:
            conn.receive_data(_recv(sock, deadline))
            continue
        if isinstance(event, h11.InformationalResponse):
            continue
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > _MAX_BODY:
                raise OSError("response body too large")
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    if response is None:
        raise OSError("EOF")
    return _Raw(response.status_code, f"HTTP/{response.http_version.decode()}",
                [(k.decode(), v.decode("latin-1")) for k, v in response.headers], bytes(body))


def _h2(sock: socket.socket, request: RoundTripRequest, scheme: str, netloc: str, host: str,
        target: str, deadline: float) -> _Raw:
    if scheme == "https" and isinstance(sock, ssl.SSLSocket) and \
            sock.selected_alpn_protocol() != "h2":
        raise OSError(f"http2: unexpected ALPN protocol {sock.selected_alpn_protocol()!r}; "
                      "want \"h2\"")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding="utf-8"))
    conn.initiate_connection()
    headers = [(":method", request.method or "GET"), (":authority", host or netloc),
               (":scheme", scheme), (":path", target)]
    headers += [(k.lower(), v) for k, v in _request_headers(request, host, netloc, h2_=True)]
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, headers, end_stream=not request.body)
    if request.body:
        conn.send_data(stream, request.body.encode(), end_stream=True)
    sock.sendall(conn.data_to_send())
    status, answer, body = 0, [], bytearray()
    while True:
        data = _recv(sock, deadline)
        if not data:
            raise OSError("unexpected EOF")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                pairs = [(str(k), str(v)) for k, v in event.headers]
                status = int(next(v for k, v in pairs if k == ":status"))
                answer = [(k, v) for k, v in pairs if not k.startswith(":")]
            elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream:
                body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, stream)
            elif isinstance(event, h2.events.StreamReset) and event.stream_id == stream:
                raise OSError(f"stream error: stream ID {stream}; {event.error_code!r}")
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                sock.sendall(conn.data_to_send())
                return _Raw(status, "HTTP/2.0", answer, bytes(body))
            elif isinstance(event, h2.events.ConnectionTerminated):
                raise OSError(f"http2: server sent GOAWAY ({event.error_code!r})")
        sock.sendall(conn.data_to_send())
