"""Objects from the API server, trimmed to what the model reads: what a cluster rewrites all
the time is not a change, and what the model reads is kept as the files source keeps it."""

from __future__ import annotations

from pilotfish.plugins.kube.objects import to_config_object, trimmed
from pilotfish.plugins.kube.resources import BUILTIN, Resource

PODS = next(r for r in BUILTIN if r.kind == "Pod")
NODES = next(r for r in BUILTIN if r.kind == "Node")
ROUTES = Resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes", custom=True)


def pod(version: str, restarts: int, probed: str) -> dict:
    return {
        "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"},
                     "resourceVersion": version, "uid": "u1",
                     "managedFields": [{"manager": "kubelet"}],
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}",
                                     "team": "a"}},
        "spec": {"nodeName": "n1", "serviceAccountName": "web",
                 "containers": [{"name": "app", "image": "web:1",
                                 "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}],
                   "conditions": [{"type": "Ready", "status": "True",
                                   "lastProbeTime": probed}],
                   "containerStatuses": [{"name": "app", "restartCount": restarts}]},
    }


def test_a_pod_keeps_what_the_model_reads_and_drops_what_the_cluster_rewrites():
    obj = to_config_object(PODS, pod("10", 0, "t1"))
    assert (obj.api_version, obj.kind, obj.namespace, obj.name) == ("v1", "Pod", "shop",
                                                                    "web-1")
    assert obj.body["status"] == {"phase": "Running", "podIP": "10.1.0.5",
                                  "podIPs": [{"ip": "10.1.0.5"}],
                                  "conditions": [{"type": "Ready", "status": "True"}]}
    assert obj.metadata["annotations"] == {"team": "a"}
    assert "managedFields" not in obj.metadata and "resourceVersion" not in obj.metadata
    assert obj.spec["containers"][0]["ports"] == [{"name": "http", "containerPort": 8080}]
    assert obj.source.file == "kubernetes:pods"
    # A restart or a probe is a new resourceVersion, not a new pod for the mesh.
    assert obj.same_content(to_config_object(PODS, pod("11", 1, "t2")))


def test_a_nodes_heartbeats_are_not_kept_and_a_custom_resources_status_is_not_input():
    node = trimmed(NODES, {"metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone":
                                                                 "z1"}},
                           "status": {"conditions": [{"lastHeartbeatTime": "t"}],
                                      "addresses": [{"type": "InternalIP",
                                                     "address": "10.0.0.1"}]}})
    assert node["status"] == {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}
    route = trimmed(ROUTES, {"metadata": {"name": "r", "namespace": "shop"},
                             "spec": {"parentRefs": [{"name": "gw"}]},
                             "status": {"parents": []}})
    assert route == {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                     "metadata": {"name": "r", "namespace": "shop"},
                     "spec": {"parentRefs": [{"name": "gw"}]}}
