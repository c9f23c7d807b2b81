"""HTTP routing as Envoy does it, sans-IO: a route configuration in, a decision out.

:func:`compile_routes` turns a (checked) ``RouteConfiguration`` into a :class:`RouteTable`
once per config; :meth:`RouteTable.route` picks the virtual host by the request's
authority (exact, then the longest suffix wildcard, then the longest prefix wildcard, then
``*``), then the first route whose match holds. The result says where the request goes (a
cluster, chosen from weighted clusters by a number the caller draws), or what to answer
directly (a fixed response, a redirect).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import attrs
import re2  # type: ignore[import-untyped]
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2

from pilotfish.core.native import hashing, http_filters, subset
from pilotfish.core.native.matchers import RouteMatch, route_match

Headers = Sequence[tuple[str, str]]  # lower-case names, as received


# Envoy's header value operators the native proxy fills in (%NAME%; %% is a percent sign)
HEADER_OPERATORS = frozenset({
    "DOWNSTREAM_REMOTE_ADDRESS", "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_LOCAL_ADDRESS", "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_PEER_URI_SAN", "DOWNSTREAM_LOCAL_URI_SAN", "HOSTNAME"})
_OPERATOR = re2.compile(r"%([A-Z_]*)%")
Template = tuple[str, ...]  # literal text at even places, operator names at odd ones


def _template(value: str) -> str | Template:
    """A header value as Envoy reads it: plain, or with %OPERATOR%s to fill per request."""
    if "%" not in value:
        return value
    parts = _OPERATOR.split(value)
    if len(parts) % 2 == 0 or any("%" in text for text in parts[::2]):
        raise ValueError(f"header value {value!r}: a '%' that opens no operator the "
                         "native proxy fills (write %% for a percent sign)")
    out = [parts[0]]
    for name, text in zip(parts[1::2], parts[2::2], strict=True):
        if name and name not in HEADER_OPERATORS:
            raise ValueError(f"header value {value!r}: %{name}% is not supported by the "
                             "native proxy")
        if name:
            out += [name, text]
        else:  # %%: a literal percent sign
            out[-1] += "%" + text
    return tuple(out) if len(out) > 1 else out[0]


def _fill(value: str | Template, facts: Mapping[str, str]) -> str:
    if isinstance(value, str):
        return value
    return "".join(part if index % 2 == 0 else facts.get(part, "")
                   for index, part in enumerate(value))


@attrs.frozen
class HeaderEdits:
    add: tuple[tuple[str, str | Template, bool], ...] = ()  # (name, value, append)
    remove: tuple[str, ...] = ()
    # whether a value needs the request's facts
    formatted: bool = attrs.field(init=False, eq=False)
    gone: frozenset[str] = attrs.field(init=False, eq=False)  # names taken out first

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "formatted",
                           any(not isinstance(value, str) for _, value, _ in self.add))
        object.__setattr__(self, "gone", frozenset(self.remove) | {
            name for name, _, append in self.add if not append})

    def apply(self, headers: Headers,
              facts: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
        """``headers`` edited, as a new list; ``facts`` fill values' %OPERATOR%s (by
        operator name)."""
        if not self.add and not self.remove:
            return list(headers)
        gone = self.gone
        out = [(k, v) for k, v in headers if k not in gone] if gone else list(headers)
        if self.formatted:
            out += [(name, _fill(value, facts or {})) for name, value, _ in self.add]
        else:
            out += [(name, value) for name, value, _ in self.add]  # type: ignore[misc]
        return out

    def then(self, other: HeaderEdits) -> HeaderEdits:
        if not other.add and not other.remove:
            return self
        return HeaderEdits(self.add + other.add, self.remove + other.remove)


def _edits(add: Sequence[base_pb2.HeaderValueOption], remove: Sequence[str]) -> HeaderEdits:
    added = []
    for option in add:
        append = option.append_action == base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
        added.append((option.header.key.lower(), _template(option.header.value), append))
    return HeaderEdits(tuple(added), tuple(name.lower() for name in remove))


@attrs.frozen
class RetryPolicy:
    retry_on: frozenset[str] = frozenset()
    num_retries: int = 1
    per_try_timeout: float = 0.0
    statuses: frozenset[int] = frozenset()
    other_hosts: bool = False  # previous_hosts: a retry avoids the hosts tried

    def retries_status(self, status: int) -> bool:
        if "5xx" in self.retry_on and status >= 500:
            return True
        if "gateway-error" in self.retry_on and status in (502, 503, 504):
            return True
        return "retriable-status-codes" in self.retry_on and status in self.statuses

    @property
    def retries_connect_failure(self) -> bool:
        return bool({"connect-failure", "5xx", "gateway-error", "reset"} & self.retry_on)


def _retry(policy: route_components_pb2.RetryPolicy) -> RetryPolicy:
    return RetryPolicy(
        frozenset(p.strip() for p in policy.retry_on.split(",") if p.strip()),
        policy.num_retries.value if policy.HasField("num_retries") else 1,
        policy.per_try_timeout.ToTimedelta().total_seconds(),
        frozenset(policy.retriable_status_codes),
        any(p.name == "envoy.retry_host_predicates.previous_hosts"
            for p in policy.retry_host_predicate))


@attrs.frozen
class RegexRewrite:
    """``regex_rewrite``: every match of the pattern in the path (not the query) replaced
    by the substitution (RE2's ``\\1`` for groups)."""

    pattern: Any
    substitution: str

    def apply(self, path: str) -> str:
        return str(self.pattern.sub(self.substitution, path))


def rewrite_path(target: str, matched_prefix: str, prefix_rewrite: str,
                 regex: RegexRewrite | None) -> str:
    """The request target after a route's (or redirect's) path rewrite; the query stays."""
    path, mark, query = target.partition("?")
    if prefix_rewrite and matched_prefix is not None and path.startswith(matched_prefix):
        path = prefix_rewrite + path[len(matched_prefix):]
    elif regex is not None:
        path = regex.apply(path)
    return path + mark + query


def _regex_rewrite(message: Any) -> RegexRewrite | None:
    if not message.HasField("regex_rewrite"):
        return None
    return RegexRewrite(re2.compile(message.regex_rewrite.pattern.regex),
                        message.regex_rewrite.substitution)


@attrs.frozen
class Forward:
    """Send the request upstream."""

    clusters: tuple[tuple[str, int, HeaderEdits], ...]  # (cluster, weight, edits)
    timeout: float = 15.0  # Envoy's default; 0: none
    retry: RetryPolicy | None = None
    prefix_rewrite: str = ""
    host_rewrite: str = ""
    websocket: bool = False
    regex_rewrite: RegexRewrite | None = None
    mirrors: tuple[tuple[str, float], ...] = ()  # (cluster, share of requests) shadowed
    connect: bool = False  # a CONNECT is terminated here: its payload goes to the cluster
    hash_policy: tuple[hashing.HashPolicy, ...] = ()  # for RING_HASH / MAGLEV clusters

    def cluster(self, draw: int) -> tuple[str, HeaderEdits]:
        """The cluster for ``draw`` in ``[0, total weight)``."""
        for name, weight, edits in self.clusters:
            if draw < weight:
                return name, edits
            draw -= weight
        return self.clusters[-1][0], self.clusters[-1][2]

    @property
    def total_weight(self) -> int:
        return sum(weight for _, weight, _ in self.clusters) or 1

    def choose(self, rng: random.Random) -> tuple[str, HeaderEdits]:
        """The cluster for one request (drawn by weight when there are several)."""
        if len(self.clusters) == 1:
            name, _, edits = self.clusters[0]
            return name, edits
        return self.cluster(rng.randrange(self.total_weight))


@attrs.frozen
class Respond:
    """Answer without an upstream (direct response, redirect)."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class Redirect:
    scheme: str = ""
    host: str = ""
    port: int = 0
    path: str = ""
    prefix_rewrite: str = ""
    status: int = 301
    strip_query: bool = False
    regex_rewrite: RegexRewrite | None = None

    def answer(self, scheme: str, authority: str, path: str, matched_prefix: str) -> Respond:
        """The redirect for a request, as Envoy builds it: a new host drops the request's
        port; a new scheme drops it when it was the old scheme's default; a new port
        replaces it."""
        host, port = _host_port(authority)
        new_scheme = self.scheme or scheme
        if self.host:
            new_host, new_port = self.host, ""
        else:
            new_host, new_port = host, port
            if self.scheme and self.scheme != scheme and \
                    port == {"http": "80", "https": "443"}.get(scheme):
                new_port = ""
        if self.port:
            new_port = str(self.port)
        target, _, query = path.partition("?")
        if self.path:
            target = self.path
        else:
            target = rewrite_path(target, matched_prefix, self.prefix_rewrite,
                                  self.regex_rewrite)
        if query and not self.strip_query and "?" not in target:
            target += f"?{query}"
        location = f"{new_scheme}://{new_host}" + (f":{new_port}" if new_port else "") + target
        return Respond(self.status, b"", (("location", location),))


_REDIRECT_CODES = {0: 301, 1: 302, 2: 303, 3: 307, 4: 308}


def _host_port(authority: str) -> tuple[str, str]:
    if authority.startswith("["):  # [v6]:port
        host, _, rest = authority.partition("]")
        return host + "]", rest[1:] if rest.startswith(":") else ""
    host, _, port = authority.partition(":")
    return host, port


@attrs.frozen
class Route:
    name: str
    match: RouteMatch
    action: Forward | Respond | Redirect
    request_edits: HeaderEdits = HeaderEdits()
    response_edits: HeaderEdits = HeaderEdits()
    per_filter: Mapping[str, Any] = attrs.field(factory=dict)  # filter name → its config


@attrs.frozen
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]
    retry: RetryPolicy | None = None
    request_edits: HeaderEdits = HeaderEdits()
    response_edits: HeaderEdits = HeaderEdits()
    per_filter: Mapping[str, Any] = attrs.field(factory=dict)
    # one decision per route, made once per config rather than once per request
    decisions: tuple[Decision, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "decisions", tuple(Decision(self, r) for r in self.routes))


@attrs.frozen
class Decision:
    """What to do with a request that matched ``route``: the route's header edits and
    filter configs joined with its virtual host's."""

    vhost: VirtualHost = attrs.field(repr=False)
    route: Route
    request_edits: HeaderEdits = attrs.field(init=False, eq=False)
    response_edits: HeaderEdits = attrs.field(init=False, eq=False)
    # the filters' configs for this request: the route's over the virtual host's
    per_filter: Mapping[str, Any] = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        route, vhost = self.route, self.vhost
        object.__setattr__(self, "request_edits", route.request_edits.then(vhost.request_edits))
        object.__setattr__(self, "response_edits",
                           route.response_edits.then(vhost.response_edits))
        object.__setattr__(self, "per_filter", {**vhost.per_filter, **route.per_filter}
                           if vhost.per_filter else route.per_filter)


VHOSTS_KEPT = 4096  # authorities whose virtual host a route table remembers


@attrs.frozen
class RouteTable:
    name: str
    vhosts: tuple[VirtualHost, ...]
    ignore_port: bool = False
    request_edits: HeaderEdits = HeaderEdits()
    response_edits: HeaderEdits = HeaderEdits()
    exact: Mapping[str, VirtualHost] = attrs.field(factory=dict)
    # authorities seen, and the virtual host each got (wildcards are ranked once per
    # authority, not per request); emptied when it grows past VHOSTS_KEPT. (A mapping, not
    # a dict, to the compiler: mypyc checks a dict-typed class attribute's value, and an
    # attrs field is not one until the class is made.)
    seen: MutableMapping[str, VirtualHost | None] = attrs.field(factory=dict, eq=False,
                                                                repr=False)

    def vhost(self, authority: str) -> VirtualHost | None:
        try:
            return self.seen[authority]
        except KeyError:
            pass
        if len(self.seen) >= VHOSTS_KEPT:
            self.seen.clear()
        found = self.seen[authority] = self._vhost(authority)
        return found

    def _vhost(self, authority: str) -> VirtualHost | None:
        host = authority.lower()
        if self.ignore_port:
            host = _strip_port(host)
        found = self.exact.get(host)
        if found is not None:
            return found
        best: tuple[int, int, VirtualHost] | None = None
        for vhost in self.vhosts:
            for domain in vhost.domains:
                rank = _wildcard_rank(domain, host)
                if rank is not None and (best is None or rank > best[:2]):
                    best = (*rank, vhost)
        return best[2] if best else None

    def route(self, authority: str, path: str, headers: Mapping[str, str]) -> Decision | None:
        vhost = self.vhost(authority)
        if vhost is None:
            return None
        query = _query(path) if "?" in path else NO_QUERY
        for decision in vhost.decisions:
            if decision.route.match.holds(path, headers, query):
                return decision
        return None


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _wildcard_rank(domain: str, host: str) -> tuple[int, int] | None:
    """Envoy's order: suffix wildcards (longest first), prefix wildcards, then ``*``."""
    if domain == "*":
        return (0, 0)
    if domain.startswith("*") and host.endswith(domain[1:]) and len(host) > len(domain) - 1:
        return (2, len(domain))
    if domain.endswith("*") and host.startswith(domain[:-1]) and len(host) > len(domain) - 1:
        return (1, len(domain))
    return None


NO_QUERY: Mapping[str, str] = {}


def _query(path: str) -> dict[str, str]:
    _, _, text = path.partition("?")
    out: dict[str, str] = {}
    for part in text.split("&"):
        if part:
            key, _, value = part.partition("=")
            out.setdefault(key, value)
    return out


def _action(route: route_components_pb2.Route) -> Forward | Respond | Redirect:
    which = route.WhichOneof("action")
    if which == "direct_response":
        response = route.direct_response
        return Respond(response.status, subset.data(response.body))
    if which == "redirect":
        redirect = route.redirect
        scheme = "https" if redirect.https_redirect else redirect.scheme_redirect
        return Redirect(scheme, redirect.host_redirect, redirect.port_redirect,
                        redirect.path_redirect, redirect.prefix_rewrite,
                        _REDIRECT_CODES.get(redirect.response_code, 301), redirect.strip_query,
                        _regex_rewrite(redirect))
    action = route.route
    limits = action.max_stream_duration
    if limits.max_stream_duration.ToNanoseconds() or limits.grpc_timeout_header_max.ToNanoseconds():
        raise ValueError("route.max_stream_duration: only zero (no limit) is supported by the "
                         "native proxy")
    if action.WhichOneof("cluster_specifier") == "weighted_clusters":
        clusters = tuple((c.name, c.weight.value, _edits(c.request_headers_to_add,
                                                         c.request_headers_to_remove))
                         for c in action.weighted_clusters.clusters)
    else:
        clusters = ((action.cluster, 1, HeaderEdits()),)
    timeout = action.timeout.ToTimedelta().total_seconds() if action.HasField("timeout") \
        else 15.0
    return Forward(
        clusters, timeout,
        _retry(action.retry_policy) if action.HasField("retry_policy") else None,
        action.prefix_rewrite, action.host_rewrite_literal,
        any(u.upgrade_type.lower() == "websocket" for u in action.upgrade_configs),
        _regex_rewrite(action),
        tuple((m.cluster, http_filters.share(m.runtime_fraction.default_value)
               if m.HasField("runtime_fraction") else 1.0)
              for m in action.request_mirror_policies),
        any(u.upgrade_type.upper() == "CONNECT" and (u.enabled.value if u.HasField(
            "enabled") else True) for u in action.upgrade_configs),
        hashing.route_policies(action.hash_policy))


def _per_filter(configs: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = {}
    for name, packed in configs.items():
        at = f"{where}.typed_per_filter_config[{name}]"
        out[name] = http_filters.route_config(name, subset.unpack(packed, at), at)
    return out


def compile_routes(config: route_pb2.RouteConfiguration) -> RouteTable:
    vhosts = []
    exact: dict[str, VirtualHost] = {}
    for v, vh in enumerate(config.virtual_hosts):
        routes = tuple(
            Route(r.name, route_match(r.match), _action(r),
                  _edits(r.request_headers_to_add, r.request_headers_to_remove),
                  _edits(r.response_headers_to_add, r.response_headers_to_remove),
                  _per_filter(r.typed_per_filter_config, f"virtual_hosts[{v}].routes[{i}]"))
            for i, r in enumerate(vh.routes))
        vhost = VirtualHost(vh.name, tuple(d.lower() for d in vh.domains), routes,
                            _retry(vh.retry_policy) if vh.HasField("retry_policy") else None,
                            _edits(vh.request_headers_to_add, vh.request_headers_to_remove),
                            _edits(vh.response_headers_to_add, vh.response_headers_to_remove),
                            _per_filter(vh.typed_per_filter_config, f"virtual_hosts[{v}]"))
        vhosts.append(vhost)
        for domain in vhost.domains:
            if "*" not in domain:
                exact.setdefault(domain, vhost)
    return RouteTable(config.name, tuple(vhosts), config.ignore_port_in_host_matching,
                      _edits(config.request_headers_to_add, config.request_headers_to_remove),
                      _edits(config.response_headers_to_add,
                             config.response_headers_to_remove), exact)
