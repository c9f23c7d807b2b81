"""The HTTP filters an ``http_connection_manager`` runs before its router, sans-IO: JWT
authentication, RBAC, external authorization (`ext_authz`), fault injection and CORS, in
the listener's order.

Each filter's config is compiled once per config (:func:`compile_filters`; the per-route
configs of fault and CORS by :func:`route_config`, which routing calls for
``typed_per_filter_config``). :func:`run` takes one request through them and says what
happens to it: go on upstream (with the headers and dynamic metadata the filters left), or
answer here, after an injected delay or not; or, at an ``ext_authz`` filter, first ask the
authorization service (``Outcome.check``: the caller does, applies the answer with the
filter, and runs the rest from ``Outcome.resume``). Headers the filters add to the answer
(CORS, the authorization service's) ride along either way.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import attrs
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.http.set_filter_state.v3 import (
    set_filter_state_pb2 as http_state_pb2,
)
from google.protobuf.message import Message

from pilotfish.core.native import ext_authz, jwt_authn, matchers, rbac, subset

FAULT = "envoy.filters.http.fault"
CORS = "envoy.filters.http.cors"
_DENOMINATORS = {0: 100, 1: 10_000, 2: 1_000_000}  # HUNDRED, TEN_THOUSAND, MILLION


def share(percent: Any) -> float:
    """A ``FractionalPercent`` as a share of requests (0-1)."""
    return float(percent.numerator) / _DENOMINATORS.get(percent.denominator, 100)


@attrs.frozen
class Fault:
    """Fixed delays and aborts, each to a share of requests."""

    delay: float = 0.0
    delay_share: float = 0.0
    status: int = 0  # HTTP status of an abort
    grpc_status: int | None = None
    abort_share: float = 0.0


def fault(message: fault_pb2.HTTPFault) -> Fault:
    delay, abort = message.delay, message.abort
    kind = abort.WhichOneof("error_type") if message.HasField("abort") else None
    if kind not in (None, "http_status", "grpc_status"):
        raise subset.Unsupported("abort", f"fault abort {kind} is not supported by the "
                                 "native proxy")
    return Fault(
        delay.fixed_delay.ToTimedelta().total_seconds() if message.HasField("delay") else 0.0,
        share(delay.percentage) if delay.HasField("percentage") else 1.0,
        abort.http_status if kind == "http_status" else 0,
        abort.grpc_status if kind == "grpc_status" else None,
        share(abort.percentage) if abort.HasField("percentage") else 1.0)


@attrs.frozen
class Cors:
    origins: tuple[matchers.StringMatch, ...]
    methods: str = ""
    headers: str = ""
    expose: str = ""
    max_age: str = ""
    credentials: bool = False
    enabled: float = 1.0  # share of requests the policy applies to
    forward_unmatched_preflights: bool = True

    def allows(self, origin: str) -> bool:
        # an exact "*" is any origin (Envoy's reading; the answer names the origin asked)
        return any((m.kind == "exact" and m.value == "*") or m.holds(origin)
                   for m in self.origins)


def cors(message: cors_pb2.CorsPolicy) -> Cors:
    enabled = share(message.filter_enabled.default_value) \
        if message.HasField("filter_enabled") else 1.0
    return Cors(tuple(matchers.string_match(m) for m in message.allow_origin_string_match),
                message.allow_methods, message.allow_headers, message.expose_headers,
                message.max_age, message.allow_credentials.value, enabled,
                message.forward_not_matching_preflights.value
                if message.HasField("forward_not_matching_preflights") else True)


def route_config(name: str, message: Message, where: str) -> Any:
    """A route's (or virtual host's) ``typed_per_filter_config`` entry, compiled."""
    if isinstance(message, fault_pb2.HTTPFault):
        return fault(message)
    if isinstance(message, cors_pb2.CorsPolicy):
        return cors(message)
    raise subset.Unsupported(where, f"per-route config for {name} is not supported by the "
                             "native proxy")


@attrs.frozen
class Rbac:
    rules: rbac.Filter


@attrs.frozen
class Jwt:
    rules: jwt_authn.JwtFilter


@attrs.frozen
class FaultFilter:
    default: Fault | None  # the filter's own config (used where a route has none)


@attrs.frozen
class CorsFilter:
    pass


HttpFilter = Rbac | Jwt | ext_authz.ExtAuthz | FaultFilter | CorsFilter


def compile_filters(filters: Sequence[Any], where: str) -> tuple[HttpFilter, ...]:
    """The listener's HTTP filters (checked against the subset), in order; the router last."""
    out: list[HttpFilter] = []
    for index, http_filter in enumerate(filters):
        at = f"{where}.http_filters[{index}]"
        message = subset.unpack(http_filter.typed_config, f"{at}.typed_config")
        if isinstance(message, http_rbac_pb2.RBAC):
            out.append(Rbac(rbac.rbac_filter(message)))
        elif isinstance(message, ext_authz_pb2.ExtAuthz):
            out.append(ext_authz.ext_authz(message, f"{at}.typed_config"))
        elif isinstance(message, jwt_pb2.JwtAuthentication):
            out.append(Jwt(jwt_authn.jwt_filter(message)))
        elif isinstance(message, fault_pb2.HTTPFault):
            active = message.HasField("delay") or message.HasField("abort")
            out.append(FaultFilter(fault(message) if active else None))
        elif isinstance(message, cors_pb2.Cors):
            out.append(CorsFilter())
        elif isinstance(message, http_state_pb2.Config):
            continue  # the connection manager applies it (config.HttpManager.state)
        elif isinstance(message, router_pb2.Router):
            if index != len(filters) - 1:
                raise subset.Unsupported(at, "the router must be the last HTTP filter")
        else:  # the subset lets through only what is handled above
            raise subset.Unsupported(at, f"HTTP filter {http_filter.name} is not supported")
    return tuple(out)


# A dataclass, not attrs: compiled (compiled.py), mypyc makes it a native class.
@dataclass(slots=True)
class Request:
    """One request as the filters see and change it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    connection: rbac.Facts  # who is asking, over what
    per_route: Mapping[str, Any] = field(default_factory=dict)  # the route's filter configs
    metadata: dict[str, Any] = field(default_factory=dict)  # dynamic metadata, by filter
    response_headers: list[tuple[str, str]] = field(default_factory=list)  # added to the answer


@attrs.frozen
class Answer:
    """Answer here instead of going upstream."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    flags: str = "-"


@attrs.frozen
class Outcome:
    delay: float = 0.0  # wait this long first (an injected delay)
    answer: Answer | None = None  # None: go on to the router
    delay_flag: str = ""  # "DI" when a delay was injected
    counters: tuple[str, ...] = ()  # stats under http.<stat_prefix>.
    # Ask the authorization service first: with what, which filter reads the answer, and
    # the filter to go on from.
    check: ext_authz.Check | None = None
    checker: ext_authz.ExtAuthz | None = None
    resume: int = 0


def _facts(request: Request) -> rbac.Facts:
    joined: dict[str, str] = {}
    for name, value in request.headers:
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    joined.setdefault(":authority", joined.get("host", ""))
    joined[":method"] = request.method
    joined[":path"] = request.target
    return attrs.evolve(request.connection, headers=joined,
                        path=request.target.split("?", 1)[0], metadata=request.metadata)


def _preflight(request: Request) -> bool:
    names = {name for name, _ in request.headers}
    return request.method == "OPTIONS" and "origin" in names and \
        "access-control-request-method" in names


def _cors(policy: Cors, request: Request, rng: random.Random) -> Answer | None:
    origin = next((v for k, v in request.headers if k == "origin"), None)
    if origin is None or (policy.enabled < 1.0 and rng.random() >= policy.enabled):
        return None
    allowed = policy.allows(origin)
    if _preflight(request):
        if not allowed:
            return None if policy.forward_unmatched_preflights else Answer(200)
        headers = [("access-control-allow-origin", origin)]
        asked = dict(request.headers)
        # "*" answers with what the preflight asks for (a wildcard means nothing to a
        # browser when credentials are allowed)
        methods = asked.get("access-control-request-method", "*") \
            if policy.methods == "*" else policy.methods
        allowed_headers = asked.get("access-control-request-headers", "*") \
            if policy.headers == "*" else policy.headers
        for name, value in (("access-control-allow-methods", methods),
                            ("access-control-allow-headers", allowed_headers),
                            ("access-control-expose-headers", policy.expose),
                            ("access-control-max-age", policy.max_age)):
            if value:
                headers.append((name, value))
        if policy.credentials:
            headers.append(("access-control-allow-credentials", "true"))
        return Answer(200, b"", tuple(headers))
    if allowed:
        request.response_headers.append(("access-control-allow-origin", origin))
        if policy.credentials:
            request.response_headers.append(("access-control-allow-credentials", "true"))
        if policy.expose:
            request.response_headers.append(("access-control-expose-headers", policy.expose))
    return None


def _fault(config: Fault, rng: random.Random) -> Outcome:
    counters = []
    delay = 0.0
    if config.delay and (config.delay_share >= 1.0 or rng.random() < config.delay_share):
        delay = config.delay
        counters.append("fault.delays_injected")
    answer = None
    if (config.status or config.grpc_status is not None) and (
            config.abort_share >= 1.0 or rng.random() < config.abort_share):
        counters.append("fault.aborts_injected")
        if config.grpc_status is not None:
            answer = Answer(200, b"", (("content-type", "application/grpc"),
                                       ("grpc-status", str(config.grpc_status)),
                                       ("grpc-message", "fault filter abort")), "FI")
        else:
            answer = Answer(config.status, b"fault filter abort", (), "FI")
    return Outcome(delay, answer, "DI" if delay else "", tuple(counters))


def idle(filters: Sequence[HttpFilter], per_route: Mapping[str, Any]) -> bool:
    """Whether no filter acts on a request whose route has ``per_route`` configs (fault
    and CORS act only where configured): then :func:`run` need not be called."""
    for item in filters:
        if isinstance(item, FaultFilter):
            if item.default is not None or FAULT in per_route:
                return False
        elif isinstance(item, CorsFilter):
            if CORS in per_route:
                return False
        else:
            return False
    return True


def run(filters: Sequence[HttpFilter], request: Request, rng: random.Random,
        now: float | None = None, start: int = 0) -> Outcome:
    """Take ``request`` through ``filters`` from ``start`` (changing its headers and
    metadata)."""
    counters: list[str] = []
    delay = 0.0
    facts: rbac.Facts | None = None  # what RBAC filters ask, gathered once between changes
    for index in range(start, len(filters)):
        item = filters[index]
        if isinstance(item, Jwt):
            verdict = item.rules.check(request.method, request.target, request.headers, now)
            if verdict.error:
                counters.append("jwt_authn.denied")
                return Outcome(answer=Answer(401, verdict.error.encode(), (
                    ("www-authenticate", 'Bearer realm="http://'
                     f'{_authority(request)}{request.target.split("?", 1)[0]}", '
                     'error="invalid_token"'),)), counters=tuple(counters))
            counters.append("jwt_authn.allowed")
            request.headers = verdict.headers
            if verdict.metadata:
                request.metadata[jwt_authn.FILTER] = verdict.metadata
            facts = None
        elif isinstance(item, Rbac):
            facts = facts or _facts(request)
            allowed, bumped = item.rules.decide(facts, request.metadata)
            counters += bumped
            if not allowed:
                return Outcome(answer=Answer(403, b"RBAC: access denied"),
                               counters=tuple(counters))
        elif isinstance(item, ext_authz.ExtAuthz):
            if item.applies(request.metadata):
                return Outcome(delay, None, "DI" if delay else "", tuple(counters),
                               item.check(request.method, request.target, request.headers,
                                          request.connection),
                               item, index + 1)
        elif isinstance(item, FaultFilter):
            config = request.per_route.get(FAULT) or item.default
            if config is not None:
                injected = _fault(config, rng)
                counters += injected.counters
                delay = injected.delay
                if injected.answer is not None:
                    return attrs.evolve(injected, counters=tuple(counters))
        else:
            policy = request.per_route.get(CORS)
            answer = _cors(policy, request, rng) if policy is not None else None
            if answer is not None:
                return Outcome(delay, answer, "DI" if delay else "", tuple(counters))
    return Outcome(delay, None, "DI" if delay else "", tuple(counters))


def _authority(request: Request) -> str:
    return next((v for k, v in request.headers if k == "host"), "")
