"""Sidecar checks on cases Istio's test data does not hold: pod templates (and their
annotations) as the selected workloads, a namespace labelled ambient whose injection label
keeps sidecars, a pod labelled ambient in a sidecar namespace, and which Sidecar a pod
takes when two select it."""

from __future__ import annotations

from pathlib import Path

from pilotfish.analysis.base import Finding
from pilotfish.cli import analyze
from pilotfish.core import meshconfig


def sidecar(name: str, namespace: str, selector: str = "") -> str:
    select = f"  workloadSelector: {{labels: {selector}}}\n" if selector else ""
    return f"""\
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: {name}, namespace: {namespace}}}
spec:
{select}  egress: [{{hosts: ["./*"]}}]
"""


CONFIG = """\
apiVersion: v1
kind: Namespace
metadata: {name: mixed, labels: {istio.io/dataplane-mode: ambient, istio.io/rev: canary}}
---
apiVersion: v1
kind: Namespace
metadata: {name: amb, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {ambient.istio.io/redirection: enabled}
    spec: {containers: [{name: web, image: web}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: shop, labels: {app: db, istio.io/dataplane-mode: ambient}}
spec: {containers: [{name: db, image: db}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api-0, namespace: shop, labels: {app: api, tier: back}}
spec: {containers: [{name: api, image: api}]}
"""


def run(tmp_path: Path, config: str) -> list[Finding]:
    (tmp_path / "config.yaml").write_text(config)
    inputs, problems = analyze.load(tmp_path, meshconfig.MeshConfig())
    assert not [p for p in problems if p.severity.value == "error"], problems
    return [f for f in analyze.run(inputs) if f.check.code in
            ("PF0128", "PF0129", "PF0130", "PF0131")]


def test_ambient_workloads_and_namespaces(tmp_path: Path) -> None:
    config = CONFIG + sidecar("web", "shop", "{app: web}") + sidecar("db", "shop", "{app: db}") \
        + sidecar("mixed", "mixed") + sidecar("amb", "amb")
    found = [(str(f.key), f.check.code) for f in run(tmp_path, config)]
    # The Deployment's template is redirected; db-0 is labelled ambient; namespace "amb" is
    # ambient; "mixed" injects sidecars (istio.io/rev) despite its ambient label.
    assert sorted(found) == [("Sidecar/amb/amb", "PF0131"), ("Sidecar/shop/db", "PF0131"),
                             ("Sidecar/shop/web", "PF0131")]


def test_the_pod_takes_the_sidecar_read_first(tmp_path: Path) -> None:
    config = CONFIG + sidecar("by-app", "shop", "{app: api}") \
        + sidecar("by-tier", "shop", "{tier: back}") + sidecar("none", "shop", "{tier: front}")
    found = run(tmp_path, config)
    assert [(f.key.name if f.key else "", f.check.code) for f in found] == [
        ("by-app", "PF0129"), ("by-tier", "PF0129"), ("none", "PF0128")]
    first, later = found[0], found[1]
    assert "this one is ignored there" in later.message and "Pod shop/api-0" in later.message
    assert "is the one the pod takes" in first.message
