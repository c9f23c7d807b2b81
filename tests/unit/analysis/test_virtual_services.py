"""VirtualService checks across objects, on cases Istio's test data does not hold: hosts
two sidecar routes claim where exportTo lets both be seen, gateway routes the mesh's
subset split does not reach, and JWT-claim matches pilotfish cannot route on."""

from __future__ import annotations

from pathlib import Path

from pilotfish.analysis.base import Finding, Level
from pilotfish.cli import analyze
from pilotfish.core import meshconfig

SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web.shop.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""


def vs(name: str, namespace: str, hosts: str, extra: str = "",
       route: str = "{destination: {host: web.shop.svc.cluster.local}}") -> str:
    return f"""\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  hosts: {hosts}
{extra}  http: [{{route: [{route}]}}]
"""


def run(tmp_path: Path, config: str) -> list[Finding]:
    (tmp_path / "config.yaml").write_text(config)
    inputs, problems = analyze.load(tmp_path, meshconfig.MeshConfig())
    assert not [p for p in problems if p.severity is Level.ERROR], problems
    return analyze.run(inputs)


def keys(findings: list[Finding], code: str) -> list[str]:
    return [f"{f.key}:{f.field}" for f in findings if f.check.code == code]


def test_mesh_hosts_conflict_only_where_both_are_visible(tmp_path: Path) -> None:
    config = SERVICES + "".join([
        # a and b are both exported to namespace c (named, not their own): a conflict there.
        vs("a", "a", "[web.shop.svc.cluster.local]", "  exportTo: [., c]\n"),
        vs("b", "b", "[web.shop.svc.cluster.local]", "  exportTo: [c]\n"),
        # d is seen in its own namespace only, which nobody else exports to.
        vs("d", "d", "[web.shop.svc.cluster.local]", "  exportTo: [.]\n"),
        # e covers the host by a wildcard; f binds only to a gateway: not the sidecars'.
        vs("e", "e", "['*.example.com']", "  exportTo: [a]\n"),
        vs("e2", "e", "[api.example.com]", "  exportTo: [a]\n"),
        vs("f", "f", "[web.shop.svc.cluster.local]", "  gateways: [istio-system/public]\n"),
    ])
    found = [f for f in run(tmp_path, config) if f.check.code == "PF0117"]
    assert [f"{f.key}:{f.field}" for f in found] == [
        "VirtualService/a/a:spec.hosts[0]", "VirtualService/b/b:spec.hosts[0]",
        "VirtualService/e/e:spec.hosts[0]", "VirtualService/e/e2:spec.hosts[0]"]
    assert "visible in namespace c" in found[0].message and "b/b" in found[0].message
    assert "visible in namespace a" in found[2].message


def test_gateway_routes_without_subset_beside_a_mesh_split(tmp_path: Path) -> None:
    split = "{destination: {host: web, subset: v1}, weight: 90}, " \
            "{destination: {host: web, subset: v2}, weight: 10}"
    config = SERVICES + "".join([
        vs("split", "shop", "[web]", route=split),
        # Bound to the gateway and the sidecars: at the gateway the split is not applied.
        vs("edge", "shop", "[shop.example.com]",
           "  gateways: [istio-system/public, mesh]\n", route="{destination: {host: web}}"),
        # Names the subset itself: it follows the split on purpose.
        vs("pinned", "shop", "[pinned.example.com]", "  gateways: [istio-system/public]\n",
           route="{destination: {host: web, subset: v2}}"),
        # Sidecars only: the mesh route applies to its requests.
        vs("inner", "shop", "[inner.example.com]", route="{destination: {host: web}}"),
    ])
    found = [f for f in run(tmp_path, config) if f.check.code == "PF0118"]
    assert [f"{f.key}:{f.field}" for f in found] == [
        "VirtualService/shop/edge:spec.http[0].route[0].destination.host"]
    assert "shop/split" in found[0].message and "(v1, v2)" in found[0].message
    assert "istio-system/public" in found[0].message and "mesh" not in found[0].message


def test_every_claim_match_is_reported_where_it_is_written(tmp_path: Path) -> None:
    config = SERVICES + """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: claims, namespace: shop}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/public]
  http:
  - match:
    - headers: {x-user: {exact: a}}
    - withoutHeaders: {"@request.auth.claims.group": {exact: admin}}
    route: [{destination: {host: web}}]
  - route: [{destination: {host: web}}]
"""
    found = [f for f in run(tmp_path, config) if f.check.code == "PF0119"]
    assert [f.field for f in found] == [
        "spec.http[0].match[1].withoutHeaders.@request.auth.claims.group"]
    assert found[0].severity is Level.ERROR and found[0].istio is None
    # On the line of the claim's name.
    assert "@request.auth.claims.group" in config.splitlines()[found[0].line - 1]
