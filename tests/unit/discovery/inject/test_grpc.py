"""The grpc-simple template on plain pods (the golden covers Istio's case)."""

from __future__ import annotations

import json
from typing import Any

from pilotfish.discovery.inject.grpc import BOOTSTRAP, bootstrap_script
from pilotfish.discovery.inject.pod import Request, inject
from pilotfish.discovery.inject.settings import Settings
from pilotfish.discovery.inject.template import Context, Workload


def grpc_pod() -> dict[str, Any]:
    return {"metadata": {"name": "greeter-1", "namespace": "shop",
                         "annotations": {"inject.istio.io/templates": "grpc-simple"}},
            "spec": {"containers": [
                {"name": "greeter", "image": "example/greeter:1",
                 "readinessProbe": {"httpGet": {"port": 8080}}},
                {"name": "client", "image": "example/client:1"}]}}


def test_every_app_reads_the_bootstrap_and_nothing_else_is_added():
    out = inject(grpc_pod(), Request(Settings.create(), Workload("greeter", "shop")))
    spec = out["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["grpc-bootstrap-init"]
    assert [c["name"] for c in spec["containers"]] == ["greeter", "client"]  # no proxy
    for app in spec["containers"]:
        assert {"name": "GRPC_XDS_BOOTSTRAP", "value": BOOTSTRAP} in app["env"]
    # no agent to answer /app-health: the probe is the app's own
    assert spec["containers"][0]["readinessProbe"] == {"httpGet": {"port": 8080}}


def test_the_bootstrap_is_json_naming_discoverys_plaintext_port_and_the_grpc_generator():
    settings = Settings.create({"revision": "canary"})
    script = bootstrap_script(Context(pod={}, settings=settings, proxy_config={},
                                      workload=Workload("greeter", "shop")))
    assert 'SERVER_URI="dns:///istiod-canary.${ISTIO_NAMESPACE}.svc:15010"' in script
    assert script.endswith(f"> {BOOTSTRAP}")
    # what the shell writes, its variables as the init container's env sets them
    text = script.split("echo '", 1)[1].rsplit("' >", 1)[0]
    text = text.replace("'${SERVER_URI}'", "dns:///istiod-canary.istio-system.svc:15010") \
        .replace("'${NODE_ID}'", "sidecar~10.1.0.5~greeter-1.shop~cluster.local")
    bootstrap = json.loads(text)
    assert bootstrap["xds_servers"][0]["server_uri"].endswith(":15010")
    assert bootstrap["node"] == {"id": "sidecar~10.1.0.5~greeter-1.shop~cluster.local",
                                 "metadata": {"GENERATOR": "grpc"}}


def test_injecting_again_changes_nothing():
    # The status lists the apps as injected containers; the overrides bring them back.
    request = Request(Settings.create(), Workload("greeter", "shop"))
    once = inject(grpc_pod(), request)
    assert inject(once, request) == once
