"""The pod facts a runtime passes pilotfish-cni in runtimeConfig, read and checked."""

from __future__ import annotations

import pytest

from pilotfish.cni.pod import PodError, pod_from_runtime_config

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
