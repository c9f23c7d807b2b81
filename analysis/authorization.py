"""AuthorizationPolicies that apply to nothing, or name source namespaces that do not exist.

A policy's ``selector`` picks workloads in its namespace (in the root namespace: in every
namespace); without one it applies to every workload of its namespace. A policy that picks
no workload guards nothing, which for an ALLOW or DENY policy is seldom what was meant.
Policies attached by ``targetRef(s)`` to a Gateway or Service apply to those, not by
selector, and are left out.

A rule's ``source.namespaces`` and ``notNamespaces`` (exact, ``prefix-*``, ``*-suffix`` or
``*``) are compared with the peer's namespace: an entry that matches no namespace never
matches a request, and is usually a typo. Namespaces known are those with a Namespace
object and those any object in the config lives in; namespaces outside the files count as
unknown, hence a warning where Istio reports an error.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pilotfish.analysis.base import Check, Finding, Inputs, IstioMessage, Level, finding
from pilotfish.core.model import labels_match
from pilotfish.core.objects import ConfigObject

_ANALYZER = "authz.AuthorizationPoliciesAnalyzer"
SELECTS_NOTHING = Check(
    "PF0123", "PolicySelectsNoWorkload", Level.WARNING,
    "an AuthorizationPolicy applies to no workload",
    IstioMessage("IST0127", "NoMatchingWorkloadsFound", _ANALYZER),
)
NAMESPACE_UNKNOWN = Check(
    "PF0124", "PolicyNamespaceUnknown", Level.WARNING,
    "an AuthorizationPolicy source namespace matches no namespace",
    # Istio calls it an error; namespaces often have no object among the files analyzed
    # (and discovery reports every analyzer error as it serves), so pilotfish warns.
    IstioMessage("IST0101", "ReferencedResourceNotFound", _ANALYZER),
)


def namespace_matches(pattern: str, namespace: str) -> bool:
    """Istio's string match for namespaces: exact, ``*``, ``prefix*`` or ``*suffix``."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return namespace.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return namespace.endswith(pattern[1:])
    return pattern == namespace


def _pairs(labels: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _selects_nothing(inputs: Inputs, policy: ConfigObject) -> Finding | None:
    spec = policy.spec
    if spec.get("targetRef") or spec.get("targetRefs"):
        return None
    root = policy.namespace == inputs.push.mesh.root_namespace
    selector = {str(k): str(v) for k, v in
                ((spec.get("selector") or {}).get("matchLabels") or {}).items()}
    if not selector and root:
        return None  # mesh-wide: applies to every workload there will be
    workloads = inputs.workload_labels(None if root else policy.namespace)
    if any(labels_match(selector, labels) for labels in workloads):
        return None
    where = "any namespace" if root else f"namespace {policy.namespace}"
    if selector:
        return finding(SELECTS_NOTHING, policy, ("spec", "selector", "matchLabels"),
                       f"selects {_pairs(selector)}, but no Pod, pod template or "
                       f"WorkloadEntry in {where} has these labels: the policy guards "
                       "nothing")
    return finding(SELECTS_NOTHING, policy, ("metadata", "namespace"),
                   f"applies to every workload of namespace {policy.namespace}, and the "
                   "config has no Pod, pod template or WorkloadEntry there: the policy "
                   "guards nothing")


def _unknown_namespaces(policy: ConfigObject, known: frozenset[str]) -> Iterator[Finding]:
    for i, rule in enumerate(policy.spec.get("rules") or ()):
        if not isinstance(rule, Mapping):
            continue
        for j, peer in enumerate(rule.get("from") or ()):
            source = peer.get("source") if isinstance(peer, Mapping) else None
            if not isinstance(source, Mapping):
                continue
            for field in ("namespaces", "notNamespaces"):
                for k, raw in enumerate(source.get(field) or ()):
                    pattern = str(raw)
                    if any(namespace_matches(pattern, ns) for ns in known):
                        continue
                    yield finding(NAMESPACE_UNKNOWN, policy,
                                  ("spec", "rules", i, "from", j, "source", field, k),
                                  f"{pattern!r} matches no namespace in the config (known: "
                                  f"{_some(known)}): this entry never matches a request")


def _some(names: frozenset[str], shown: int = 8) -> str:
    listed = sorted(names)
    more = f" and {len(listed) - shown} more" if len(listed) > shown else ""
    return (", ".join(listed[:shown]) or "none") + more


def analyze(inputs: Inputs) -> Iterator[Finding]:
    policies = inputs.push.objects("AuthorizationPolicy")
    if not policies:
        return
    known = inputs.namespace_names()
    for policy in policies:
        if (nothing := _selects_nothing(inputs, policy)) is not None:
            yield nothing
        yield from _unknown_namespaces(policy, known)
