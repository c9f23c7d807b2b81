"""The gateway template on plain pods (the goldens cover Istio's three gateway cases)."""

from __future__ import annotations

import json
from typing import Any

from pilotfish.discovery.inject.pod import Request, inject
from pilotfish.discovery.inject.settings import Settings
from pilotfish.discovery.inject.template import Workload


def gateway_pod(**annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": "edge-1", "namespace": "shop", "labels": {"app": "edge"},
                         "annotations": {"inject.istio.io/templates": "gateway",
                                         **annotations}},
            "spec": {"containers": [{"name": "istio-proxy", "image": "auto"}]}}


def injected(pod: dict[str, Any], values: dict[str, Any] | None = None) -> dict[str, Any]:
    return inject(pod, Request(Settings.create(values), Workload("edge", "shop")))


def test_the_gateway_is_the_pods_main_container_even_with_native_sidecars():
    for native in (True, False):
        out = injected(gateway_pod(), {"global": {"nativeSidecar": native}})
        [proxy] = out["spec"]["containers"]
        assert "initContainers" not in out["spec"]  # no capture, not a sidecar
        assert "restartPolicy" not in proxy and "lifecycle" not in proxy
        assert proxy["image"].endswith("/pilotfish:" + proxy["image"].rsplit(":", 1)[1])
        assert proxy["args"][2:5] == ["agent", "--type", "router"]


def test_a_gateway_is_not_labelled_for_mtls_and_may_bind_low_ports():
    out = injected(gateway_pod())
    assert "security.istio.io/tlsMode" not in out["metadata"]["labels"]
    assert out["metadata"]["labels"]["service.istio.io/canonical-name"] == "edge"
    assert out["spec"]["securityContext"] == {
        "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]}
    [proxy] = out["spec"]["containers"]
    assert proxy["securityContext"] == {"runAsUser": 1337, "runAsGroup": 1337}


def test_gateways_security_context_replaces_the_pods_default():
    context = {"runAsNonRoot": True, "fsGroup": 1337}
    out = injected(gateway_pod(), {"gateways": {"securityContext": context}})
    assert out["spec"]["securityContext"] == context


def test_a_gateway_has_no_crl_volume_and_the_status_lists_what_it_added():
    out = injected(gateway_pod())
    names = [v["name"] for v in out["spec"]["volumes"]]
    assert "istio-ca-crl" not in names and "istiod-ca-cert" in names
    status = json.loads(out["metadata"]["annotations"]["sidecar.istio.io/status"])
    assert status["containers"] == ["istio-proxy"] and status["initContainers"] is None


def test_injecting_a_gateway_again_changes_nothing():
    once = injected(gateway_pod())
    assert injected(once) == once
