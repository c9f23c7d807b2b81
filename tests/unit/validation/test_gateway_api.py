"""Gateway API kinds are validated against their CRDs' schemas and CEL rules, with the
API server's defaulting first; the conformance suite's manifests all pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilotfish.core.yamlload import load_text
from pilotfish.validation import validate

GW = "apiVersion: gateway.networking.k8s.io/v1\n"


def errors(text: str) -> list[str]:
    objects, problems = load_text(text, "gw.yaml")
    assert not problems
    return [e.message for o in objects for e in validate(o) if e.severity == "error"]


def test_a_route_with_two_rules_of_one_name_is_refused_by_its_cel_rule():
    route = GW + """kind: HTTPRoute
metadata: {name: r, namespace: shop}
spec:
  parentRefs: [{name: gw}]
  rules:
  - {name: one, backendRefs: [{name: web, port: 80}]}
  - {name: one, backendRefs: [{name: web, port: 80}]}
  - {backendRefs: [{name: web, port: 80}]}
"""
    assert errors(route) == ['Invalid value: "array": Rule name must be unique '
                             'within the route']
    assert errors(route.replace("{name: one, backendRefs", "{name: two, backendRefs", 1)) == []


def test_defaults_apply_before_the_rules_as_the_api_server_applies_them():
    # parentRefs' group and kind default to the Gateway's; the uniqueness rule reads them.
    twice = GW + """kind: HTTPRoute
metadata: {name: r, namespace: shop}
spec:
  parentRefs: [{name: gw}, {name: gw}]
"""
    assert errors(twice) == ['Invalid value: "array": sectionName or port must '
                             'be unique when parentRefs includes 2 or more references to the '
                             'same parent']
    assert errors(twice.replace("[{name: gw}, {name: gw}]", "[{name: gw, sectionName: a}, "
                                "{name: gw, sectionName: b}]")) == []


def test_gateway_listeners_are_checked():
    gateway = GW + """kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: http, port: 81, protocol: HTTP}
"""
    assert any("unique" in e or "Duplicate" in e for e in errors(gateway)), errors(gateway)


@pytest.mark.corpus
def test_every_conformance_manifest_is_valid(corpus: Path) -> None:
    root = corpus.parent / "gateway-api" / "conformance"
    bad = []
    for path in [root / "base" / "manifests.yaml", *sorted((root / "tests").glob("*.yaml"))]:
        # The suite fills in its own placeholders before applying.
        text = path.read_text().replace("{GATEWAY_CONTROLLER_NAME}", "istio.io/gateway-controller")
        objects, problems = load_text(text, str(path))
        bad += [str(p) for p in problems]
        bad += [f"{path.name}: {e}" for o in objects for e in validate(o)
                if e.severity == "error"]
    assert bad == []
