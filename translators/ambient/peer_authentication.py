"""PeerAuthentication → ztunnel's L4 Authorizations, as istiod derives them
(``pilot/pkg/serviceregistry/kube/controller/ambient/{policies,authorization}.go``).

ztunnel has no mTLS mode of its own: STRICT is a DENY of connections without a peer identity.

- ``ROOT/istio_converted_static_strict``: that DENY, sent whenever any PeerAuthentication
  exists, and listed in the ``authorization_policies`` of each workload whose effective mode
  (mesh, then namespace, then workload policy; the oldest of each) is STRICT.
- ``NS/converted_peer_authentication_NAME``: a workload policy with ``portLevelMtls`` whose
  ports differ from its effective mode, converted to a DENY per STRICT port (no identity on
  that port) and, for a STRICT policy with PERMISSIVE or DISABLE ports, a DENY of connections
  without identity to any other port (merging the parent's STRICT when the parent is STRICT).
  A workload it selects lists it, and then not the static policy.

The rules below follow istiod line by line, its operator precedence included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import empty_pb2

from pilotfish.core.ambient import authorization_pb2 as pb
from pilotfish.core.model import labels_match
from pilotfish.core.objects import ConfigObject

STATIC_STRICT = "istio_converted_static_strict"
CONVERTED_PREFIX = "converted_peer_authentication_"
STRICT, PERMISSIVE, DISABLE, UNSET = "STRICT", "PERMISSIVE", "DISABLE", "UNSET"


def _mode(setting: Any) -> str:
    mode = str((setting or {}).get("mode") or UNSET).upper() if isinstance(setting, Mapping) \
        else UNSET
    return mode if mode in (STRICT, PERMISSIVE, DISABLE) else UNSET


def _top(obj: ConfigObject | None) -> str | None:
    """A policy's top-level mode; None when there is no policy."""
    return None if obj is None else _mode(obj.spec.get("mtls"))


def _no_identity(port: int | None = None) -> pb.Match:
    """Connections without a peer identity (to ``port``, if given)."""
    return pb.Match(not_principals=[pb.StringMatch(presence=empty_pb2.Empty())],
                    destination_ports=[] if port is None else [port])


def _port_modes(obj: ConfigObject) -> list[tuple[int, str]]:
    """``portLevelMtls`` in port order (istiod walks it so)."""
    raw = obj.spec.get("portLevelMtls") or {}
    return sorted((int(port), _mode(setting)) for port, setting in raw.items()
                  if str(port).isdigit())


def static_strict(root_namespace: str) -> pb.Authorization:
    return pb.Authorization(
        name=STATIC_STRICT, namespace=root_namespace, scope=pb.WORKLOAD_SELECTOR,
        action=pb.DENY, rules=[pb.Rule(clauses=[pb.Clause(matches=[_no_identity()])])])


def _oldest_without_selector(policies: Iterable[ConfigObject], namespace: str
                             ) -> ConfigObject | None:
    # The store gives them oldest first.
    return next((p for p in policies
                 if p.namespace == namespace and p.spec.get("selector") is None), None)


def convert(obj: ConfigObject, policies: Iterable[ConfigObject], root_namespace: str
            ) -> pb.Authorization | None:
    """The converted form of a workload policy with port-level modes, or None."""
    spec = obj.spec
    if obj.namespace == root_namespace or spec.get("selector") is None or \
            not spec.get("portLevelMtls"):
        return None
    policies = list(policies)
    ns_mode = _top(_oldest_without_selector(policies, obj.namespace))
    root_mode = _top(_oldest_without_selector(policies, root_namespace))
    mode = _mode(spec.get("mtls"))
    clauses: list[pb.Clause] = []
    rules: list[pb.Rule] = []
    if mode == STRICT:
        clauses.append(pb.Clause(matches=[_no_identity()]))
    non_strict_port = False
    for port, port_mode in _port_modes(obj):
        if port_mode == STRICT:
            # istiod: strict || (unset && nsStrict) || ((no ns || ns unset) && rootStrict)
            if (mode == STRICT or (mode == UNSET and ns_mode == STRICT)
                    or (ns_mode in (None, UNSET) and root_mode == STRICT)):
                continue  # the parent's STRICT covers it
            rules.append(pb.Rule(clauses=[pb.Clause(matches=[
                _no_identity(port)])]))
        elif port_mode in (PERMISSIVE, DISABLE):
            if mode in (PERMISSIVE, DISABLE):
                continue
            if mode == UNSET and ((ns_mode is not None and ns_mode != STRICT)
                                  or (ns_mode is None and root_mode is not None
                                      and root_mode != STRICT)
                                  or (ns_mode is None and root_mode is None)):
                continue  # not STRICT above it either
            non_strict_port = True
            clauses.append(pb.Clause(matches=[pb.Match(not_destination_ports=[port])]))
    if mode == STRICT and not non_strict_port:
        return None  # plain STRICT: the static policy does it
    if not clauses and not rules:
        return None
    merge_strict = (root_mode == STRICT and ns_mode in (None, UNSET, STRICT)) or \
        ns_mode == STRICT
    if merge_strict and non_strict_port:
        clauses.append(pb.Clause(matches=[_no_identity()]))
    if clauses:
        rules.append(pb.Rule(clauses=clauses))
    return pb.Authorization(name=CONVERTED_PREFIX + obj.name, namespace=obj.namespace,
                            scope=pb.WORKLOAD_SELECTOR, action=pb.DENY, rules=rules)


def authorizations(policies: Iterable[ConfigObject], root_namespace: str
                   ) -> list[pb.Authorization]:
    """What PeerAuthentications add to ztunnel's policies: the static STRICT policy when there
    is any, and each converted workload policy."""
    policies = list(policies)
    if not policies:
        return []
    converted = (convert(obj, policies, root_namespace) for obj in policies)
    return [static_strict(root_namespace), *(c for c in converted if c is not None)]


def workload_keys(policies: Iterable[ConfigObject], root_namespace: str, namespace: str,
                  labels: Mapping[str, str]) -> list[str]:
    """The PeerAuthentication-derived policies a workload lists, sorted (istiod's
    ``convertedSelectorPeerAuthentications``)."""
    mesh = namespace_wide = workload = None
    for obj in policies:  # oldest first: the first of each kind wins
        selector = obj.spec.get("selector")
        match_labels = (selector or {}).get("matchLabels")
        fetched = (obj.namespace == root_namespace and selector is None) or (
            obj.namespace == namespace and labels_match(match_labels, labels))
        if not fetched:
            continue
        if not match_labels:
            if obj.namespace == root_namespace:
                mesh = mesh or obj
            else:
                namespace_wide = namespace_wide or obj
        elif obj.namespace != root_namespace:
            workload = workload or obj
    strict = mesh is not None and _top(mesh) == STRICT
    if namespace_wide is not None and _top(namespace_wide) != UNSET:
        strict = _top(namespace_wide) == STRICT
    port_key = ""
    if workload is not None:
        mode = _mode(workload.spec.get("mtls"))
        if mode == STRICT:
            strict = True
        if mode in (PERMISSIVE, DISABLE):
            strict = False
        port_modes = [m for _, m in _port_modes(workload)] if workload.spec.get(
            "portLevelMtls") else None
        key = f"{workload.namespace}/{CONVERTED_PREFIX}{workload.name}"
        if port_modes is not None:
            if mode == STRICT:
                if any(m in (PERMISSIVE, DISABLE) for m in port_modes):
                    port_key, strict = key, False
            elif mode in (PERMISSIVE, DISABLE):
                if STRICT in port_modes:
                    port_key = key
            elif strict:
                if PERMISSIVE in port_modes:
                    port_key, strict = key, False
            else:
                if STRICT in port_modes:
                    port_key = key
    keys = {f"{root_namespace}/{STATIC_STRICT}"} if strict else set()
    if port_key:
        keys.add(port_key)
    return sorted(keys)
