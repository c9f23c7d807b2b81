"""AuthorizationPolicy → ztunnel's L4 ``istio.security.Authorization``, as istiod converts it
(``pilot/pkg/serviceregistry/kube/controller/ambient/authorization.go``).

- Only ALLOW and DENY policies without ``targetRef(s)`` are ztunnel's (CUSTOM and AUDIT
  policies, and those aimed at a waypoint or gateway, are not sent).
- Scope: a ``selector`` (even one without labels) → WORKLOAD_SELECTOR (ztunnel learns which
  workloads from ``Workload.authorization_policies``); none → NAMESPACE, or GLOBAL in the root
  namespace.
- A rule becomes clauses that are AND-ed: one of its ``to`` entries (a Match each, OR-ed), one
  of its ``from`` entries, one per ``when`` condition. ``serviceAccounts`` are ``NS/SA``, or
  ``SA`` of the policy's namespace.
- What L4 cannot see: HTTP fields (``hosts``, ``methods``, ``paths``, ``remoteIpBlocks``,
  ``requestPrincipals``, ``when`` keys other than source/destination IP, source namespace and
  principal, destination port). In an ALLOW policy such a rule is dropped: it could never
  match, so it allows nothing (a policy left with no rules allows nothing). In a DENY policy the
  HTTP fields are left out and the rest kept, so the rule matches more connections, never
  fewer — a DENY with ``methods: [GET]`` and no other field denies every connection (a ``when``
  condition on such a key becomes an empty Match, as istiod makes it). istiod ignores
  ``trustDomains`` altogether, so an ALLOW rule with them allows more than written; pilotfish,
  which cannot express them in a Match either, treats them as it treats HTTP fields instead.
- ``dry_run`` comes from the ``istio.io/dry-run`` annotation (istiod leaves it unset, so
  ztunnel would enforce a dry-run policy).
- Values: ``*`` → presence, ``*x`` → suffix, ``x*`` → prefix, else exact; ports that are not
  numbers and addresses that are not IPs or CIDRs are skipped, as istiod skips them.

The ``wds-authorization`` generator serves the converted policies, and what PeerAuthentications
add (`peer_authentication`), to proxies of kind ``ztunnel``, named ``NAMESPACE/NAME``: to a
ztunnel whose node is known (``NODE_NAME``), only those that can apply to a pod on its node
(global ones, those of the pods' namespaces, and those the pods list in their
``authorization_policies``), as ztunnel enforces policy on the inbound side alone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from google.protobuf import empty_pb2

from pilotfish.core.ambient import authorization_pb2 as pb
from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.model import labels_match
from pilotfish.core.objects import ConfigObject
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext
from pilotfish.core.security_policies import DRY_RUN_ANNOTATION
from pilotfish.core.xds import types
from pilotfish.translators.ambient import peer_authentication, waypoint_allow
from pilotfish.translators.ambient.waypoint_scope import waypoint_index

_ACTIONS = {"ALLOW": pb.ALLOW, "DENY": pb.DENY}
_HTTP_OPERATION = ("hosts", "notHosts", "methods", "notMethods", "paths", "notPaths")
_HTTP_SOURCE = ("remoteIpBlocks", "notRemoteIpBlocks", "requestPrincipals",
                "notRequestPrincipals", "trustDomains", "notTrustDomains")


def policy_key(obj: ConfigObject) -> str:
    """The resource's xDS name and its key in ``Workload.authorization_policies``."""
    return f"{obj.namespace}/{obj.name}"


def for_ztunnel(obj: ConfigObject) -> bool:
    """Is the policy one ztunnel enforces (see the module docstring)?"""
    spec = obj.spec
    if spec.get("targetRef") or spec.get("targetRefs"):
        return False
    return str(spec.get("action") or "ALLOW").upper() in _ACTIONS


def has_selector(obj: ConfigObject) -> bool:
    """Does the policy select workloads (a ``selector``, even one with no labels)?"""
    return obj.spec.get("selector") is not None


def selector(obj: ConfigObject) -> Mapping[str, str]:
    """The policy's selector labels (none: every workload of its namespace)."""
    return (obj.spec.get("selector") or {}).get("matchLabels") or {}


def selector_policies(push: PushContext) -> list[ConfigObject]:
    """The policies ztunnel enforces on the workloads a selector picks."""
    return [obj for obj in push.security.authorization_policies
            if for_ztunnel(obj) and has_selector(obj)]


def workload_keys(push: PushContext, policies: Sequence[ConfigObject], namespace: str,
                  labels: Mapping[str, str]) -> list[str]:
    """A workload's ``authorization_policies``: the selector ``policies`` that apply (of its
    namespace or the root's, sorted), then those its PeerAuthentications make."""
    root = push.mesh.root_namespace
    selected = sorted(policy_key(obj) for obj in policies
                      if obj.namespace in (namespace, root)
                      and labels_match(selector(obj), labels))
    return [*selected, *peer_authentication.workload_keys(
        push.security.peer_authentications, root, namespace, labels)]


def string_matches(values: Iterable[str]) -> list[pb.StringMatch]:
    out = []
    for value in values:
        if value == "*":
            out.append(pb.StringMatch(presence=empty_pb2.Empty()))
        elif value.startswith("*"):
            out.append(pb.StringMatch(suffix=value[1:]))
        elif value.endswith("*"):
            out.append(pb.StringMatch(prefix=value[:-1]))
        else:
            out.append(pb.StringMatch(exact=value))
    return out


def ports(values: Iterable[str]) -> list[int]:
    return [int(v) for v in map(str, values) if v.isdigit() and int(v) <= 65535]


def addresses(values: Iterable[str]) -> list[pb.Address]:
    out = []
    for value in map(str, values):
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            continue
        # A bare IP is a host address; a CIDR keeps its address as written, as Go's
        # netip.ParsePrefix does.
        address = ipaddress.ip_address(value.split("/")[0]) if "/" in value else \
            network.network_address
        out.append(pb.Address(address=address.packed, length=network.prefixlen))
    return out


def service_accounts(values: Iterable[str], namespace: str) -> list[pb.ServiceAccountMatch]:
    """``NS/SA``, or ``SA`` of the policy's own ``namespace``."""
    out = []
    for value in map(str, values):
        own, slash, name = value.partition("/")
        out.append(pb.ServiceAccountMatch(namespace=own, serviceAccount=name) if slash
                   else pb.ServiceAccountMatch(namespace=namespace, serviceAccount=value))
    return out


# ``when`` keys ztunnel can see → (Match field, its negation, value conversion).
_WHEN: dict[str, tuple[str, str, Callable[[Iterable[str]], Sequence[Any]]]] = {
    "source.ip": ("source_ips", "not_source_ips", addresses),
    "source.namespace": ("namespaces", "not_namespaces", string_matches),
    "source.principal": ("principals", "not_principals", string_matches),
    "destination.ip": ("destination_ips", "not_destination_ips", addresses),
    "destination.port": ("destination_ports", "not_destination_ports", ports),
}


def _any(raw: Mapping[str, Any], fields: Iterable[str]) -> bool:
    return any(raw.get(name) for name in fields)


def _source_match(source: Mapping[str, Any], namespace: str) -> pb.Match:
    return pb.Match(
        source_ips=addresses(source.get("ipBlocks") or ()),
        not_source_ips=addresses(source.get("notIpBlocks") or ()),
        namespaces=string_matches(source.get("namespaces") or ()),
        not_namespaces=string_matches(source.get("notNamespaces") or ()),
        principals=string_matches(source.get("principals") or ()),
        not_principals=string_matches(source.get("notPrincipals") or ()),
        service_accounts=service_accounts(source.get("serviceAccounts") or (), namespace),
        not_service_accounts=service_accounts(source.get("notServiceAccounts") or (),
                                              namespace),
    )


def convert_rule(rule: Mapping[str, Any], action: int, namespace: str) -> pb.Rule | None:
    """One rule of a policy of ``namespace`` as L4 clauses (operations, sources, then each
    condition, as istiod orders them); None: an ALLOW rule that needs HTTP."""
    sources = [entry.get("source") or {} for entry in rule.get("from") or ()]
    operations = [entry.get("operation") or {} for entry in rule.get("to") or ()]
    conditions = list(rule.get("when") or ())
    needs_http = (any(_any(s, _HTTP_SOURCE) for s in sources)
                  or any(_any(o, _HTTP_OPERATION) for o in operations)
                  or any(str(c.get("key") or "") not in _WHEN for c in conditions))
    if action == pb.ALLOW and needs_http:
        return None
    clauses = []
    if operations:
        clauses.append(pb.Clause(matches=[
            pb.Match(destination_ports=ports(o.get("ports") or ()),
                     not_destination_ports=ports(o.get("notPorts") or ()))
            for o in operations]))
    if sources:
        clauses.append(pb.Clause(matches=[_source_match(s, namespace) for s in sources]))
    for condition in conditions:
        match = pb.Match()
        # A key L4 cannot see (DENY only, by now) leaves the Match empty: it matches all.
        known = _WHEN.get(str(condition.get("key") or ""))
        if known is not None:
            field, negated, convert = known
            getattr(match, field).extend(convert(condition.get("values") or ()))
            getattr(match, negated).extend(convert(condition.get("notValues") or ()))
        clauses.append(pb.Clause(matches=[match]))
    return pb.Rule(clauses=clauses)


def convert(obj: ConfigObject, root_namespace: str) -> pb.Authorization | None:
    """The policy as ztunnel's Authorization, or None when it is not ztunnel's."""
    if not for_ztunnel(obj):
        return None
    action = _ACTIONS[str(obj.spec.get("action") or "ALLOW").upper()]
    if has_selector(obj):
        scope = pb.WORKLOAD_SELECTOR
    else:
        scope = pb.GLOBAL if obj.namespace == root_namespace else pb.NAMESPACE
    rules = (convert_rule(rule, action, obj.namespace) for rule in obj.spec.get("rules") or ())
    return pb.Authorization(
        name=obj.name, namespace=obj.namespace, scope=scope, action=action,
        rules=[rule for rule in rules if rule is not None],
        dry_run=str(obj.annotations.get(DRY_RUN_ANNOTATION, "")).lower() == "true")


def authorizations(policies: Iterable[ConfigObject], root_namespace: str
                   ) -> list[pb.Authorization]:
    """Every AuthorizationPolicy ztunnel enforces, converted, in the order given."""
    converted = (convert(obj, root_namespace) for obj in policies)
    return [policy for policy in converted if policy is not None]


class Authorizations:
    """``istio.security.Authorization`` for ztunnels: every policy converted once per epoch,
    then the ones each node's ztunnel needs."""

    type_url = types.AUTHORIZATION
    proxy_kinds = frozenset({"ztunnel"})
    # Pods: which ones run on a node decides what its ztunnel gets; Gateways and pods: the
    # waypoints' implicit policies.
    depends_on = frozenset({"AuthorizationPolicy", "PeerAuthentication", "Pod", "Gateway",
                            "GatewayClass"})

    def generate(self, push: PushContext, proxy: Proxy, memo: dict[Any, Any]
                 ) -> list[pb.Authorization]:
        if "authorizations" not in memo:
            root = push.mesh.root_namespace
            memo["authorizations"] = [
                *authorizations(push.security.authorization_policies, root),
                *peer_authentication.authorizations(push.security.peer_authentications, root),
                *_implicit(push)]
        built: list[pb.Authorization] = memo["authorizations"]
        node = proxy.scope.node
        if not node:
            return built  # a ztunnel that did not say where it runs gets them all
        policies = memo.setdefault("selector policies", selector_policies(push))
        namespaces, keys = set(), set()
        for pod in push.objects("Pod"):
            if str(pod.spec.get("nodeName") or "") == node:
                namespaces.add(pod.namespace)
                keys.update(workload_keys(push, policies, pod.namespace, pod.labels))
        return [policy for policy in built if policy.scope == pb.GLOBAL
                or (policy.scope == pb.NAMESPACE and policy.namespace in namespaces)
                or f"{policy.namespace}/{policy.name}" in keys
                or policy.name.startswith(waypoint_allow.PREFIX)]


def _implicit(push: PushContext) -> list[pb.Authorization]:
    """The waypoints' implicit policies, when the mesh config asks for them (one per
    waypoint, sent to every ztunnel rather than worked out per node)."""
    if not push.mesh.auto_allow_waypoint_policy:
        return []
    return waypoint_allow.authorizations(waypoint_index(push).values(), waypoint_allow.accounts(
        push.objects("Pod")), push.mesh.trust_domain)


@hookimpl
def pilotfish_xds_generator() -> Authorizations:
    return Authorizations()
