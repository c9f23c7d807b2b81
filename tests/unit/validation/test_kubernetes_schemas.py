"""The core kinds discovery reads are checked against Kubernetes' own OpenAPI schemas.

Each wrongly typed variant below used to pass validation and then break every push; each is
now refused naming the field, and the valid forms still pass.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pilotfish.core.yamlload import load_text
from pilotfish.validation import validate

ROOT = Path(__file__).resolve().parents[3]

SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}}
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "web"}},
       "spec": {"serviceAccountName": "web", "containers": [
           {"name": "app", "ports": [{"containerPort": 8080}]}]},
       "status": {"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}]}}
ENDPOINTS = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
             "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}
SLICE = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "web-1"}, "addressType": "IPv4",
         "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 80}]}
NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop",
                                                                    "labels": {"a": "b"}}}
ACCOUNT = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web"},
           "automountServiceAccountToken": True}
VALID = [SERVICE, POD, ENDPOINTS, SLICE, NAMESPACE, ACCOUNT]


def variant(body: dict, path: str, value: object) -> dict:
    """A deep copy of ``body`` with the field at ``path`` (dots, [n] for items) replaced."""
    out = yaml.safe_load(yaml.safe_dump(body))
    node = out
    parts = path.replace("[", ".[").split(".")
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    last = parts[-1]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value
    return out


def problems(body: dict) -> list[str]:
    (obj,), errors = load_text(yaml.safe_dump(body), "x.yaml")
    assert not errors
    return [f"{p.field}: {p.message}" for p in validate(obj) if p.severity == "error"]


WRONG = [
    (SERVICE, "spec", "web"),
    (SERVICE, "spec.ports", {"http": 80}),
    (SERVICE, "spec.ports", "80"),
    (SERVICE, "spec.ports", 80),
    (SERVICE, "spec.ports[0]", "http"),
    (SERVICE, "spec.ports[0].port", "eighty"),
    (SERVICE, "spec.ports[0].name", ["http"]),
    (SERVICE, "spec.selector", ["app", "web"]),
    (SERVICE, "spec.selector.app", {"x": 1}),
    (SERVICE, "spec.clusterIP", ["10.96.0.1"]),
    (SERVICE, "metadata.labels", ["a"]),
    (SERVICE, "metadata.annotations", "a=b"),
    (POD, "metadata.labels", ["app", "web"]),
    (POD, "spec.containers", "app"),
    (POD, "spec.containers[0]", "app"),
    (POD, "spec.containers[0].ports", {"http": 8080}),
    (POD, "spec.containers[0].ports[0].containerPort", "8080x"),
    (POD, "spec.serviceAccountName", ["web"]),
    (POD, "status", ["Running"]),
    (POD, "status.podIP", ["10.0.0.1"]),
    (POD, "status.podIPs", "10.0.0.1"),
    (ENDPOINTS, "subsets", {"addresses": []}),
    (ENDPOINTS, "subsets[0].addresses", "10.0.0.1"),
    (ENDPOINTS, "subsets[0].addresses[0].ip", ["10.0.0.1"]),
    (ENDPOINTS, "subsets[0].ports[0].port", "http"),
    (SLICE, "endpoints", {"a": 1}),
    (SLICE, "endpoints[0].addresses", "10.0.0.1"),
    (SLICE, "ports", 80),
    (SLICE, "addressType", ["IPv4"]),
    (NAMESPACE, "metadata.labels", ["a", "b"]),
    (NAMESPACE, "spec", "x"),
    (ACCOUNT, "automountServiceAccountToken", "yes"),
    (ACCOUNT, "secrets", "web-token"),
]


@pytest.mark.parametrize("body", VALID, ids=lambda b: b["kind"])
def test_the_valid_forms_pass(body: dict) -> None:
    assert problems(body) == []


@pytest.mark.parametrize(("body", "path", "value"), WRONG,
                         ids=[f"{b['kind']}.{p}={type(v).__name__}" for b, p, v in WRONG])
def test_a_wrongly_typed_field_is_refused_naming_it(body: dict, path: str, value: object):
    found = problems(variant(body, path, value))
    assert found, f"{body['kind']} with {path}={value!r} was accepted"
    assert any(f.split(":")[0].startswith(path) or path.startswith(f.split(":")[0])
               for f in found), found


def test_unknown_fields_of_core_kinds_are_refused_too() -> None:
    found = problems(variant(SERVICE, "spec.ports[0].targetPrt", 8080))
    assert found == ['spec.ports[0].targetPrt: unknown field "spec.ports[0].targetPrt"']


def test_the_committed_kubernetes_schemas_match_a_fresh_generation() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_kube_schemas.py"),
                           "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
