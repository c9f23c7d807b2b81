"""The ``ext_authz`` HTTP filter with an HTTP authorization service, sans-IO: which requests
it checks, the check request it sends, and what the service's answer (or its failure) does
to the request, as Envoy does it.

Istio's CUSTOM AuthorizationPolicy makes one: an RBAC filter before it marks the requests
a CUSTOM rule selects (its shadow rules leave the policy's name in the dynamic metadata),
and ``filter_enabled_metadata`` checks only those. The check asks the service with the
original request's method and path (behind ``path_prefix``), its ``Host``, ``Method``,
``Path``, ``Content-Length`` (0: no body is sent) and ``Authorization`` headers and those
``allowed_headers`` name, plus ``headers_to_add``. A 200 allows: the service's headers that
``allowed_upstream_headers`` name go upstream with the request, those
``allowed_client_headers_on_success`` name back to the client. Any other status denies:
the client gets that status, the service's body, and its headers (only those
``allowed_client_headers`` name, when it names some). A service that cannot be reached
answers ``status_on_error`` (403 unless set), unless ``failure_mode_allow``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2

from pilotfish.core.native import matchers, subset

FILTER = "envoy.filters.http.ext_authz"
DENIED_FLAG = "UAEX"  # Envoy's response flag: unauthorized by the external service
ALWAYS_SENT = frozenset({"host", "authorization"})  # besides method, path and length
# Sent with a denial even when allowed_client_headers names others (Envoy's list).
DENIAL_HEADERS = frozenset({"www-authenticate", "location"})
_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


@attrs.frozen
class Check:
    """The request to send to the authorization service."""

    cluster: str
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    timeout: float


@attrs.frozen
class Denial:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class ExtAuthz:
    cluster: str
    authority: str  # the service's host, from server_uri
    path_prefix: str
    timeout: float
    failure_mode_allow: bool
    status_on_error: int
    enabled: matchers.MetadataMatch | None  # None: every request is checked
    allowed_headers: tuple[matchers.StringMatch, ...] = ()
    headers_to_add: tuple[tuple[str, str], ...] = ()
    upstream_headers: tuple[matchers.StringMatch, ...] = ()
    client_headers: tuple[matchers.StringMatch, ...] = ()
    client_headers_on_success: tuple[matchers.StringMatch, ...] = ()

    def applies(self, metadata: dict[str, Any]) -> bool:
        return self.enabled is None or self.enabled.holds(metadata)

    def check(self, method: str, target: str, headers: Sequence[tuple[str, str]]) -> Check:
        sent = [(name, value) for name, value in headers
                if name in ALWAYS_SENT or _named(name, self.allowed_headers)]
        sent += [*self.headers_to_add, ("content-length", "0")]
        return Check(self.cluster, method, self.path_prefix + target, tuple(sent),
                     self.timeout)

    def allowed(self, answer_headers: Sequence[tuple[str, str]],
                request_headers: list[tuple[str, str]],
                response_headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """An allowing answer: the request's headers with the service's upstream ones set
        (returned), and what goes back to the client added to ``response_headers``."""
        upstream = [(k, v) for k, v in answer_headers if _named(k, self.upstream_headers)]
        names = {k for k, _ in upstream}
        response_headers += [(k, v) for k, v in answer_headers
                             if _named(k, self.client_headers_on_success)]
        return [(k, v) for k, v in request_headers if k not in names] + upstream

    def denied(self, status: int, answer_headers: Sequence[tuple[str, str]],
               body: bytes) -> Denial:
        headers = [(k, v) for k, v in answer_headers if k not in _HOP and (
            _named(k, self.client_headers) or k in DENIAL_HEADERS
            if self.client_headers else k != "host")]
        return Denial(status, body, tuple(headers))

    def failed(self) -> Denial | None:
        """The service could not be asked: None lets the request through."""
        return None if self.failure_mode_allow else Denial(self.status_on_error)


def _named(name: str, patterns: Sequence[matchers.StringMatch]) -> bool:
    return any(pattern.holds(name) for pattern in patterns)


def ext_authz(message: ext_authz_pb2.ExtAuthz, where: str) -> ExtAuthz:
    """The filter's config; a gRPC service (or none) is refused with its path."""
    if message.WhichOneof("services") != "http_service":
        raise subset.Unsupported(where, "ext_authz without an http_service is not supported "
                                 "by the native proxy")
    service = message.http_service
    uri = service.server_uri
    authority = uri.uri.split("://", 1)[-1].split("/", 1)[0]
    status = message.status_on_error.code if message.HasField("status_on_error") else 0
    request, response = service.authorization_request, service.authorization_response
    return ExtAuthz(
        cluster=uri.cluster, authority=authority, path_prefix=service.path_prefix,
        timeout=uri.timeout.ToTimedelta().total_seconds() if uri.HasField("timeout") else 0.2,
        failure_mode_allow=message.failure_mode_allow, status_on_error=status or 403,
        enabled=matchers.metadata_match(message.filter_enabled_metadata)
        if message.HasField("filter_enabled_metadata") else None,
        allowed_headers=_patterns(message.allowed_headers),
        headers_to_add=tuple((h.key.lower(), h.value) for h in request.headers_to_add),
        upstream_headers=_patterns(response.allowed_upstream_headers),
        client_headers=_patterns(response.allowed_client_headers),
        client_headers_on_success=_patterns(response.allowed_client_headers_on_success))


def _patterns(message: Any) -> tuple[matchers.StringMatch, ...]:
    return tuple(matchers.string_match(pattern) for pattern in message.patterns)
