"""Which match entries hide later ones, beyond Istio's test data: URI prefixes and exact
paths, header and label conditions, any-of lists with wildcards, JWT-claim matches (which
never match in pilotfish and so hide nothing), and TCP rules after a catch-all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pilotfish.analysis.shadowed_routes import covers
from pilotfish.cli import analyze
from pilotfish.core import meshconfig

GET = {"exact": "GET"}


@pytest.mark.parametrize(("earlier", "later", "hidden"), [
    ({}, {"uri": {"exact": "/a"}}, True),
    ({"uri": {"prefix": "/"}}, {"method": GET}, True),  # every path starts with /
    ({"uri": {"prefix": "/api"}}, {"uri": {"exact": "/api/v1"}, "method": GET}, True),
    ({"uri": {"prefix": "/api/v1"}}, {"uri": {"prefix": "/api"}}, False),
    ({"uri": {"exact": "/a"}}, {"uri": {"prefix": "/a"}}, False),
    ({"uri": {"regex": "/a.*"}}, {"uri": {"regex": "/a.*"}}, True),
    ({"uri": {"prefix": "/a"}, "ignoreUriCase": True}, {"uri": {"prefix": "/ab"}}, False),
    ({"method": GET}, {"method": {"exact": "POST"}}, False),
    ({"headers": {"x-a": {"exact": "1"}}},
     {"headers": {"x-a": {"exact": "1"}, "x-b": {"exact": "2"}}}, True),
    ({"headers": {"x-a": {"exact": "1"}, "x-b": {"exact": "2"}}},
     {"headers": {"x-a": {"exact": "1"}}}, False),
    ({"sourceLabels": {"app": "a"}}, {"sourceLabels": {"app": "a", "v": "1"}}, True),
    ({"port": 443, "sniHosts": ["*.example.com"]},
     {"port": 443, "sniHosts": ["a.example.com", "b.example.com"]}, True),
    ({"port": 443, "sniHosts": ["a.example.com"]},
     {"port": 443, "sniHosts": ["a.example.com", "b.example.com"]}, False),
    ({"gateways": ["a", "b"]}, {"gateways": ["a"]}, True),
    ({"gateways": ["a"]}, {}, False),
    ({"name": "x", "uri": {"prefix": "/p"}}, {"name": "y", "uri": {"prefix": "/p"}}, True),
])
def test_covers(earlier: dict[str, Any], later: dict[str, Any], hidden: bool) -> None:
    assert covers(earlier, later) is hidden


def test_claim_matches_hide_nothing_and_tcp_after_a_catch_all(tmp_path: Path) -> None:
    (tmp_path / "vs.yaml").write_text("""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web]
  http:
  - match: [{headers: {"@request.auth.claims.group": {exact: admin}}}]
    route: [{destination: {host: web}}]
  - match: [{headers: {"@request.auth.claims.group": {exact: admin}}, uri: {prefix: /a}}]
    route: [{destination: {host: web}}]
  tcp:
  - route: [{destination: {host: web}}]
  - match: [{port: 9000}]
    route: [{destination: {host: web}}]
""")
    inputs, _ = analyze.load(tmp_path, meshconfig.MeshConfig())
    found = [(f.check.code, f.field) for f in analyze.run(inputs)
             if f.check.code in ("PF0125", "PF0126")]
    assert found == [("PF0125", "spec.tcp[1]")]
