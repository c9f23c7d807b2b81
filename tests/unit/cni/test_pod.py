"""The pod facts a runtime passes pilotfish-cni in runtimeConfig, read and checked."""

from __future__ import annotations

import pytest

from pilotfish.cni.pod import PodError, pod_from_object, pod_from_runtime_config

STATUS = {"sidecar.istio.io/status": "{}"}


def test_runtime_config_pod_is_read_and_checked_field_by_field():
    facts = pod_from_runtime_config(
        {"namespace": "shop", "annotations": {"a": "b"}, "sidecar": True, "containerPorts": [80],
         "proxyEnv": {"INVALID_DROP": "true"}, "runAsUser": 1000},
        ips=("10.0.0.2/24",), cni_args={"K8S_POD_NAME": "web"})
    assert (facts.key, facts.container_ports, facts.run_as_user) == ("shop/web", (80,), 1000)
    implied = pod_from_runtime_config({"name": "a", "namespace": "b", "annotations": STATUS})
    assert implied.sidecar
    for value, message in [
        ([], "runtimeConfig.pilotfishPod: expected an object"),
        ({"namespace": "shop"}, r"runtimeConfig.pilotfishPod.name: expected a non-empty"),
        ({"name": "a", "namespace": "b", "annotations": {"x": 1}},
         r"runtimeConfig.pilotfishPod.annotations: expected an object mapping strings"),
        ({"name": "a", "namespace": "b", "sidecar": "yes"}, r"\.sidecar: expected true or false"),
        ({"name": "a", "namespace": "b", "containerPorts": [0]}, r"\.containerPorts: expected"),
        ({"name": "a", "namespace": "b", "runAsUser": -1}, r"\.runAsUser: expected a user"),
    ]:
        with pytest.raises(PodError, match=message):
            pod_from_runtime_config(value)


def test_a_pod_from_the_api_server_gives_its_injected_proxys_facts():
    proxy = {"name": "istio-proxy", "image": "pilotfish",
             "env": [{"name": "ISTIO_META_DNS_CAPTURE", "value": "true"},
                     {"name": "POD_NAME", "valueFrom": {"fieldRef": {}}}],
             "ports": [{"containerPort": 15090}],
             "securityContext": {"runAsUser": 1337, "runAsGroup": 1337}}
    app = {"name": "app", "ports": [{"containerPort": 8080}, {"containerPort": "http"}]}
    pod = {"metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"},
                        "annotations": STATUS},
           "spec": {"containers": [app, proxy]}}
    facts = pod_from_object(pod, ips=("10.0.0.2/24",))
    assert (facts.key, facts.sidecar, facts.container_ports) == ("shop/web", True, (8080,))
    assert facts.proxy_env == {"ISTIO_META_DNS_CAPTURE": "true"}
    assert (facts.run_as_user, facts.run_as_group, facts.ips) == (1337, 1337, ("10.0.0.2/24",))
    native = {**pod, "spec": {"initContainers": [{**proxy, "restartPolicy": "Always"}],
                              "containers": [app]}}
    assert pod_from_object(native).sidecar
    # a container of that name without the injector's status is the user's own
    plain = {**pod, "metadata": {**pod["metadata"], "annotations": {}}}
    assert not pod_from_object(plain).sidecar and pod_from_object(plain).proxy_env == {}
    with pytest.raises(PodError, match=r"the API server's Pod\.name: expected a non-empty"):
        pod_from_object({"metadata": {"namespace": "shop"}})


def test_a_gateways_router_is_not_a_sidecar_to_capture_for():
    router = {"name": "istio-proxy", "args": ["agent", "--type", "router"]}
    istio = {"name": "istio-proxy", "args": ["proxy", "router"]}
    for proxy in (router, istio):
        pod = {"metadata": {"name": "gw", "namespace": "shop", "annotations": STATUS},
               "spec": {"containers": [proxy]}}
        assert not pod_from_object(pod).sidecar
