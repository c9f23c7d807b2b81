"""The ``ext_authz`` HTTP filter, sans-IO: which requests it checks, the check request it
sends, and what the authorization service's answer (or its failure) does to the request,
as Envoy does it, with an HTTP service (Istio's ``envoyExtAuthzHttp``) or a gRPC one
(``envoyExtAuthzGrpc``).

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

A gRPC service is asked ``envoy.service.auth.v3.Authorization/Check`` on its cluster (an
HTTP/2 one), with a ``CheckRequest`` that carries the request's method, path, host, scheme,
protocol and headers (pseudo-headers included; only those ``allowed_headers`` names when
it names some) and both peers' addresses and principals. A ``CheckResponse`` whose status
is OK allows, with its ``ok_response`` header edits for the upstream request and the
client; any other status denies with its ``denied_response`` (403 unless it gives a
status). A call that does not end OK (the service's gRPC error, a timeout) is a failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf.message import DecodeError

from pilotfish.core.native import grpc_client, http1, matchers, rbac, subset

FILTER = "envoy.filters.http.ext_authz"
DENIED_FLAG = "UAEX"  # Envoy's response flag: unauthorized by the external service
ALWAYS_SENT = frozenset({"host", "authorization"})  # besides method, path and length
# Sent with a denial even when allowed_client_headers names others (Envoy's list).
DENIAL_HEADERS = frozenset({"www-authenticate", "location"})
_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
CHECK_METHOD = "/envoy.service.auth.v3.Authorization/Check"
GRPC_TIMEOUT = 0.2  # Envoy's for a grpc_service without one
_Append = base_pb2.HeaderValueOption.HeaderAppendAction
NO_PEER = rbac.Facts()


@attrs.frozen
class Check:
    """The request to send to the authorization service."""

    cluster: str
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    timeout: float
    body: bytes = b""  # a gRPC check's framed CheckRequest


@attrs.frozen
class Denial:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class Verdict:
    """What a check's answer decided: ``allowed`` (the request goes on with ``headers``),
    a ``denial`` to answer with, or neither (the service failed and failure_mode_allow
    lets the request through). ``counter`` is the filter's stat for it."""

    counter: str
    allowed: bool = False
    headers: list[tuple[str, str]] = attrs.field(factory=list)
    denial: Denial | None = None


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
    grpc: bool = False  # a gRPC service (Authorization/Check) rather than an HTTP one

    def applies(self, metadata: dict[str, Any]) -> bool:
        return self.enabled is None or self.enabled.holds(metadata)

    def check(self, method: str, target: str, headers: Sequence[tuple[str, str]],
              peer: rbac.Facts = NO_PEER) -> Check:
        if self.grpc:
            return self._grpc_check(method, target, headers, peer)
        sent = [(name, value) for name, value in headers
                if name in ALWAYS_SENT or _named(name, self.allowed_headers)]
        sent += [*self.headers_to_add, ("content-length", "0")]
        return Check(self.cluster, method, self.path_prefix + target, tuple(sent),
                     self.timeout)

    def _grpc_check(self, method: str, target: str, headers: Sequence[tuple[str, str]],
                    peer: rbac.Facts) -> Check:
        joined: dict[str, str] = {}
        host = next((v for k, v in headers if k == "host"), "")
        for name, value in ((":authority", host), (":method", method), (":path", target),
                            *headers):
            if name == "host" or (self.allowed_headers and not name.startswith(":")
                                  and not _named(name, self.allowed_headers)):
                continue
            joined[name] = f"{joined[name]},{value}" if name in joined else value
        request = external_auth_pb2.CheckRequest()
        attributes = request.attributes
        http = attributes.request.http
        http.method, http.path, http.host = method, target, host
        http.id = joined.get("x-request-id", "")
        http.scheme = joined.get("x-forwarded-proto", "http")
        http.headers.update(joined)
        if peer.source:
            attributes.source.address.socket_address.address = peer.source
            attributes.source.address.socket_address.port_value = peer.source_port
        if peer.authenticated and peer.principals:
            attributes.source.principal = next(
                (name for name in peer.principals if name.startswith("spiffe://")),
                peer.principals[0])
        if peer.destination[0]:
            attributes.destination.address.socket_address.address = peer.destination[0]
            attributes.destination.address.socket_address.port_value = peer.destination[1]
        if peer.identity:
            attributes.destination.principal = peer.identity
        attributes.request.time.GetCurrentTime()
        call = [("host", self.authority), ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("grpc-timeout", f"{max(1, int(self.timeout * 1000))}m")]
        return Check(self.cluster, "POST", CHECK_METHOD, tuple(call), self.timeout,
                     grpc_client.frame(request))

    def judge(self, answer: http1.Message | None, request_headers: list[tuple[str, str]],
              response_headers: list[tuple[str, str]]) -> Verdict:
        """What the service's ``answer`` (None: it could not be asked) does to the request;
        what goes back to the client on success is added to ``response_headers``."""
        if self.grpc:
            return self._grpc_verdict(answer, request_headers, response_headers)
        if answer is None or answer.status >= 500:  # an error, not a verdict
            return self._failure()
        if answer.status == 200:
            return Verdict("ext_authz.ok", True, self.allowed(
                answer.headers, request_headers, response_headers))
        return Verdict("ext_authz.denied",
                       denial=self.denied(answer.status, answer.headers, answer.body))

    def _failure(self) -> Verdict:
        denial = self.failed()
        if denial is None:
            return Verdict("ext_authz.failure_mode_allowed")
        return Verdict("ext_authz.error", denial=denial)

    def _grpc_verdict(self, answer: http1.Message | None,
                      request_headers: list[tuple[str, str]],
                      response_headers: list[tuple[str, str]]) -> Verdict:
        if answer is None or answer.status != 200:
            return self._failure()
        status = grpc_client.call_status(answer.trailers) or \
            grpc_client.call_status(answer.headers)
        try:
            messages = grpc_client.Reframer().feed(answer.body)
            if status is None or status[0] != "OK" or len(messages) != 1:
                return self._failure()
            response = external_auth_pb2.CheckResponse.FromString(messages[0])
        except (grpc_client.GrpcError, DecodeError):
            return self._failure()
        if response.status.code != 0:
            denied = response.denied_response
            return Verdict("ext_authz.denied", denial=Denial(
                denied.status.code or 403, denied.body.encode(),
                tuple(_header_options(denied.headers, []))))
        ok = response.ok_response
        removed = {name.lower() for name in ok.headers_to_remove}
        headers = _header_options(ok.headers, [(k, v) for k, v in request_headers
                                               if k not in removed])
        response_headers[:] = _header_options(ok.response_headers_to_add, response_headers)
        return Verdict("ext_authz.ok", True, headers)

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


def _header_options(options: Any, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` with a CheckResponse's header options applied, as Envoy applies them:
    the deprecated ``append`` when set (true adds, false replaces), else ``append_action``."""
    out = list(headers)
    for option in options:
        name, value = option.header.key.lower(), option.header.value
        present = any(k == name for k, _ in out)
        if option.HasField("append"):
            action = _Append.APPEND_IF_EXISTS_OR_ADD if option.append.value \
                else _Append.OVERWRITE_IF_EXISTS_OR_ADD
        else:
            action = option.append_action
        if action in (_Append.OVERWRITE_IF_EXISTS_OR_ADD, _Append.OVERWRITE_IF_EXISTS):
            if not present and action == _Append.OVERWRITE_IF_EXISTS:
                continue
            out = [(k, v) for k, v in out if k != name]
        elif action == _Append.ADD_IF_ABSENT and present:
            continue
        out.append((name, value))
    return out


def ext_authz(message: ext_authz_pb2.ExtAuthz, where: str) -> ExtAuthz:
    """The filter's config; a service of another kind (or none) is refused with its path."""
    service_kind = message.WhichOneof("services")
    status = message.status_on_error.code if message.HasField("status_on_error") else 0
    common: dict[str, Any] = dict(
        failure_mode_allow=message.failure_mode_allow, status_on_error=status or 403,
        enabled=matchers.metadata_match(message.filter_enabled_metadata)
        if message.HasField("filter_enabled_metadata") else None,
        allowed_headers=_patterns(message.allowed_headers))
    if service_kind == "grpc_service":
        grpc = message.grpc_service
        if grpc.WhichOneof("target_specifier") != "envoy_grpc":
            raise subset.Unsupported(f"{where}.grpc_service", "only envoy_grpc (a cluster) "
                                     "is supported by the native proxy")
        return ExtAuthz(
            cluster=grpc.envoy_grpc.cluster_name,
            authority=grpc.envoy_grpc.authority or grpc.envoy_grpc.cluster_name,
            path_prefix="", grpc=True,
            timeout=grpc.timeout.ToTimedelta().total_seconds()
            if grpc.HasField("timeout") else GRPC_TIMEOUT, **common)
    if service_kind != "http_service":
        raise subset.Unsupported(where, "ext_authz without an http_service or grpc_service "
                                 "is not supported by the native proxy")
    service = message.http_service
    uri = service.server_uri
    authority = uri.uri.split("://", 1)[-1].split("/", 1)[0]
    request, response = service.authorization_request, service.authorization_response
    return ExtAuthz(
        cluster=uri.cluster, authority=authority, path_prefix=service.path_prefix,
        timeout=uri.timeout.ToTimedelta().total_seconds() if uri.HasField("timeout") else 0.2,
        headers_to_add=tuple((h.key.lower(), h.value) for h in request.headers_to_add),
        upstream_headers=_patterns(response.allowed_upstream_headers),
        client_headers=_patterns(response.allowed_client_headers),
        client_headers_on_success=_patterns(response.allowed_client_headers_on_success),
        **common)


def _patterns(message: Any) -> tuple[matchers.StringMatch, ...]:
    return tuple(matchers.string_match(pattern) for pattern in message.patterns)
