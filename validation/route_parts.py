"""Checks of the pieces an HTTP route is made of: string matches, destinations and
weights, header operations, CORS, fault injection, redirects, retries and rewrites.
"""

from __future__ import annotations

from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

from pilotfish.core.objects import FieldPath
from pilotfish.validation import names
from pilotfish.validation.fields import arr, check_port, error, num, obj, text
from pilotfish.validation.issues import Issue, invalid, required

# Envoy (and Istio) refuse larger regexes; RE2 program size is at least the length.
MAX_REGEX = 1024

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS",
                      "TRACE"})
# Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on policies.
_RETRY_ON = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
    "retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers",
    "envoy-ratelimited", "http3-post-connect-failure", "cancelled", "deadline-exceeded",
    "internal", "resource-exhausted", "unavailable",
})
_GRPC_STATUS = frozenset({
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
})


def check_regex(path: FieldPath, pattern: str) -> Iterator[Issue]:
    if len(pattern) > MAX_REGEX:
        yield invalid(path, f"<{len(pattern)} characters>", f"regex is longer than {MAX_REGEX}")
        return
    reason = names.regex_error(pattern)
    if reason:
        yield invalid(path, pattern, f"{reason}; Istio uses RE2 regex syntax")


def check_string_match(path: FieldPath, match: dict[str, Any], delegating: bool) -> (
    Iterator[Issue]
):
    if "prefix" in match and not text(match["prefix"]):
        yield invalid((*path, "prefix"), match["prefix"], "prefix match must not be empty")
    if "regex" in match:
        if delegating:
            yield error((*path, "regex"), "regex matches are not supported on a route "
                        "that delegates")
        elif not text(match["regex"]):
            yield invalid((*path, "regex"), match["regex"], "regex match must not be empty")
        else:
            yield from check_regex((*path, "regex"), text(match["regex"]))


def check_destination(path: FieldPath, destination: dict[str, Any]) -> Iterator[Issue]:
    host = text(destination.get("host"))
    reason = "destination host must not be *" if host == "*" else names.wildcard_domain_error(
        host)
    if reason:
        yield invalid((*path, "host"), host, reason)
    subset = text(destination.get("subset"))
    if "subset" in destination and names.dns_label_error(subset):
        yield invalid((*path, "subset"), subset, "subset name must be a DNS-1123 label")
    port = obj(destination.get("port"))
    if "number" in port:
        yield from check_port((*path, "port", "number"), port["number"])


def check_weights(path: FieldPath, routes: list[Any], http: bool) -> Iterator[Issue]:
    """Route destinations: each needs a destination; weights need not sum to 100, but
    several destinations that all weigh 0 send no traffic at all."""
    total = 0
    for index, route in enumerate(routes):
        route = obj(route)
        where = (*path, index)
        if "destination" not in route:
            yield required((*where, "destination"))
        else:
            yield from check_destination((*where, "destination"), obj(route["destination"]))
        weight = num(route.get("weight"))
        if weight < 0:
            yield invalid((*where, "weight"), weight, "weight must not be negative")
        total += max(weight, 0)
        if http:
            yield from check_header_ops((*where, "headers"), obj(route.get("headers")))
    if len(routes) > 1 and total == 0:
        yield invalid(path, 0, "total destination weight is 0")


def check_header_ops(path: FieldPath, headers: dict[str, Any]) -> Iterator[Issue]:
    for direction in ("request", "response"):
        ops = obj(headers.get(direction))
        for op in ("set", "add"):
            for name, value in obj(ops.get(op)).items():
                where = (*path, direction, op, name)
                yield from _header_name(where, name, setting=direction == "request")
                if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in text(value)):
                    yield invalid(where, value, "header values may not hold control characters")
        for index, name in enumerate(arr(ops.get("remove"))):
            yield from _header_name((*path, direction, "remove", index), text(name), False)


def _header_name(path: FieldPath, name: str, setting: bool) -> Iterator[Issue]:
    lowered = name.lower()
    if not name:
        yield invalid(path, name, "header name must not be empty")
    elif setting and lowered in (":authority", "host"):
        return  # setting the authority on requests is allowed
    elif lowered == "host" or name.startswith(":"):
        yield invalid(path, name, "pseudo-headers and Host cannot be changed here")


def check_cors(path: FieldPath, cors: dict[str, Any]) -> Iterator[Issue]:
    for index, origin in enumerate(arr(cors.get("allowOrigins"))):
        origin = obj(origin)
        where = (*path, "allowOrigins", index)
        if not any(text(origin.get(k)) for k in ("exact", "prefix", "regex")):
            yield invalid(where, origin, "an allowed origin needs a non-empty exact, prefix "
                          "or regex")
        elif "regex" in origin:
            yield from check_regex((*where, "regex"), text(origin["regex"]))
    for index, method in enumerate(arr(cors.get("allowMethods"))):
        if method not in _METHODS:
            yield invalid((*path, "allowMethods", index), method, "not a supported HTTP method")
    for field in ("allowHeaders", "exposeHeaders"):
        for index, name in enumerate(arr(cors.get(field))):
            name = text(name)
            if name != "*" and not (name and all(c.isalnum() or c in "-_" for c in name)):
                yield invalid((*path, field, index), name, "not a valid header name")


def check_fault(path: FieldPath, fault: Any) -> Iterator[Issue]:
    if fault is None:
        return
    fault = obj(fault)
    if not fault.get("abort") and not fault.get("delay"):
        yield error(path, "fault injection needs an abort, a delay or both")
    abort, delay = obj(fault.get("abort")), obj(fault.get("delay"))
    for part, settings in (("abort", abort), ("delay", delay)):
        value = obj(settings.get("percentage")).get("value")
        if isinstance(value, int | float) and not (value == 0 or 0.0001 <= value <= 100):
            yield invalid((*path, part, "percentage", "value"), value,
                          "must be 0 or in range 0.0001-100")
    if "httpStatus" in abort and not 200 <= num(abort["httpStatus"]) <= 599:
        yield invalid((*path, "abort", "httpStatus"), abort["httpStatus"],
                      "must be in range 200-599")
    if "grpcStatus" in abort and abort["grpcStatus"] not in _GRPC_STATUS:
        yield invalid((*path, "abort", "grpcStatus"), abort["grpcStatus"],
                      "not a gRPC status name such as NOT_FOUND")
    if "http2Error" in abort:
        yield error((*path, "abort", "http2Error"), "HTTP/2 error faults are not supported")
    if "exponentialDelay" in delay:
        yield error((*path, "delay", "exponentialDelay"), "exponentialDelay is not supported")


def check_redirect(path: FieldPath, redirect: Any) -> Iterator[Issue]:
    if redirect is None:
        return
    redirect = obj(redirect)
    if not any(redirect.get(k) for k in ("uri", "authority", "scheme", "port", "derivePort")):
        yield error(path, "a redirect must set uri, authority, scheme or port")
    code = redirect.get("redirectCode")
    if code is not None and num(code) and not 300 <= num(code) <= 399:
        yield invalid((*path, "redirectCode"), code, "must be a 3xx code")
    scheme = text(redirect.get("scheme"))
    if scheme and scheme not in ("http", "https"):
        yield invalid((*path, "scheme"), scheme, 'must be "http" or "https"')
    if num(redirect.get("port")):
        yield from check_port((*path, "port"), redirect["port"])


def check_retries(path: FieldPath, retries: Any) -> Iterator[Issue]:
    if retries is None:
        return
    retries = obj(retries)
    attempts = num(retries.get("attempts"))
    if attempts < 0:
        yield invalid((*path, "attempts"), attempts, "must not be negative")
    if attempts == 0 and any(k in retries for k in ("perTryTimeout", "retryOn",
                                                    "retryRemoteLocalities")):
        yield error(path, "retry settings have no effect when attempts is 0 (retries off)")
    for policy in text(retries.get("retryOn")).split(","):
        policy = policy.strip()
        if policy and policy not in _RETRY_ON and not _is_status(policy):
            yield invalid((*path, "retryOn"), policy, "not a retryOn policy")


def _is_status(policy: str) -> bool:
    try:
        HTTPStatus(int(policy))
    except ValueError:
        return False
    return True


def check_rewrite(path: FieldPath, rewrite: Any) -> Iterator[Issue]:
    if rewrite is None:
        return
    rewrite = obj(rewrite)
    regex_rewrite = rewrite.get("uriRegexRewrite")
    if rewrite.get("uri") and regex_rewrite:
        yield error(path, "a rewrite may set uri or uriRegexRewrite, not both")
    if not rewrite.get("uri") and not regex_rewrite and not rewrite.get("authority"):
        yield error(path, "a rewrite must set uri, uriRegexRewrite or authority")
    if regex_rewrite is not None:
        regex_rewrite = obj(regex_rewrite)
        if not text(regex_rewrite.get("match")) or not text(regex_rewrite.get("rewrite")):
            yield error((*path, "uriRegexRewrite"), "uriRegexRewrite needs match and rewrite")
        else:
            yield from check_regex((*path, "uriRegexRewrite", "match"), regex_rewrite["match"])
