"""Locality load balancing: localities from Node and Pod labels, Envoy priorities for
failover (with outlier detection only), failover rules, failoverPriority labels, and
distribute weights, each relative to the proxy's own locality."""

from __future__ import annotations

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import parse_node
from pilotfish.core.xds import types
from pilotfish.core.yamlload import load_text
from pilotfish.testing.generators import generate

REGION, ZONE = "topology.kubernetes.io/region", "topology.kubernetes.io/zone"

PODS = f"""\
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  clusterIP: 10.96.0.10
  selector: {{app: web}}
  ports: [{{name: http, port: 80}}]
---
apiVersion: v1
kind: Node
metadata: {{name: node-a, labels: {{{REGION}: us-east, {ZONE}: us-east-1a}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: a, namespace: shop, labels: {{app: web, tier: gold}}}}
spec: {{nodeName: node-a, containers: [{{name: web, image: web}}]}}
status: {{podIP: 10.1.0.1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: b, namespace: shop, labels: {{app: web, {REGION}: us-east, {ZONE}: us-east-1b}}}}
status: {{podIP: 10.1.0.2}}
---
apiVersion: v1
kind: Pod
metadata: {{name: c, namespace: shop, labels: {{app: web, istio-locality: eu-west.eu-west-1a}}}}
status: {{podIP: 10.1.0.3}}
---
apiVersion: v1
kind: Pod
metadata: {{name: d, namespace: shop, labels: {{app: web, istio-locality: ap-south.ap-1a,
                                               tier: gold}}}}
status: {{podIP: 10.1.0.4}}
"""


def rule(policy: str) -> str:
    return f"""\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web, namespace: shop}}
spec:
  host: web
  trafficPolicy:
{policy}"""


OUTLIERS = "    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s}\n"


def placed(config: str, locality: str = "us-east/us-east-1a", labels: str = "",
           type_url: str = types.ENDPOINT) -> dict[str, object]:
    objects, errors = load_text(config, "c.yaml")
    assert not errors
    push = push_context.build(objects, MeshSettings(), "v1")
    proxy = parse_node("sidecar~10.1.0.9~me.shop~shop.svc.cluster.local",
                       {"LABELS": dict(p.split("=") for p in labels.split(",") if p)},
                       locality)
    return {getattr(m, "cluster_name", "") or m.name: m
            for m in generate(type_url, push, proxy)}


def by_priority(config: str, **where: str) -> list[tuple[int, str, list[str]]]:
    cla = placed(config, **where)["outbound|80||web.shop.svc.cluster.local"]
    return [(g.priority, "/".join(filter(None, (g.locality.region, g.locality.zone))),
             [e.endpoint.address.socket_address.address for e in g.lb_endpoints])
            for g in cla.endpoints]


def test_localities_come_from_the_node_the_pod_labels_or_istio_locality():
    assert by_priority(PODS) == [
        (0, "ap-south/ap-1a", ["10.1.0.4"]), (0, "eu-west/eu-west-1a", ["10.1.0.3"]),
        (0, "us-east/us-east-1a", ["10.1.0.1"]), (0, "us-east/us-east-1b", ["10.1.0.2"])]


def test_failover_ranks_zone_then_region_then_the_rest_with_outlier_detection_only():
    assert by_priority(PODS + rule(OUTLIERS)) == [
        (0, "us-east/us-east-1a", ["10.1.0.1"]), (1, "us-east/us-east-1b", ["10.1.0.2"]),
        (2, "ap-south/ap-1a", ["10.1.0.4"]), (2, "eu-west/eu-west-1a", ["10.1.0.3"])]
    # Seen from elsewhere, the order follows the proxy; no locality, no order.
    assert [p[:2] for p in by_priority(PODS + rule(OUTLIERS), locality="eu-west/eu-west-1b")
            ] == [(0, "eu-west/eu-west-1a"), (1, "ap-south/ap-1a"), (1, "us-east/us-east-1a"),
                  (1, "us-east/us-east-1b")]
    assert {p[0] for p in by_priority(PODS + rule(OUTLIERS), locality="")} == {0}
    # Without outlier detection nothing would move traffic: no priorities (as Istio).
    assert {p[0] for p in by_priority(PODS + rule("    loadBalancer: {simple: RANDOM}\n"))} == {0}
    # enabled: false turns it off.
    off = "    loadBalancer: {localityLbSetting: {enabled: false}}\n" + OUTLIERS
    assert {p[0] for p in by_priority(PODS + rule(off))} == {0}


def test_failover_rules_name_the_next_region():
    policy = ("    loadBalancer:\n      localityLbSetting:\n        failover: "
              "[{from: us-east, to: eu-west}]\n" + OUTLIERS)
    assert [p[:2] for p in by_priority(PODS + rule(policy))] == [
        (0, "us-east/us-east-1a"), (1, "us-east/us-east-1b"), (2, "eu-west/eu-west-1a"),
        (3, "ap-south/ap-1a")]


def test_failover_priority_labels_in_order():
    policy = ("    loadBalancer:\n      localityLbSetting:\n        failoverPriority: "
              f"[tier, {REGION}]\n" + OUTLIERS)
    # Gold in my region first, then gold elsewhere, then the rest.
    assert by_priority(PODS + rule(policy), labels="tier=gold") == [
        (0, "us-east/us-east-1a", ["10.1.0.1"]), (1, "ap-south/ap-1a", ["10.1.0.4"]),
        (2, "eu-west/eu-west-1a", ["10.1.0.3"]), (2, "us-east/us-east-1b", ["10.1.0.2"])]


def test_distribute_weighs_localities_and_drops_the_unnamed():
    policy = ("    loadBalancer:\n      localityLbSetting:\n        distribute:\n"
              "        - from: us-east/us-east-1a/*\n"
              "          to: {us-east/*: 80, eu-west/eu-west-1a/*: 20}\n")
    cla = placed(PODS + rule(policy))["outbound|80||web.shop.svc.cluster.local"]
    weights = {g.locality.zone: (g.load_balancing_weight.value, len(g.lb_endpoints))
               for g in cla.endpoints}
    assert weights == {"us-east-1a": (40, 1), "us-east-1b": (40, 1), "eu-west-1a": (20, 1),
                       "ap-1a": (0, 0)}
    cluster = placed(PODS + rule(policy), type_url=types.CLUSTER)[
        "outbound|80||web.shop.svc.cluster.local"]
    assert cluster.common_lb_config.HasField("locality_weighted_lb_config")
    # A proxy no entry is "from" keeps the assignment as it is.
    cla = placed(PODS + rule(policy), locality="eu-west/eu-west-1a")[
        "outbound|80||web.shop.svc.cluster.local"]
    assert all(len(g.lb_endpoints) == 1 for g in cla.endpoints)
