"""AuthorizationPolicy → Envoy RBAC filters, HTTP and network.

Each action present among a workload's policies becomes one RBAC filter, in the order
AUDIT (Envoy action LOG), DENY, ALLOW, so a DENY match refuses before any ALLOW is asked.
Without ALLOW policies there is no ALLOW filter and everything not denied passes; with
one, a request must match some ALLOW rule, and an ALLOW policy without rules matches
nothing. Every rule is one RBAC policy named ``ns[NS]-policy[NAME]-rule[INDEX]``: its
``to`` operations and destination conditions make the permission, its ``from`` sources
and the other conditions the principal. Policies annotated ``istio.io/dry-run: "true"``
go to shadow rules: counted in stats, never enforced.

TCP connections carry no HTTP attributes (paths, methods, hosts, request principals,
headers, JWT claims). On the network filter an ALLOW rule using one is left out, since it
could never be shown to match, and a DENY or AUDIT rule loses those attributes and so
matches more (Istio's choice: fail closed). A value with no Envoy equivalent (an unknown
``experimental.*`` key) is treated the same way on HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import attrs
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2

from pilotfish.core.security_policies import AuthzPolicy
from pilotfish.translators import rbac_matchers as m
from pilotfish.translators.common import pack
from pilotfish.translators.rbac_conditions import Condition, condition

log = logging.getLogger("pilotfish.lds")

HTTP_RBAC = "envoy.filters.http.rbac"
NETWORK_RBAC = "envoy.filters.network.rbac"
TCP_STAT_PREFIX = "tcp."
_ORDER = (("AUDIT", rbac_pb2.RBAC.LOG), ("DENY", rbac_pb2.RBAC.DENY),
          ("ALLOW", rbac_pb2.RBAC.ALLOW))
_DRY_RUN_PREFIX = {"AUDIT": "istio_dry_run_audit_", "DENY": "istio_dry_run_deny_",
                   "ALLOW": "istio_dry_run_allow_"}

# field → (matcher, HTTP only). The ``not`` variants negate the same matcher.
_Build = Callable[[str], Any]
_SOURCE: dict[str, tuple[_Build, bool]] = {
    "principals": (m.principal, False),
    "namespaces": (m.namespace, False),
    "serviceAccounts": (m.service_account, False),
    "trustDomains": (m.trust_domain, False),
    "ipBlocks": (m.ip_block, False),
    "remoteIpBlocks": (partial(m.ip_block, remote=True), False),
    "requestPrincipals": (m.request_principal, True),
}
_OPERATION: dict[str, tuple[_Build, bool]] = {
    "hosts": (m.host, True),
    "ports": (m.port, False),
    "methods": (m.method, True),
    "paths": (m.path, True),
}


class _Skip(Exception):
    """An ALLOW rule that cannot be enforced as written: it is left out."""


def _field(name: str) -> tuple[str, bool]:
    if name.startswith("not") and name[3:4].isupper():
        return name[3].lower() + name[4:], True
    return name, False


@attrs.frozen
class _Rule:
    tcp: bool
    allow: bool
    where: str

    def unenforceable(self, what: str) -> None:
        """Skip the rule (ALLOW) or drop the attribute so the rule matches more (others)."""
        if self.allow:
            raise _Skip(what)
        log.debug("%s: %s dropped, the rule matches more", self.where, what)

    def clause(self, clause: Mapping[str, Any], table: Mapping[str, tuple[_Build, bool]],
               combine: Callable[..., Any]) -> list[Any]:
        parts = []
        for name, values in sorted(clause.items()):
            base, negate = _field(name)
            entry = table.get(base)
            if entry is None or not values:
                continue
            build, http_only = entry
            if self.tcp and http_only:
                self.unenforceable(f"{name} (HTTP only)")
                continue
            try:
                parts.append(combine(build, [str(v) for v in values], negate))
            except m.Untranslatable as error:
                self.unenforceable(str(error))
        return parts

    def condition(self, raw: Mapping[str, Any]) -> tuple[list[m.Principal], list[m.Permission]]:
        key = str(raw.get("key") or "")
        found: Condition | None = condition(key)
        if found is None:
            self.unenforceable(f"condition {key} (not supported)")
            return [], []
        if self.tcp and found.http_only:
            self.unenforceable(f"condition {key} (HTTP only)")
            return [], []
        combine = m.values_permission if found.permission else m.values_principal
        out = []
        try:
            for values, negate in ((raw.get("values"), False), (raw.get("notValues"), True)):
                if values:
                    out.append(combine(found.build, [str(v) for v in values], negate))
        except m.Untranslatable as error:
            self.unenforceable(str(error))
            return [], []
        return ([], out) if found.permission else (out, [])


def rule_policy(rule: Mapping[str, Any], *, tcp: bool, action: str, where: str = ""
                ) -> rbac_pb2.Policy | None:
    """One rule as an RBAC policy; None when an ALLOW rule cannot be enforced."""
    ctx = _Rule(tcp=tcp, allow=action == "ALLOW", where=where)
    try:
        sources = [m.all_principals(ctx.clause(entry.get("source") or {}, _SOURCE,
                                               m.values_principal))
                   for entry in rule.get("from") or ()]
        operations = [m.all_permissions(ctx.clause(entry.get("operation") or {}, _OPERATION,
                                                   m.values_permission))
                      for entry in rule.get("to") or ()]
        principals = [m.any_principal(sources)] if sources else []
        permissions = [m.any_permission(operations)] if operations else []
        for raw in rule.get("when") or ():
            who, what = ctx.condition(raw)
            principals += who
            permissions += what
    except _Skip as skipped:
        log.debug("%s: ALLOW rule left out: %s", where, skipped)
        return None
    return rbac_pb2.Policy(permissions=[m.all_permissions(permissions)],
                           principals=[m.all_principals(principals)])


def _rbac(policies: Sequence[AuthzPolicy], action: rbac_pb2.RBAC.Action.ValueType, tcp: bool
          ) -> rbac_pb2.RBAC:
    out = rbac_pb2.RBAC(action=action)
    for policy in policies:
        for index, rule in enumerate(policy.rules):
            key = policy.rule_key(index)
            built = rule_policy(rule, tcp=tcp, action=policy.action, where=key)
            if built is not None:
                out.policies[key].CopyFrom(built)
    return out


@attrs.frozen
class ActionRules:
    """What one RBAC filter enforces (``rules``) and only counts (``shadow``)."""

    action: str
    rules: rbac_pb2.RBAC | None
    shadow: rbac_pb2.RBAC | None

    @property
    def shadow_prefix(self) -> str:
        return _DRY_RUN_PREFIX[self.action] if self.shadow is not None else ""


def action_rules(policies: Sequence[AuthzPolicy], *, tcp: bool) -> list[ActionRules]:
    out = []
    for name, action in _ORDER:
        enforced = [p for p in policies if p.action == name and not p.dry_run]
        dry = [p for p in policies if p.action == name and p.dry_run]
        if enforced or dry:
            out.append(ActionRules(
                name,
                _rbac(enforced, action, tcp) if enforced else None,
                _rbac(dry, action, tcp) if dry else None,
            ))
    return out


def http_rbac_filters(policies: Sequence[AuthzPolicy]) -> list[hcm_pb2.HttpFilter]:
    out = []
    for entry in action_rules(policies, tcp=False):
        config = http_rbac_pb2.RBAC(shadow_rules_stat_prefix=entry.shadow_prefix)
        if entry.rules is not None:
            config.rules.CopyFrom(entry.rules)
        if entry.shadow is not None:
            config.shadow_rules.CopyFrom(entry.shadow)
        out.append(hcm_pb2.HttpFilter(name=HTTP_RBAC, typed_config=pack(config)))
    return out


def network_rbac_filters(policies: Sequence[AuthzPolicy]) -> list[lc_pb2.Filter]:
    out = []
    for entry in action_rules(policies, tcp=True):
        config = network_rbac_pb2.RBAC(stat_prefix=TCP_STAT_PREFIX,
                                       shadow_rules_stat_prefix=entry.shadow_prefix)
        if entry.rules is not None:
            config.rules.CopyFrom(entry.rules)
        if entry.shadow is not None:
            config.shadow_rules.CopyFrom(entry.shadow)
        out.append(lc_pb2.Filter(name=NETWORK_RBAC, typed_config=pack(config)))
    return out
