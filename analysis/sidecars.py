"""Sidecar resources that do not apply as written: a selector that picks no pod, two
Sidecars for one pod, two namespace-wide Sidecars, and Sidecars for ambient workloads.

A proxy takes one Sidecar (``PushContext.sidecar_scope``): the first in its namespace whose
``workloadSelector`` matches it, else the first of its namespace without a selector, else
the root namespace's. "First" is the order the config was read (oldest first), so when two
match one pod, or a namespace has two without a selector, all but one are ignored there
and which one wins is an accident. A pod in ambient mode has no sidecar at all, so a
Sidecar for it, or for a namespace in ambient mode, changes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pilotfish.analysis.base import (
    Check,
    Finding,
    Inputs,
    IstioMessage,
    Level,
    PodTemplate,
    finding,
)
from pilotfish.core.ambient.enrollment import DATAPLANE_MODE_LABEL, in_ambient, redirected
from pilotfish.core.objects import ConfigObject

_ANALYZER = "sidecar.SelectorAnalyzer"
SELECTS_NOTHING = Check(
    "PF0128", "SidecarSelectsNoWorkload", Level.WARNING,
    "a Sidecar's workloadSelector picks no workload of its namespace",
    # Istio calls it an error; pods often live outside the files analyzed (and discovery
    # reports every analyzer error as it serves), so pilotfish warns, as for PF0103.
    IstioMessage("IST0101", "ReferencedResourceNotFound", _ANALYZER),
)
CONFLICTING = Check(
    "PF0129", "ConflictingSidecars", Level.ERROR,
    "two Sidecars select the same pod",
    IstioMessage("IST0110", "ConflictingSidecarWorkloadSelectors", _ANALYZER),
)
SEVERAL_DEFAULTS = Check(
    "PF0130", "SeveralNamespaceSidecars", Level.ERROR,
    "a namespace has several Sidecars without workloadSelector",
    IstioMessage("IST0111", "MultipleSidecarsWithoutWorkloadSelectors", _ANALYZER),
)
FOR_AMBIENT = Check(
    "PF0131", "SidecarForAmbient", Level.WARNING,
    "a Sidecar applies to an ambient namespace or to ambient pods only",
    IstioMessage("IST0167", "IneffectivePolicy", _ANALYZER),
)


def _selector(sidecar: ConfigObject) -> Mapping[str, Any]:
    return (sidecar.spec.get("workloadSelector") or {}).get("labels") or {}


def _annotations(pod: PodTemplate) -> Mapping[str, str]:
    if not pod.path:
        return pod.obj.annotations
    node: Any = pod.obj.body
    for part in pod.path:
        node = node.get(str(part)) if isinstance(node, Mapping) else None
    metadata = node.get("metadata") if isinstance(node, Mapping) else None
    return (metadata or {}).get("annotations") or {}


def _ambient(inputs: Inputs, pod: PodTemplate) -> bool:
    annotations = _annotations(pod)
    namespace = inputs.push.namespaces.get(pod.namespace, {})
    return redirected(annotations) or in_ambient(pod.labels, annotations, namespace, pod.spec)


def _name(pod: PodTemplate) -> str:
    return f"{pod.obj.kind} {pod.namespace}/{pod.obj.name}"


def _by_namespace(inputs: Inputs) -> Iterator[tuple[str, list[ConfigObject]]]:
    grouped: dict[str, list[ConfigObject]] = defaultdict(list)
    for sidecar in inputs.push.sidecars:
        grouped[sidecar.namespace].append(sidecar)
    yield from grouped.items()


def _scoped(inputs: Inputs, sidecars: Sequence[ConfigObject]) -> Iterator[Finding]:
    chosen: dict[int, ConfigObject] = {}  # id(pod) → the Sidecar that pod takes
    for sidecar in sidecars:
        selector = _selector(sidecar)
        pods = inputs.selected_pods(selector, sidecar.namespace)
        path = ("spec", "workloadSelector", "labels")
        if not pods:
            pairs = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
            yield finding(SELECTS_NOTHING, sidecar, path,
                          f"selects {pairs}, but no Pod or pod template of namespace "
                          f"{sidecar.namespace} has these labels: the Sidecar applies to "
                          "nothing")
            continue
        if all(_ambient(inputs, pod) for pod in pods):
            yield finding(FOR_AMBIENT, sidecar, path,
                          f"every pod it selects ({_name(pods[0])}"
                          f"{f' and {len(pods) - 1} more' if len(pods) > 1 else ''}) is in "
                          "ambient mode and has no sidecar: the Sidecar changes nothing")
            continue
        taken = [(pod, chosen[id(pod)]) for pod in pods if id(pod) in chosen]
        for pod in pods:
            chosen.setdefault(id(pod), sidecar)
        if taken:
            pod, first = taken[0]
            yield finding(CONFLICTING, sidecar, path,
                          f"{_name(pod)} is also selected by Sidecar {first.namespace}/"
                          f"{first.name}, read before it: that pod takes the other one, and "
                          "this one is ignored there")
            yield finding(CONFLICTING, first, ("spec", "workloadSelector", "labels"),
                          f"{_name(pod)} is also selected by Sidecar {sidecar.namespace}/"
                          f"{sidecar.name}: this one, read first, is the one the pod takes")


def ambient_namespace(labels: Mapping[str, str]) -> bool:
    """Do a namespace's pods run without sidecars, in ambient mode? Its label says so, and
    no injection label (``istio-injection: enabled``, ``istio.io/rev``) gives them sidecars
    anyway."""
    injected = labels.get("istio-injection") == "enabled" or "istio.io/rev" in labels
    return labels.get(DATAPLANE_MODE_LABEL) == "ambient" and not injected


def _defaults(inputs: Inputs, namespace: str, sidecars: Sequence[ConfigObject]
              ) -> Iterator[Finding]:
    if ambient_namespace(inputs.push.namespaces.get(namespace, {})):
        for sidecar in sidecars:
            yield finding(FOR_AMBIENT, sidecar, ("metadata", "namespace"),
                          f"namespace {namespace} is in ambient mode "
                          f"({DATAPLANE_MODE_LABEL}: ambient): its pods have no sidecar, so "
                          "the Sidecar changes nothing")
        return
    if len(sidecars) < 2:
        return
    first = sidecars[0]
    for sidecar in sidecars:
        others = ", ".join(s.name for s in sidecars if s is not sidecar)
        effect = ("it is read first and applies" if sidecar is first else
                  f"only {first.name}, read first, applies")
        yield finding(SEVERAL_DEFAULTS, sidecar, ("metadata", "name"),
                      f"namespace {namespace} also has Sidecar {others} without "
                      f"workloadSelector: {effect}")


def analyze(inputs: Inputs) -> Iterator[Finding]:
    for namespace, sidecars in _by_namespace(inputs):
        yield from _scoped(inputs, [s for s in sidecars if _selector(s)])
        yield from _defaults(inputs, namespace, [s for s in sidecars if not _selector(s)])
