"""DestinationRules that apply to nothing: a host no service has, subsets that select none
of the host's workloads.

A subset becomes a cluster with no endpoints: routes to it answer 503 (``no healthy
upstream``). The workloads of a host are what its selector picks in its namespace — Pods,
pod templates of workload controllers (what a cluster would create from the manifests)
and WorkloadEntries — or, for a ServiceEntry, its inline endpoints. A pod's endpoints carry
more labels than the pod: its Node's locality and name (`endpoint_labels`), which subsets
may select on (one subset per zone).

A DestinationRule whose host is no Service or ServiceEntry visible where the rule applies
configures nothing; usually a misspelt or short name resolved in the wrong namespace.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from pilotfish.analysis.base import (
    Check,
    Finding,
    Inputs,
    IstioMessage,
    Level,
    PodTemplate,
    finding,
)
from pilotfish.analysis.destinations import lookup, rejected_service
from pilotfish.core.model import Service, labels_match, locality_of, resolve_host, workload_locality
from pilotfish.core.model import endpoint_labels as model_endpoint_labels
from pilotfish.core.objects import ConfigObject

_ANALYZER = "destinationrule.SubsetSelectPodAnalyzer"
SUBSET_SELECTS_NOTHING = Check(
    "PF0103", "SubsetSelectsNoWorkload", Level.WARNING,
    "a DestinationRule subset's labels match no workload of its host",
    # Istio calls it an error; pods often live outside the files analyzed (and discovery
    # reports every analyzer error as it serves), so pilotfish warns.
    IstioMessage("IST0173", "DestinationRuleSubsetNotSelectPods", _ANALYZER),
)
RULE_HOST_UNKNOWN = Check(
    "PF0109", "DestinationRuleHostUnknown", Level.WARNING,
    "a DestinationRule's host is no Service or ServiceEntry visible where it applies",
    IstioMessage("IST0174", "UnknownDestinationRuleHost", _ANALYZER),
)

def endpoint_labels(pod: PodTemplate, nodes: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The labels a pod's endpoints carry, as discovery's registry gives them (Istio's
    AugmentLabels): its own, with its Node's locality and name. (Istio adds
    topology.istio.io/cluster and topology.istio.io/network too, from multicluster settings
    pilotfish does not have.)"""
    node_name = str(pod.spec.get("nodeName") or "")
    node = nodes.get(node_name)
    locality = workload_locality(pod.labels, locality_of(node) if node is not None else "")
    return model_endpoint_labels(pod.labels, locality, node_name)


def _pairs(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def host_workload_labels(inputs: Inputs, service: Service) -> list[Mapping[str, str]] | None:
    """Labels of every workload behind a service; None when they cannot be known here."""
    if service.selector is not None:
        out: list[Mapping[str, str]] = [
            endpoint_labels(pod, inputs.nodes) for pod in inputs.pods
            if pod.namespace == service.namespace and labels_match(service.selector, pod.labels)
        ]
        out += [w.labels for w in inputs.push.registry.workloads
                if w.kind == "WorkloadEntry" and w.namespace == service.namespace
                and labels_match(service.selector, w.labels)]
        return out
    origin = service.origin
    if origin is None or origin.kind != "ServiceEntry":
        return None  # explicit Endpoints or an ExternalName: no labels to go by
    for obj in inputs.push.objects("ServiceEntry"):
        if obj.key == origin:
            endpoints = obj.spec.get("endpoints")
            if not endpoints:
                return None  # DNS-resolved hosts have no workloads of their own
            return [dict(e.get("labels") or {}) for e in endpoints if isinstance(e, Mapping)]
    return None


def _unknown_host(inputs: Inputs, rule: ConfigObject, raw: str, host: str) -> Finding | None:
    """PF0109 when no namespace the rule applies in sees a service for its host."""
    named = [str(n) for n in rule.spec.get("exportTo") or () if str(n) not in ("*", ".", "~")]
    hidden: tuple[Service, str] | None = None
    for viewer in dict.fromkeys([rule.namespace, *named]):
        service, hidden_here = lookup(inputs, host, viewer)
        if service is not None:
            return None
        if hidden is None and hidden_here is not None:
            hidden = hidden_here, viewer
    if hidden is not None:
        why = f"{hidden[0].hostname} (namespace {hidden[0].namespace}) is not exported to " \
              f"namespace {hidden[1]}"
    elif rejected_service(inputs, host):
        why = "its Service is invalid and was not accepted (see PF0001)"
    else:
        why = "no Service or ServiceEntry defines it"
    shown = f"host {raw!r}" if raw == host else f"host {raw!r} ({host})"
    return finding(RULE_HOST_UNKNOWN, rule, ("spec", "host"),
                   f"{shown} is unknown: {why}; this DestinationRule applies to nothing")


def analyze(inputs: Inputs) -> Iterator[Finding]:
    push = inputs.push
    for obj in push.objects("DestinationRule"):
        raw = str(obj.spec.get("host") or "")
        host = resolve_host(raw, obj.namespace, inputs.domain)
        if raw and (unknown := _unknown_host(inputs, obj, raw, host)) is not None:
            yield unknown
            continue
        service = push.service(host)
        subsets: Sequence[object] = obj.spec.get("subsets") or ()
        if service is None or not subsets:
            continue
        workloads = host_workload_labels(inputs, service)
        if workloads is None:
            continue
        for index, subset in enumerate(subsets):
            if not isinstance(subset, Mapping) or not subset.get("labels"):
                continue
            labels = {str(k): str(v) for k, v in subset["labels"].items()}
            if any(labels_match(labels, w) for w in workloads):
                continue
            if workloads:
                why = f"no workload of {host} has these labels ({len(workloads)} known)"
            else:
                why = f"{host} has no workload at all in this config (no Pod, pod template " \
                      "or WorkloadEntry matches its selector)"
            yield finding(
                SUBSET_SELECTS_NOTHING, obj, ("spec", "subsets", index, "labels"),
                f"subset {subset.get('name')!r} selects {_pairs(labels)}, but {why}; "
                "requests routed to it get 503",
            )
