"""Envoy's role-based access control, sans-IO: RBAC policies compiled once per config into
predicates over what a connection or request shows (:class:`Facts`), for the HTTP filter
and the network filter alike.

A policy matches when one of its permissions and one of its principals match. An ALLOW
filter lets through what some policy matches, a DENY filter what none matches, a LOG
filter everything. Shadow rules are evaluated and counted, never enforced. On a TCP
connection there are no headers, paths or request metadata: matchers on them never match,
as in Envoy's network filter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
from envoy.config.rbac.v3 import rbac_pb2

from pilotfish.core.native import matchers, subset

URI_TEMPLATE = "envoy.path.match.uri_template"


@attrs.frozen
class Facts:
    """What a policy can ask about one connection (and, on HTTP, one request)."""

    source: str = ""  # the peer's address
    source_port: int = 0
    remote: str = ""  # the client address the proxy trusts ("" : the peer's)
    destination: tuple[str, int] = ("", 0)
    principals: tuple[str, ...] = ()  # the peer certificate's URI/DNS names
    authenticated: bool = False  # the peer showed a verified certificate
    server_name: str = ""
    headers: Mapping[str, str] | None = None  # with :authority, :method, :path; None: TCP
    path: str = ""  # without the query
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    identity: str = ""  # our own certificate's, on TLS we terminated (telemetry, not policy)
    # the connection's filter state (an internal listener's, from the hop before it):
    # a waypoint knows its HBONE client by io.istio.peer_principal there, not a certificate
    filter_state: Mapping[str, str] = attrs.field(factory=dict)


Predicate = Callable[[Facts], bool]


def _any(parts: list[Predicate]) -> Predicate:
    return lambda facts: any(part(facts) for part in parts)


def _all(parts: list[Predicate]) -> Predicate:
    return lambda facts: all(part(facts) for part in parts)


def _header(matcher: Any) -> Predicate:
    match = matchers.header_match(matcher)
    return lambda facts: facts.headers is not None and match.holds(facts.headers)


def _url_path(matcher: Any) -> Predicate:
    match = matchers.string_match(matcher.path)
    return lambda facts: facts.headers is not None and match.holds(facts.path)


def _metadata(matcher: Any) -> Predicate:
    match = matchers.metadata_match(matcher)
    return lambda facts: match.holds(facts.metadata)


def _filter_state(matcher: Any) -> Predicate:
    if matcher.WhichOneof("matcher") != "string_match":
        raise subset.Unsupported("principal.filter_state", "only string_match is supported "
                                 "by the native proxy")
    key, match = matcher.key, matchers.string_match(matcher.string_match)
    return lambda facts: key in facts.filter_state and match.holds(facts.filter_state[key])


def _address(block: Any, which: str) -> Predicate:
    match = matchers.cidr(block)
    if which == "remote":
        return lambda facts: match.holds(facts.remote or facts.source)
    return lambda facts: match.holds(facts.source)


def _authenticated(matcher: Any) -> Predicate:
    if not matcher.HasField("principal_name"):
        return lambda facts: facts.authenticated
    match = matchers.string_match(matcher.principal_name)
    return lambda facts: facts.authenticated and any(match.holds(name)
                                                     for name in facts.principals)


# What permissions and principals share: the combinators (by their field names in each
# message: and, or, not) and the request matchers.
_SETS = {"and_rules": ("rules", _all), "or_rules": ("rules", _any),
         "and_ids": ("ids", _all), "or_ids": ("ids", _any)}
_MATCHERS: dict[str, Callable[[Any], Predicate]] = {
    "header": _header, "url_path": _url_path, "metadata": _metadata}


def _shared(kind: str | None, rule: Any, build: Callable[[Any], Predicate]
            ) -> Predicate | None:
    if kind == "any":
        return lambda facts: True
    if kind in _SETS:
        field, combine = _SETS[kind]
        return combine([build(r) for r in getattr(getattr(rule, kind), field)])
    if kind in ("not_rule", "not_id"):
        inner = build(getattr(rule, kind))
        return lambda facts: not inner(facts)
    if kind in _MATCHERS:
        return _MATCHERS[kind](getattr(rule, kind))
    return None


def permission(rule: rbac_pb2.Permission) -> Predicate:
    kind = rule.WhichOneof("rule")
    shared = _shared(kind, rule, permission)
    if shared is not None:
        return shared
    if kind == "destination_ip":
        block = matchers.cidr(rule.destination_ip)
        return lambda facts: block.holds(facts.destination[0])
    if kind == "destination_port":
        port = rule.destination_port
        return lambda facts: facts.destination[1] == port
    if kind == "destination_port_range":
        start, end = rule.destination_port_range.start, rule.destination_port_range.end
        return lambda facts: start <= facts.destination[1] < end
    if kind == "requested_server_name":
        name = matchers.string_match(rule.requested_server_name)
        return lambda facts: name.holds(facts.server_name)
    if kind == "uri_template":
        config: Any = subset.unpack(rule.uri_template.typed_config, "uri_template")
        pattern = matchers.path_template(config.path_template)
        return lambda facts: facts.headers is not None and \
            bool(pattern.fullmatch(facts.path))
    raise subset.Unsupported("permission", f"RBAC permission {kind} is not supported by "
                             "the native proxy")


def principal(rule: rbac_pb2.Principal) -> Predicate:
    kind = rule.WhichOneof("identifier")
    shared = _shared(kind, rule, principal)
    if shared is not None:
        return shared
    if kind == "authenticated":
        return _authenticated(rule.authenticated)
    if kind in ("direct_remote_ip", "source_ip"):
        return _address(getattr(rule, kind), "direct")
    if kind == "remote_ip":
        return _address(rule.remote_ip, "remote")
    if kind == "filter_state":
        return _filter_state(rule.filter_state)
    raise subset.Unsupported("principal", f"RBAC principal {kind} is not supported by the "
                             "native proxy")


@attrs.frozen
class Rules:
    """One ``RBAC`` message: an action and its named policies."""

    action: str  # ALLOW | DENY | LOG
    policies: tuple[tuple[str, Predicate, Predicate], ...]  # (name, permission, principal)

    def matched(self, facts: Facts) -> str | None:
        """The first policy that matches, by name."""
        for name, allowed, who in self.policies:
            if allowed(facts) and who(facts):
                return name
        return None

    def allows(self, facts: Facts) -> bool:
        if self.action == "LOG":
            return True
        hit = self.matched(facts) is not None
        return hit if self.action == "ALLOW" else not hit


def rules(message: rbac_pb2.RBAC) -> Rules:
    policies = []
    for name in sorted(message.policies):  # Envoy evaluates policies in name order
        policy = message.policies[name]
        policies.append((name, _any([permission(p) for p in policy.permissions]),
                         _any([principal(p) for p in policy.principals])))
    return Rules(rbac_pb2.RBAC.Action.Name(message.action), tuple(policies))


HTTP_FILTER = "envoy.filters.http.rbac"


@attrs.frozen
class Filter:
    """An RBAC filter (HTTP or network): what it enforces and what it only counts."""

    enforced: Rules | None  # None: no enforcing rules, everything passes
    shadow: Rules | None = None
    shadow_prefix: str = ""
    stat_prefix: str = ""  # the network filter's (the HTTP one counts under the manager's)

    def decide(self, facts: Facts, metadata: dict[str, Any] | None = None
               ) -> tuple[bool, list[str]]:
        """(allowed, the counters to bump) for one connection or request; a request's
        ``metadata`` gets the shadow rules' verdict under the HTTP filter's name, as
        Envoy leaves it (the policy that matched, if one did)."""
        counters = []
        if self.shadow is not None:
            matched = self.shadow.matched(facts)
            allowed = self.shadow.action == "LOG" or (
                (matched is not None) == (self.shadow.action == "ALLOW"))
            verdict = "allowed" if allowed else "denied"
            counters.append(f"{self.stat_prefix}rbac.{self.shadow_prefix}shadow_{verdict}")
            if metadata is not None:
                found = {f"{self.shadow_prefix}shadow_engine_result": verdict}
                if matched is not None:
                    found[f"{self.shadow_prefix}shadow_effective_policy_id"] = matched
                metadata[HTTP_FILTER] = found
        if self.enforced is None:
            return True, counters
        allowed = self.enforced.allows(facts)
        counters.append(f"{self.stat_prefix}rbac.{'allowed' if allowed else 'denied'}")
        return allowed, counters


def rbac_filter(message: Any) -> Filter:
    """The HTTP or network ``RBAC`` filter config (same fields that matter here)."""
    return Filter(rules(message.rules) if message.HasField("rules") else None,
                  rules(message.shadow_rules) if message.HasField("shadow_rules") else None,
                  message.shadow_rules_stat_prefix, getattr(message, "stat_prefix", ""))
