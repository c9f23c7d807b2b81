"""``CompareRoundTrip`` (``utils/http/http.go``), sans-IO: does one captured round trip meet
an ``ExpectedResponse``? Returns None when it does, else what differs, in Go's words.

``prepared`` applies what ``MakeRequest`` changes in the expectation before the first
attempt (GET for an empty method, status 200 when none is stated) and, for a request id
query parameter, what ``AddRequestIDQueryParam`` does to both paths.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence

import attrs

from .model import ExpectedRequest, ExpectedResponse, RedirectRequest
from .roundtrip import REDIRECTS, CapturedRequest, CapturedResponse

TIMEOUTS = (408, 504)  # IsTimeoutError


def status_codes(expected: ExpectedResponse) -> tuple[int, ...]:
    codes = list(expected.response.status_codes)
    if expected.response.status_code and expected.response.status_code not in codes:
        codes.append(expected.response.status_code)
    return tuple(codes) or (200,)


def add_query_param(path: str, name: str, value: str) -> str:
    """Go's ``addQueryParam``: set the parameter, re-encode the query sorted by name."""
    parts = urllib.parse.urlsplit(path)
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    query[name] = [value]
    encoded = "&".join(f"{urllib.parse.quote_plus(k)}={urllib.parse.quote_plus(v)}"
                       for k in sorted(query) for v in query[k])
    return urllib.parse.urlunsplit(("", "", parts.path, encoded, parts.fragment))


def with_request_id(expected: ExpectedResponse, name: str, value: str) -> ExpectedResponse:
    """``AddRequestIDQueryParam`` with ``name``: the request's path gets it, and so does the
    expected request's (which takes the new request path when it had none)."""
    path = add_query_param(expected.request.path, name, value)
    out = attrs.evolve(expected, request=attrs.evolve(expected.request, path=path))
    if expected.expected_request is not None:
        expected_path = expected.expected_request.request.path
        new = path if not expected_path else add_query_param(expected_path, name, value)
        out = attrs.evolve(out, expected_request=attrs.evolve(
            expected.expected_request,
            request=attrs.evolve(expected.expected_request.request, path=new)))
    return out


def _lower(headers: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, values in headers.items():
        out[name.lower()] = list(values)
    return out


def compare(expected: ExpectedResponse, request_path: str, request_scheme: str,
            captured: CapturedRequest, response: CapturedResponse) -> str | None:
    """One attempt against the expectation. ``request_path`` and ``request_scheme`` are the
    URL's path and scheme as sent (a redirect without an expected path or scheme must keep
    them)."""
    codes = status_codes(expected)
    if response.status_code in TIMEOUTS and any(c in TIMEOUTS for c in codes):
        return None
    if response.status_code not in codes:
        return (f"expected status code to be one of {list(codes)}, got "
                f"{response.status_code}")
    if expected.response.protocol and expected.response.protocol != response.protocol:
        return f"expected protocol to be {expected.response.protocol}, got {response.protocol}"
    if response.status_code in (200, 204):
        return _compare_backend(expected, captured, response)
    if response.status_code in REDIRECTS:
        return _compare_redirect(expected, request_path, request_scheme, response)
    return None


def _compare_backend(expected: ExpectedResponse, captured: CapturedRequest,
                     response: CapturedResponse) -> str | None:
    wanted = expected.expected_request or ExpectedRequest(request=expected.request)
    want = wanted.request
    method = want.method or "GET"
    if want.host and want.host != captured.host:
        return f"expected host to be {want.host}, got {captured.host}"
    if want.path != captured.path:
        return f"expected path to be {want.path}, got {captured.path}"
    if method != captured.method:
        return f"expected method to be {method}, got {captured.method}"
    if expected.namespace != captured.namespace:
        return f"expected namespace to be {expected.namespace}, got {captured.namespace}"
    got_request = _lower(captured.headers)
    if want.headers:
        if not captured.headers:
            return f"no headers captured, expected {len(want.headers)}"
        for name, value in want.headers.items():
            if name.lower() not in got_request:
                return (f"expected {name} header to be set, actual headers: "
                        f"{dict(captured.headers)}")
            if ",".join(got_request[name.lower()]) != value:
                return (f"expected {name} header to be set to {value}, got "
                        f"{','.join(got_request[name.lower()])}")
    if wanted.http_port and wanted.http_port != captured.http_port:
        return f"expected httpPort {wanted.http_port!r}, got {captured.http_port!r}"
    got = _lower(response.headers)
    strip = expected.response.ignore_whitespace

    def norm(value: str) -> str:
        return value.replace(" ", "") if strip else value

    if expected.response.headers or expected.response.valid_header_values:
        for name, values in expected.response.valid_header_values.items():
            if name.lower() not in got:
                return f"expected {name} header to be set, actual headers: {dict(got)}"
            actual = norm(",".join(got[name.lower()]))
            if actual not in [norm(v) for v in values]:
                return f"expected {name} header to be set to one of {list(values)}, got {actual}"
        for name, value in expected.response.headers.items():
            if name.lower() not in got:
                return f"expected {name} header to be set, actual headers: {dict(got)}"
            actual = norm(",".join(got[name.lower()]))
            if actual != norm(value):
                return f"expected {name} header to be set to {value}, got {actual}"
    for name in expected.response.absent_headers:
        if name.lower() in got:
            return f"expected {name} header to not be set, got {got[name.lower()]}"
    for name in wanted.absent_headers:
        if name.lower() in got_request:
            return f"expected {name} header to not be set, got {got_request[name.lower()]}"
    if not captured.pod.startswith(expected.backend):
        return f"expected pod name to start with {expected.backend}, got {captured.pod}"
    if want.sni and want.sni != captured.tls_server_name:
        return f"expected SNI {captured.tls_server_name!r} to be equal to {want.sni!r}"
    return None


def _compare_redirect(expected: ExpectedResponse, request_path: str, request_scheme: str,
                      response: CapturedResponse) -> str | None:
    if expected.redirect_request is None:
        return None
    got = response.redirect
    assert got is not None
    want = expected.redirect_request
    # setRedirectRequestDefaults
    want = RedirectRequest(scheme=want.scheme or request_scheme, host=want.host or got.host,
                           port=want.port, path=want.path or request_path)
    if want.host != got.host:
        return f"expected redirected hostname to be {want.host!r}, got {got.host!r}"
    if not want.port:
        if got.scheme.lower() == "http" and got.port not in ("80", ""):
            return (f"for http scheme, expected redirected port to be 80 or not set, got "
                    f"{got.port!r}")
        if got.scheme.lower() == "https" and got.port not in ("443", ""):
            return (f"for https scheme, expected redirected port to be 443 or not set, got "
                    f"{got.port!r}")
    elif want.port != got.port:
        return f"expected redirected port to be {want.port!r}, got {got.port!r}"
    if want.scheme != got.scheme:
        return f"expected redirected scheme to be {want.scheme!r}, got {got.scheme!r}"
    if want.path != got.path:
        return f"expected redirected path to be {want.path!r}, got {got.path!r}"
    return None
