"""The suite's request helpers (``utils/http``, ``utils/tls``, ``utils/weight``) over real
sockets: each exchange of a step is sent until it passes as the Go helper demands, and
returns None, or why it did not pass.

``await_convergence`` is ``AwaitConvergence``: the attempt repeats until it succeeds
``required_consecutive_successes`` times in a row (no pause after a success, the poll
interval after a failure), within ``MaxTimeToConsistency``.
"""

from __future__ import annotations

import base64
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import attrs

from . import compare, roundtrip
from .model import (
    FAILURE,
    REFUSED,
    BackendNamedByHeader,
    ExpectedResponse,
    Ref,
    Response,
)
from .timeouts import TimeoutConfig

REQUEST_ID = "gateway-api-conformance-request-id"


class Failed(Exception):
    """The Go helper fails the test at once (``t.Fatalf``)."""


class Objects(Protocol):
    """Reads of live objects the helpers make (``GetTLSSecret``, ``GetConfigMapData``)."""

    def secret_data(self, ref: Ref) -> Mapping[str, str]: ...

    def configmap_data(self, ref: Ref) -> Mapping[str, str]: ...


@attrs.frozen
class Target:
    """A step's Gateway: its address and port, and the scheme the step speaks."""

    address: str
    port: int
    scheme: str = "http"

    def netloc(self, scheme: str) -> str:
        """``CalculateHost``: the port is left out when the scheme implies it."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        if (scheme, self.port) in (("http", 80), ("https", 443)):
            return host
        return f"{host}:{self.port}"


def await_convergence(attempt: Callable[[], str | None], t: TimeoutConfig) -> str | None:
    """``AwaitConvergence``; ``attempt`` returns None on success, else why not."""
    deadline = time.monotonic() + t.max_time_to_consistency
    successes = attempts = 0
    last = "no attempt made"
    while True:
        if time.monotonic() > deadline:
            return f"timeout while waiting after {attempts} attempts: {last}"
        outcome = attempt()
        attempts += 1
        if outcome is None:
            successes += 1
            if successes >= t.required_consecutive_successes:
                return None
            continue
        successes, last = 0, outcome
        time.sleep(min(t.default_poll_interval, max(0.0, deadline - time.monotonic())))


def decoded(data: Mapping[str, str]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def _request(expected: ExpectedResponse, target: Target, objects: Objects, t: TimeoutConfig,
             scheme: str) -> roundtrip.RoundTripRequest:
    """``MakeRequest`` (and the TLS helpers' additions)."""
    headers = dict(expected.request.headers)
    headers["X-Echo-Set-Header"] = ",".join(
        f"{name}:{value}" for name, value in expected.backend_set_response_headers.items())
    protocol = expected.request.protocol or ("HTTPS" if scheme == "https" else "HTTP")
    server_name = server_certificate = ""
    client: tuple[str, str] | None = None
    if scheme == "https":
        server_name = expected.server_name
        if expected.server_certificate is not None:
            server_certificate = objects.secret_data(expected.server_certificate)["tls.crt"]
        if expected.client_certificate is not None:
            data = objects.secret_data(expected.client_certificate)
            client = (data["tls.crt"], data["tls.key"])
    return roundtrip.RoundTripRequest(
        url=f"{scheme}://{target.netloc(scheme)}{expected.request.path}",
        host=expected.request.host, method=expected.request.method or "GET",
        protocol=protocol, headers=headers, unfollow_redirect=expected.request.unfollow_redirect,
        body=expected.request.body, server_name=server_name,
        server_certificate=server_certificate, client_certificate=client,
        timeout=t.request_timeout)


def _path(request: roundtrip.RoundTripRequest) -> str:
    after = request.url.split("://", 1)[1]
    path = "/" + after.split("/", 1)[1] if "/" in after else "/"
    return path.split("?", 1)[0]


def _attempt(expected: ExpectedResponse, target: Target, objects: Objects, t: TimeoutConfig,
             scheme: str) -> tuple[str | None, roundtrip.CapturedRequest | None]:
    """One request and its comparison: (None or why not, what the backend saw)."""
    if expected.unique_query_param and expected.unique_query_param != REQUEST_ID:
        expected = compare.with_request_id(expected, expected.unique_query_param,
                                           str(uuid.uuid4()))
    request = _request(expected, target, objects, t, scheme)
    try:
        captured, response = roundtrip.capture(request)
    except OSError as exc:
        return f"request failed, not ready yet: {exc}", None
    client_pem = ""
    if expected.expected_request is not None and expected.expected_request.request.client_cert:
        ns, _, name = expected.expected_request.request.client_cert.partition("/")
        client_pem = objects.secret_data((ns, name))["tls.crt"]
    elif expected.expected_request is None and expected.request.client_cert:
        ns, _, name = expected.request.client_cert.partition("/")
        client_pem = objects.secret_data((ns, name))["tls.crt"]
    problem = compare.compare(expected, _path(request), scheme, captured, response)
    if problem is None and client_pem and response.status_code in (200, 204) and \
            client_pem not in captured.tls_peer_certificates:
        problem = "expected client certificate was not captured"
    return problem, captured


def http_exchange(expected: ExpectedResponse, target: Target, objects: Objects,
                  t: TimeoutConfig) -> str | None:
    """``MakeRequestAndExpectEventuallyConsistentResponse`` and its TLS and failure forms."""
    scheme = "https" if target.scheme == "https" else "http"
    if expected.unique_query_param == REQUEST_ID:  # once per exchange, as Go's subtest does
        expected = compare.with_request_id(expected, REQUEST_ID, str(uuid.uuid4()))
    if expected.outcome == FAILURE:
        request = _request(expected, target, objects, t, scheme)

        def failure() -> str | None:
            try:
                _, response = roundtrip.capture(request)
            except OSError as exc:
                return f"request failed, not ready yet: {exc}"
            if response.status_code in compare.TIMEOUTS:
                return f"got {response.status_code}, not ready yet"
            if response.status_code == 200:
                raise Failed(f"request to {expected.request.host}{expected.request.path} "
                             "should have failed, returned HTTP Status OK (200) instead")
            return None
        return await_convergence(failure, t)
    if expected.outcome == REFUSED:
        request = _request(expected, target, objects, t, scheme)

        def refused() -> str | None:
            try:
                roundtrip.capture(request)
            except OSError:
                return None
            return "request unexpectedly succeeded, not ready yet"
        return await_convergence(refused, t)
    return await_convergence(lambda: _attempt(expected, target, objects, t, scheme)[0], t)


def named_by_header(check: BackendNamedByHeader, target: Target, objects: Objects,
                    t: TimeoutConfig) -> str | None:
    """The backend-filter tests' own loop: each answer saw one header naming its pod."""
    expected = ExpectedResponse(request=check.request, response=Response(status_code=200))
    for _ in range(check.times):
        request = _request(expected, target, objects, t, "http")
        try:
            captured, response = roundtrip.capture(request)
        except OSError as exc:
            return f"request failed: {exc}"
        if response.status_code != 200:
            return f"expected 200, got {response.status_code}"
        values = {k.lower(): v for k, v in captured.headers.items()}.get(check.header.lower(), [])
        if len(values) != 1:
            return f"expected exactly one {check.header} header, got {values}"
        if not captured.pod.startswith(values[0]):
            return f"pod {captured.pod} does not start with {check.header}: {values[0]}"
    return None


def backend_name(pod: str) -> str:
    """``extractBackendName``: the pod's name less its last two dash-separated parts."""
    parts = pod.split("-")
    return pod if len(parts) < 3 else "-".join(parts[:-2])


def weighted(send: Callable[[], str], weights: Mapping[str, float], total: int = 500,
             concurrency: int = 10, tolerance: float = 0.05) -> str | None:
    """``TestWeightedDistribution``: ``send`` returns the answering pod or raises OSError."""
    seen: dict[str, int] = {}
    lock = threading.Lock()
    errors: list[str] = []

    def one() -> None:
        try:
            pod = send()
        except OSError as exc:
            errors.append(f"error while sending requests: {exc}")
            return
        name = backend_name(pod)
        with lock:
            if name not in weights:
                errors.append(f"request was handled by an unexpected pod {pod!r}")
            seen[name] = seen.get(name, 0) + 1

    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(total):
            pool.submit(one)
    if errors:
        return errors[0]
    problems = []
    active = sum(1 for w in weights.values() if w > 0)
    if len(seen) != active:
        problems.append(f"expected {active} backends to receive traffic, but got {len(seen)}")
    for backend, want in weights.items():
        got = seen.get(backend, 0) / total
        if backend not in seen and want:
            problems.append(f"expect traffic to hit backend {backend!r} - but none was received")
        elif abs(got - want) > tolerance:
            problems.append(f"backend {backend!r} weighted traffic of {got} not within "
                            f"tolerance {want} (+/-{tolerance})")
    return "; ".join(sorted(problems)) or None


def http_weights(expected: ExpectedResponse, weights: Mapping[str, float], target: Target,
                 objects: Objects, t: TimeoutConfig, tries: int = 10) -> str | None:
    """The HTTP weight tests: up to ``MaxTestRetries`` rounds of 500 requests, each with
    random entropy (nothing, or an ``X-Jitter`` header)."""
    def send() -> str:
        unique = expected
        if random.randrange(2):
            unique = attrs.evolve(expected, request=attrs.evolve(
                expected.request, headers={"X-Jitter": str(random.randrange(10000))}))
        request = _request(unique, target, objects, t, "http")
        captured, response = roundtrip.capture(request)
        problem = compare.compare(expected, _path(request), "http", captured, response)
        if problem:
            raise OSError(f"response expectation failed for request: {problem}")
        return captured.pod

    last = None
    for _ in range(tries):
        last = weighted(send, weights)
        if last is None:
            return None
    return f"weighted distribution tests failed: {last}"
