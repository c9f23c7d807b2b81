"""DestinationRule checks: subsets that select no workload (with the labels a pod's
endpoints get from its Node), and rules whose host is no service."""

from __future__ import annotations

import json

from pilotfish.analysis import subsets
from pilotfish.analysis.base import Finding, Inputs, PodTemplate, node_labels, pod_templates
from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.yamlload import load_text

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels:
    topology.kubernetes.io/region: us-west1
    topology.kubernetes.io/zone: us-west1-a
    topology.istio.io/subzone: rack-7
    kubernetes.io/hostname: node-a
---
apiVersion: v1
kind: Node
metadata:
  name: node-old
  labels:
    failure-domain.beta.kubernetes.io/region: eu-west1
    failure-domain.beta.kubernetes.io/zone: eu-west1-b
    topology.kubernetes.io/zone: ""
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web, version: v1}}
spec: {nodeName: node-a, containers: [{name: web, image: web}]}
"""


def analyze(config: str) -> list[Finding]:
    objects, errors = load_text(config, "shop.yaml")
    assert not errors
    push = push_context.build([o for o in objects if o.kind != "Node"], MeshSettings(), "v1")
    inputs = Inputs(push, tuple(pod_templates(objects)), nodes=node_labels(objects))
    return list(subsets.analyze(inputs))


def pod(labels: dict[str, str], node: str = "") -> PodTemplate:
    objects, _ = load_text(json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "shop", "labels": labels},
        "spec": {"nodeName": node} if node else {}}), "pod.json")
    (template,) = pod_templates(objects)
    return template


NODES = {
    "node-a": {"topology.kubernetes.io/region": "us-west1",
               "topology.kubernetes.io/zone": "us-west1-a",
               "topology.istio.io/subzone": "rack-7", "team": "blue"},
    "node-old": {"failure-domain.beta.kubernetes.io/region": "eu-west1",
                 "failure-domain.beta.kubernetes.io/zone": "eu-west1-b",
                 "topology.kubernetes.io/region": ""},
}


def test_endpoints_carry_their_nodes_locality_and_name() -> None:
    assert subsets.endpoint_labels(pod({"app": "web"}, "node-a"), NODES) == {
        "app": "web", "topology.kubernetes.io/region": "us-west1",
        "topology.kubernetes.io/zone": "us-west1-a", "topology.istio.io/subzone": "rack-7",
        "kubernetes.io/hostname": "node-a"}  # other Node labels ("team") are not carried


def test_legacy_node_labels_count_and_empty_values_add_nothing() -> None:
    assert subsets.endpoint_labels(pod({}, "node-old"), NODES) == {
        "topology.kubernetes.io/region": "eu-west1",
        "topology.kubernetes.io/zone": "eu-west1-b", "kubernetes.io/hostname": "node-old"}


def test_a_pods_locality_label_replaces_its_nodes() -> None:
    labels = subsets.endpoint_labels(pod({"istio-locality": "ap.ap-1"}, "node-a"), NODES)
    assert labels["topology.kubernetes.io/region"] == "ap"
    assert labels["topology.kubernetes.io/zone"] == "ap-1"
    assert "topology.istio.io/subzone" not in labels
    labels = subsets.endpoint_labels(
        pod({"topology.istio.io/locality": "r/z/s"}, "node-a"), NODES)
    assert labels["topology.istio.io/subzone"] == "s"


def test_unscheduled_pods_and_unknown_nodes() -> None:
    assert subsets.endpoint_labels(pod({"app": "web"}), NODES) == {"app": "web"}
    assert subsets.endpoint_labels(pod({"app": "web"}, "node-x"), NODES) == {
        "app": "web", "kubernetes.io/hostname": "node-x"}


def test_subsets_selecting_node_topology_select_pods_on_that_node() -> None:
    found = analyze(SERVICE + """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  subsets:
  - {name: zone-a, labels: {topology.kubernetes.io/zone: us-west1-a}}
  - {name: rack, labels: {version: v1, topology.istio.io/subzone: rack-7}}
  - {name: node, labels: {kubernetes.io/hostname: node-a}}
  - {name: zone-b, labels: {topology.kubernetes.io/zone: us-west1-b}}
""")
    assert [(f.check.code, f.field) for f in found] == [("PF0103", "spec.subsets[3].labels")]


def test_a_rule_for_an_unknown_host_applies_to_nothing() -> None:
    found = analyze(SERVICE + """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: typo, namespace: shop}
spec: {host: wbe, subsets: [{name: v9, labels: {version: v9}}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: elsewhere, namespace: other}
spec: {host: web}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: fqdn, namespace: other}
spec: {host: web.shop.svc.cluster.local}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wildcard, namespace: shop}
spec: {host: "*.shop.svc.cluster.local"}
""")
    # The subsets of a rule for no service are not checked: PF0109 says why they select none.
    assert sorted((f.check.code, f.key.name if f.key else "", f.field) for f in found) == [
        ("PF0109", "elsewhere", "spec.host"), ("PF0109", "typo", "spec.host")]
    (typo,) = [f for f in found if f.key and f.key.name == "typo"]
    assert "'wbe' (wbe.shop.svc.cluster.local) is unknown" in typo.message
    assert typo.istio is not None and typo.istio.code == "IST0174"


def test_a_rule_for_a_host_not_exported_to_it_says_so() -> None:
    found = analyze(SERVICE.replace(
        "metadata: {name: web, namespace: shop}",
        "metadata: {name: web, namespace: shop, annotations: "
        "{networking.istio.io/exportTo: .}}") + """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: other}
spec: {host: web.shop.svc.cluster.local, exportTo: [shop]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web-hidden, namespace: other}
spec: {host: web.shop.svc.cluster.local}
""")
    # Exported to shop, the first rule applies where the host is visible.
    (hidden,) = found
    assert hidden.key is not None and hidden.key.name == "web-hidden"
    assert "is not exported to namespace other" in hidden.message
