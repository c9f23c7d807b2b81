"""What analyzers read and what they report.

An analyzer is a pure function from `Inputs` (the push context discovery would build, plus
the pod specs found in the files) to `Finding`s. Every finding carries a stable
code, a level, and the file, line, object and field it is about, so that editors and CI can
point at the line to change; and, where Istio's analyzers report the same problem, the code
``istioctl analyze`` gives it.

`Inputs` also holds the lookups several checks share, built once per analysis on first use
(pods by label and by selector, workloads by namespace, the Services selecting a pod, the
namespaces the config shows), so that discovery can run every check on each push.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from pilotfish.core.model import Service, host_matches, labels_match
from pilotfish.core.objects import ConfigKey, ConfigObject, FieldPath, format_path
from pilotfish.core.push_context import PushContext

if TYPE_CHECKING:
    from pilotfish.analysis.localhost import PodSockets
class Level(enum.Enum):
    ERROR = "error"  # traffic will not flow as written
    WARNING = "warning"  # it probably will not do what was meant
    INFO = "info"  # works, but relies on a default worth knowing

    @property
    def rank(self) -> int:
        return {Level.ERROR: 0, Level.WARNING: 1, Level.INFO: 2}[self]


@attrs.frozen
class IstioMessage:
    """The message ``istioctl analyze`` gives for a problem (Istio's msg/messages.yaml),
    and which of Istio's analyzers gives it: IST0101 comes from several."""

    code: str  # "IST0101"
    name: str  # "ReferencedResourceNotFound"
    analyzer: str  # "virtualservice.DestinationHostAnalyzer"
    # Other analyzers of Istio's that give the same message for the same problem (a Gateway
    # selecting no pod is reported by its port and its secret analyzers alike).
    also_from: tuple[str, ...] = ()

    @property
    def analyzers(self) -> tuple[str, ...]:
        return (self.analyzer, *self.also_from)


@attrs.frozen
class Check:
    """One kind of finding: its code, name and level (the catalog is in ``__init__``), and
    Istio's message for the same problem, when Istio's analyzers look for it."""

    code: str
    name: str
    level: Level
    summary: str
    istio: IstioMessage | None = None


@attrs.frozen
class Finding:
    check: Check
    message: str
    file: str
    line: int
    key: ConfigKey | None = None
    field: str = ""
    level: Level | None = None  # overrides the check's level where the context decides
    istio_message: IstioMessage | None = None  # overrides the check's, likewise

    @property
    def severity(self) -> Level:
        return self.level or self.check.level

    @property
    def istio(self) -> IstioMessage | None:
        return self.istio_message or self.check.istio

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        code = f"{self.check.code} [{self.istio.code}]" if self.istio else self.check.code
        what = ""
        if self.key is not None:
            ns = f"{self.key.namespace}/" if self.key.namespace else ""
            what = f" {self.key.kind} {ns}{self.key.name}:"
        field = f" {self.field}:" if self.field else ""
        return f"{where}: {self.severity.value} {code}{what}{field} {self.message}"

    def as_dict(self) -> dict[str, Any]:
        key = self.key
        istio = self.istio
        return {
            "code": self.check.code,
            "name": self.check.name,
            "istio_code": istio.code if istio else "",
            "istio_name": istio.name if istio else "",
            "level": self.severity.value,
            "file": self.file,
            "line": self.line,
            "kind": key.kind if key else "",
            "namespace": key.namespace if key else "",
            "object": key.name if key else "",
            "field": self.field,
            "message": self.message,
        }


def finding(
    check: Check, obj: ConfigObject, path: FieldPath, message: str, level: Level | None = None
) -> Finding:
    """A finding about one field of one object, placed on that field's line."""
    return Finding(check, message, obj.source.file, obj.line_of(path), obj.key,
                   format_path(path), level)


# Workload controllers whose pod template analyze reads, and where the template sits.
TEMPLATE_PATHS: Mapping[str, FieldPath] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


CONTROLLER_GROUPS = frozenset({"", "apps", "batch", "extensions"})


@attrs.frozen
class PodTemplate:
    """A pod as written: a Pod object, or the pod template of a workload controller.

    Users run analyze on the manifests they apply, where pods come from Deployments; the
    pods those create carry the template's labels and spec, so checks about pods read
    templates too (pilotfish's own registry knows only Pods and WorkloadEntries).
    """

    obj: ConfigObject
    path: FieldPath  # where the template is: () for a Pod
    labels: Mapping[str, str]
    spec: Mapping[str, Any]

    @property
    def namespace(self) -> str:
        return self.obj.namespace

    @property
    def spec_path(self) -> FieldPath:
        return (*self.path, "spec")


def _dig(body: Mapping[str, Any], path: FieldPath) -> Any:
    node: Any = body
    for part in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(str(part))
    return node


def pod_templates(objects: Iterable[ConfigObject]) -> list[PodTemplate]:
    out = []
    for obj in objects:
        if obj.kind == "Pod" and obj.group == "":
            out.append(PodTemplate(obj, (), dict(obj.labels), obj.spec))
            continue
        path = TEMPLATE_PATHS.get(obj.kind) if obj.group in CONTROLLER_GROUPS else None
        template = _dig(obj.body, path) if path else None
        if path is None or not isinstance(template, Mapping):
            continue
        metadata = template.get("metadata") or {}
        spec = template.get("spec") or {}
        out.append(PodTemplate(obj, path, dict(metadata.get("labels") or {}),
                               spec if isinstance(spec, Mapping) else {}))
    return out


def node_labels(objects: Iterable[ConfigObject]) -> dict[str, dict[str, str]]:
    """The labels of the Nodes among ``objects``, by node name."""
    return {obj.name: {str(k): str(v) for k, v in obj.labels.items()}
            for obj in objects if obj.kind == "Node" and obj.group == ""}


@attrs.frozen
class Inputs:
    """Everything analyzers look at: discovery's view, and the pods as written."""

    push: PushContext
    pods: tuple[PodTemplate, ...] = ()
    # Listening sockets of running pods, when known (``--listeners``, or the local node).
    sockets: tuple[PodSockets, ...] = ()
    # Objects the store refused (invalid): a reference to one is explained, not "unknown".
    rejected: frozenset[ConfigKey] = frozenset()
    # The labels of the Nodes in the config, by node name: a pod's endpoints carry its
    # Node's locality, which subsets may select on (`subsets.endpoint_labels`).
    nodes: Mapping[str, Mapping[str, str]] = attrs.field(factory=dict)
    # The wall-clock time (seconds since the epoch) to judge certificates' validity by;
    # None: expiry is not checked.
    now: float | None = None

    @property
    def domain(self) -> str:
        return self.push.mesh.domain

    def selected_pods(self, selector: Mapping[str, str],
                      namespace: str | None = None) -> list[PodTemplate]:
        """The pods (and pod templates) a workload selector picks, in one namespace or, for
        ``None``, in all (an Istio Gateway's selector reaches across namespaces). An empty
        selector picks nothing here: callers decide what an empty one means."""
        if not selector:
            return []
        key = (frozenset(selector.items()), namespace)
        found = self._selected.get(key)
        if found is None:  # remembered: Gateways compare their selectors pairwise
            by_label = self._pods_by_label
            # Only pods carrying the rarest of the selector's labels can match.
            fewest = min((by_label.get(pair, []) for pair in selector.items()), key=len)
            found = self._selected[key] = [
                pod for pod in fewest if (namespace is None or pod.namespace == namespace)
                and labels_match(selector, pod.labels)]
        return found

    def selected_pod_ids(self, selector: Mapping[str, str]) -> frozenset[int]:
        """The pods a selector picks in any namespace, as a set to intersect."""
        key = frozenset(selector.items())
        found = self._selected_ids.get(key)
        if found is None:
            found = self._selected_ids[key] = frozenset(map(id, self.selected_pods(selector)))
        return found

    @functools.cached_property
    def _selected_ids(self) -> dict[frozenset[tuple[str, str]], frozenset[int]]:
        return {}

    @functools.cached_property
    def _selected(self) -> dict[tuple[frozenset[tuple[str, str]], str | None],
                                list[PodTemplate]]:
        return {}

    @functools.cached_property
    def _pods_by_label(self) -> Mapping[tuple[str, str], list[PodTemplate]]:
        out: dict[tuple[str, str], list[PodTemplate]] = {}
        for pod in self.pods:
            for pair in pod.labels.items():
                out.setdefault(pair, []).append(pod)
        return out

    @functools.cached_property
    def _workloads_by_namespace(self) -> Mapping[str, list[Mapping[str, str]]]:
        out: dict[str, list[Mapping[str, str]]] = {}
        for pod in self.pods:
            out.setdefault(pod.namespace, []).append(pod.labels)
        for w in self.push.registry.workloads:
            if w.kind == "WorkloadEntry":
                out.setdefault(w.namespace, []).append(w.labels)
        return out

    def workload_labels(self, namespace: str | None = None) -> list[Mapping[str, str]]:
        """The labels of every workload known, in one namespace or (``None``) in all: pods,
        pod templates and WorkloadEntries (what a workload selector can pick). Indexed
        once per analysis: every policy of a namespace asks."""
        by_namespace = self._workloads_by_namespace
        if namespace is not None:
            return by_namespace.get(namespace, [])
        return [labels for found in by_namespace.values() for labels in found]

    def namespace_names(self) -> frozenset[str]:
        """Namespaces the config shows to exist: Namespace objects, and the namespaces of
        the objects and pods in it."""
        return frozenset([*self.push.namespaces,
                          *(o.namespace for objs in self.push.objects_by_kind.values()
                            for o in objs if o.namespace),
                          *(pod.namespace for pod in self.pods)])

    def services_of(self, pod: PodTemplate) -> list[Service]:
        """The Kubernetes Services whose selector picks a pod: those of its namespace."""
        return [s for s in self._selecting_services.get(pod.namespace, ())
                if labels_match(s.selector, pod.labels)]

    @functools.cached_property
    def _selecting_services(self) -> Mapping[str, list[Service]]:
        """The Kubernetes Services with a selector, by namespace."""
        out: dict[str, list[Service]] = {}
        for s in self.push.services.values():
            if s.selector and s.origin is not None and s.origin.kind == "Service":
                out.setdefault(s.namespace, []).append(s)
        return out


def hosts_overlap(a: str, b: str) -> bool:
    """Could one name be matched by both host patterns (``*.example.com`` and
    ``a.example.com``, or ``*`` and anything)?"""
    return host_matches(a, b) or host_matches(b, a)


def split_server_host(entry: str, owner: str) -> tuple[str, str]:
    """A Gateway server's ``hosts`` entry as (namespace, dns name): ``ns/host`` admits
    VirtualServices of that namespace only, ``./host`` those of the Gateway's own, and a bare
    host or ``*/host`` those of any (namespace ``*``)."""
    namespace, sep, host = entry.partition("/")
    if not sep:
        return "*", entry
    return (owner if namespace == "." else namespace), host
