"""Mesh requests (``utils/echo``): sent from an echo pod with its client, as the Go suite
does through ``kubectl exec``; here through ``pilotfish exec``, the stand-in for the
echo-advanced image (``istio_echo``) printing what Istio's echo client prints.

The comparison is ``compareRequest``'s: the status code, request headers present and absent,
response headers present and absent, and the answering pod's name — not paths, namespaces
or redirect targets.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .compare import status_codes
from .exchanges import await_convergence, backend_name
from .model import ExpectedRequest, ExpectedResponse
from .timeouts import TimeoutConfig

ECHO_CLIENT = (sys.executable, "-m", "pilotfish.testing.conformance.istio_echo", "client")
_FIELDS = {name: re.compile(f"{name}=(.*)") for name in ("StatusCode", "Hostname")}
_REQUEST_HEADER = re.compile("RequestHeader=(.*)")
_RESPONSE_HEADER = re.compile("ResponseHeader=(.*)")


@attrs.frozen
class MeshResponse:
    code: str = ""
    hostname: str = ""
    request_headers: Mapping[str, list[str]] = attrs.field(factory=dict)
    response_headers: Mapping[str, list[str]] = attrs.field(factory=dict)


def parse(output: str) -> MeshResponse:
    """``ParseResponse``: the first match of each field; every request header line
    (``Add``), the last response header line of a name (``Set``)."""
    fields = {}
    for name, pattern in _FIELDS.items():
        found = pattern.search(output)
        fields[name] = found.group(1) if found else ""
    request: dict[str, list[str]] = {}
    for line in _REQUEST_HEADER.findall(output):
        name, sep, value = line.partition(":")
        if sep:
            request.setdefault(name.lower(), []).append(value)
    response: dict[str, list[str]] = {}
    for line in _RESPONSE_HEADER.findall(output):
        name, sep, value = line.partition(":")
        if sep:
            response[name.lower()] = [value]
    return MeshResponse(fields["StatusCode"], fields["Hostname"], request, response)


def parse_many(output: str) -> list[MeshResponse]:
    """``parseMultipleResponses``: sections apart by a blank line, those with a hostname or
    a code."""
    out = []
    for section in output.split("\n\n"):
        if section.strip():
            response = parse(section.strip())
            if response.hostname or response.code:
                out.append(response)
    return out


def client_args(expected: ExpectedResponse, count: int = 0,
                pod_address: Callable[[], str] | None = None) -> list[str]:
    """``makeRequestWithCount``."""
    request = expected.request
    host = request.host or "echo"
    if "{pod}" in host and pod_address is not None:
        host = host.replace("{pod}", pod_address())
    protocol = (request.protocol or "http").lower()
    if host.endswith(":80") and protocol == "http":  # CalculateHost
        host = host[:-3]
    args = [*ECHO_CLIENT, f"{protocol}://{host}{request.path}"]
    if protocol != "grpc":
        args.append(f"--method={request.method or 'GET'}")
    for name, value in request.headers.items():
        args += ["-H", f"{name}:{value}"]
    if count > 0:
        args.append(f"--count={count}")
    return args


def compare(expected: ExpectedResponse, response: MeshResponse) -> str | None:
    """``compareRequest``."""
    wanted = expected.expected_request or ExpectedRequest()
    codes = status_codes(expected)
    try:
        code = int(response.code)
    except ValueError:
        return f"invalid status code {response.code!r}"
    if (expected.request.protocol or "").lower() == "grpc":
        codes = tuple(200 if c == 0 else c for c in codes)
    if code not in codes:
        return f"wanted status code to be one of {list(codes)}, got {code}"
    if wanted.request.headers:
        if not response.request_headers:
            return f"no headers captured, expected {len(wanted.request.headers)}"
        for name, value in wanted.request.headers.items():
            got = response.request_headers.get(name.lower())
            if got is None:
                return (f"expected {name} header to be set, actual headers: "
                        f"{dict(response.request_headers)}")
            if ",".join(got) != value:
                return f"expected {name} header to be set to {value}, got {','.join(got)}"
    for name in wanted.absent_headers:
        if name.lower() in response.request_headers:
            return (f"expected {name} header to not be set, got "
                    f"{response.request_headers[name.lower()]}")
    for name in expected.response.absent_headers:
        if response.response_headers.get(name.lower()):
            return f"expected no header {name!r}, got {response.response_headers[name.lower()]}"
    for name, value in expected.response.headers.items():
        found = (response.response_headers.get(name.lower()) or [""])[0]
        if found != value:
            return f"expected header {name}={value}, got {found}"
    if not response.hostname.startswith(expected.backend):
        return f"expected pod name to start with {expected.backend}, got {response.hostname}"
    return None


Exec = Callable[[list[str]], str]  # runs argv in the client pod; its stdout (or OSError)


def exchange(expected: ExpectedResponse, run: Exec, t: TimeoutConfig,
             pod_address: Callable[[], str] | None = None) -> str | None:
    """``MeshPod.MakeRequestAndExpectEventuallyConsistentResponse``."""
    def attempt() -> str | None:
        try:
            output = run(client_args(expected, pod_address=pod_address))
        except OSError as exc:
            return f"request failed, not ready yet: {exc}"
        return compare(expected, parse(output))
    return await_convergence(attempt, t)


def weights(expected: ExpectedResponse, wanted: Mapping[str, float], run: Exec,
            tries: int = 10, total: int = 500, tolerance: float = 0.05) -> str | None:
    """``TestWeightedDistributionBatch`` over ``RequestBatch``: one client run of 500."""
    last: Any = None
    for _ in range(tries):
        try:
            responses = parse_many(run(client_args(expected, count=total)))
        except OSError as exc:
            last = f"failed batch mesh request: {exc}"
            continue
        if len(responses) != total:
            last = f"expected {total} responses but got {len(responses)}"
            continue
        seen: dict[str, int] = {}
        unexpected = ""
        for response in responses:
            name = backend_name(response.hostname)
            if name not in wanted:
                unexpected = f"request was handled by an unexpected pod {response.hostname!r}"
                break
            seen[name] = seen.get(name, 0) + 1
        if unexpected:
            last = unexpected
            continue
        problems = []
        for name, share in wanted.items():
            got = seen.get(name, 0) / total
            if abs(got - share) > tolerance:
                problems.append(f"backend {name!r} weighted traffic of {got} not within "
                                f"tolerance {share} (+/-{tolerance})")
        if not problems:
            return None
        last = "; ".join(problems)
    return f"weighted distribution tests failed: {last}"
