"""ztunnel's L4 authorization: may this connection reach this workload?

The applicable policies (``WorkloadState.policies_for``) are judged as Istio orders
AuthorizationPolicy: a matching DENY denies; with no ALLOW policy everything else is allowed;
otherwise some ALLOW must match. Dry-run policies decide nothing: the ones that matched are
reported, for the logs.

A policy matches when one of its rules does (no rules: it matches nothing); a rule when every
clause does; a clause when one of its matches does (no matches: it matches all); a match when
every field it sets does. A positive field holds when one of its values does, a negative one
when none does. What a field looks at:

- principals: the peer's SPIFFE ID without ``spiffe://`` (``TD/ns/NS/sa/SA``);
- namespaces and service accounts: those of the peer's identity;
- source and destination IPs (CIDRs), the destination port.

A connection without a peer identity (plaintext on 15006) has no principal, namespace or
service account: positive lists on them fail, negative ones hold. That is how STRICT
PeerAuthentication denies it: discovery sends STRICT as a DENY of ``not_principals:
[presence]``.

An empty match (no field set) is what discovery makes of an entry L4 cannot judge — a ``to``
of only HTTP methods or paths, a ``when`` on a request header — or of an entry that is empty
as written. ztunnel skips it: it matches nothing, so an ALLOW rule made of one allows
nothing, and so does a DENY rule, which then denies nothing. pilotfish takes ztunnel's
reading for ALLOW and the opposite for DENY, where an empty match matches every connection:
the DENY is enforced without its HTTP parts, more restrictive than written, which is what
istiod's status says happens and what the translator promises. A deliberate difference, on
the safe side either way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import TypeVar

import attrs

from pilotfish.core.ambient.model import Match, Policy, StringMatch, Workload

SPIFFE = "spiffe://"
V = TypeVar("V")


@attrs.frozen
class Connection:
    source_ip: str
    source_identity: str | None  # the peer's SPIFFE ID; None on plaintext
    destination_ip: str
    destination_port: int


@attrs.frozen
class Verdict:
    allowed: bool
    policy: str | None  # the deciding policy, NAMESPACE/NAME (None: no policy decided)
    reason: str = ""  # one line for the log
    dry_run: tuple[str, ...] = ()  # dry-run policies that matched (they enforce nothing)


@attrs.frozen
class _Peer:
    """The connection, as the matchers compare it."""

    source: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    destination: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    port: int
    principal: str | None  # the SPIFFE ID without its scheme
    namespace: str | None
    service_account: str | None

    @classmethod
    def of(cls, connection: Connection) -> _Peer:
        principal = namespace = account = None
        identity = connection.source_identity
        if identity:
            principal = identity.removeprefix(SPIFFE)
            parts = principal.split("/")
            if len(parts) == 5 and parts[1] == "ns" and parts[3] == "sa":
                namespace, account = parts[2], parts[4]
        return cls(_ip(connection.source_ip), _ip(connection.destination_ip),
                   connection.destination_port, principal, namespace, account)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _strings(values: tuple[StringMatch, ...], actual: str | None) -> bool:
    return actual is not None and any(value.holds(actual) for value in values)


def _networks(values: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
              actual: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
    return actual is not None and any(
        actual.version == net.version and actual in net for net in values)


def _accounts(values: tuple[tuple[str, str], ...], peer: _Peer) -> bool:
    return peer.namespace is not None and (peer.namespace, peer.service_account) in values


def matches(match: Match, peer: _Peer) -> bool:
    """Every field ``match`` sets holds for ``peer`` (positive: some value does; negative:
    none does)."""
    fields = (
        _field(match.namespaces, match.not_namespaces,
               lambda values: _strings(values, peer.namespace)),
        _field(match.principals, match.not_principals,
               lambda values: _strings(values, peer.principal)),
        _field(match.service_accounts, match.not_service_accounts,
               lambda values: _accounts(values, peer)),
        _field(match.source_ips, match.not_source_ips,
               lambda values: _networks(values, peer.source)),
        _field(match.destination_ips, match.not_destination_ips,
               lambda values: _networks(values, peer.destination)),
        _field(match.destination_ports, match.not_destination_ports,
               lambda values: peer.port in values),
    )
    return all(fields)


def _field(positive: tuple[V, ...], negative: tuple[V, ...],
           holds: Callable[[tuple[V, ...]], bool]) -> bool:
    """A positive list holds when empty or one value does; a negative one when empty or
    none does."""
    return (not positive or holds(positive)) and (not negative or not holds(negative))


def policy_matches(policy: Policy, peer: _Peer) -> bool:
    # What an empty match is taken to mean: see the module docstring.
    empty = policy.action == "DENY"

    def holds(match: Match) -> bool:
        return empty if match == _EMPTY else matches(match, peer)

    return any(all(not clause or any(holds(m) for m in clause) for clause in rule)
               for rule in policy.rules)


_EMPTY = Match()


def authorize(policies: Sequence[Policy], connection: Connection, destination: Workload
              ) -> Verdict:
    """The verdict on ``connection`` to ``destination`` under ``policies`` (those that
    apply to it)."""
    peer = _Peer.of(connection)
    who = connection.source_identity or f"{connection.source_ip} (no identity)"
    to = f"{destination.namespace}/{destination.name}:{connection.destination_port}"
    dry_run = tuple(p.key for p in policies if p.dry_run and policy_matches(p, peer))
    enforced = [p for p in policies if not p.dry_run]
    for policy in enforced:
        if policy.action == "DENY" and policy_matches(policy, peer):
            return Verdict(False, policy.key, f"{who} to {to}: denied by {policy.key}",
                           dry_run)
    allows = [p for p in enforced if p.action == "ALLOW"]
    if not allows:
        return Verdict(True, None, f"{who} to {to}: no ALLOW policy applies", dry_run)
    for policy in allows:
        if policy_matches(policy, peer):
            return Verdict(True, policy.key, f"{who} to {to}: allowed by {policy.key}",
                           dry_run)
    return Verdict(False, None, f"{who} to {to}: no ALLOW policy matches (of "
                   f"{', '.join(p.key for p in allows)})", dry_run)
