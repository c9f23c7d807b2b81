"""AuthorizationPolicy checks on cases Istio's test data does not hold: the root namespace
(from the mesh config), WorkloadEntries, targetRef policies, namespaces known only from
the objects in them, and the forms a namespace pattern takes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilotfish.analysis.authorization import namespace_matches
from pilotfish.analysis.base import Finding
from pilotfish.cli import analyze
from pilotfish.core import meshconfig

WORKLOADS = """\
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, labels: {app: web}}
spec: {containers: [{name: web, image: web}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm, namespace: vms}
spec: {address: 10.0.0.5, labels: {app: legacy}}
"""


def policy(name: str, namespace: str, spec: str) -> str:
    return f"""\
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {namespace}}}
spec: {spec}
"""


def run(tmp_path: Path, config: str, root: str = "istio-system") -> list[Finding]:
    (tmp_path / "config.yaml").write_text(config)
    mesh = meshconfig.from_dict({"mesh": {"rootNamespace": root}})
    inputs, _ = analyze.load(tmp_path, mesh)
    return [f for f in analyze.run(inputs) if f.check.code in ("PF0123", "PF0124")]


def test_which_policies_apply_to_nothing(tmp_path: Path) -> None:
    config = WORKLOADS + "".join([
        # In the root namespace a selector reaches every namespace: web-0 is in shop.
        policy("mesh-web", "mesh-root", "{selector: {matchLabels: {app: web}}}"),
        policy("mesh-none", "mesh-root", "{selector: {matchLabels: {app: none}}}"),
        policy("mesh-all", "mesh-root", "{}"),
        # A WorkloadEntry is a workload too.
        policy("vm", "vms", "{selector: {matchLabels: {app: legacy}}}"),
        # Attached to a Gateway by targetRef: not by selector.
        policy("edge", "empty", "{targetRefs: [{group: gateway.networking.k8s.io, "
                                "kind: Gateway, name: edge}]}"),
        policy("nobody", "empty", "{}"),
        # istio-system is no root namespace in this mesh.
        policy("system", "istio-system", "{selector: {matchLabels: {app: web}}}"),
    ])
    found = run(tmp_path, config, root="mesh-root")
    assert [(str(f.key), f.field) for f in found] == [
        ("AuthorizationPolicy/mesh-root/mesh-none", "spec.selector.matchLabels"),
        ("AuthorizationPolicy/empty/nobody", "metadata.namespace"),
        ("AuthorizationPolicy/istio-system/system", "spec.selector.matchLabels"),
    ]
    assert "in any namespace" in found[0].message
    assert "namespace istio-system" in found[2].message


def test_source_namespaces_known_from_objects_in_them(tmp_path: Path) -> None:
    rule = "{rules: [{from: [{source: {namespaces: [vms, 'sh*', '*ms', nowhere], " \
           "notNamespaces: ['prod-*']}}]}]}"
    found = run(tmp_path, WORKLOADS + policy("p", "shop", rule))
    # vms and shop have no Namespace object, but objects live there.
    assert [f.field for f in found] == [
        "spec.rules[0].from[0].source.namespaces[3]",
        "spec.rules[0].from[0].source.notNamespaces[0]",
    ]
    assert "'nowhere' matches no namespace" in found[0].message
    assert "known: shop, vms" in found[0].message


@pytest.mark.parametrize(("pattern", "namespace", "matches"), [
    ("*", "any", True), ("prod-*", "prod-eu", True), ("prod-*", "preprod", False),
    ("*-test", "web-test", True), ("*-test", "test-web", False), ("shop", "shop", True),
    ("shop", "shop2", False),
])
def test_namespace_patterns(pattern: str, namespace: str, matches: bool) -> None:
    assert namespace_matches(pattern, namespace) is matches
