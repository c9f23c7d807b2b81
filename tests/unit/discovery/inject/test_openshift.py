"""The proxy's uid and gid on OpenShift: the namespace's SCC ranges, read, and applied by
injection (the goldens cover Istio's three OpenShift cases through the webhook)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pilotfish.discovery.inject.openshift import (
    SUPPLEMENTAL_GROUPS,
    UID_RANGE,
    block_max,
    proxy_ids,
)
from pilotfish.discovery.inject.pod import Request, inject
from pilotfish.discovery.inject.settings import Settings
from pilotfish.discovery.inject.template import Workload

RANGES = {UID_RANGE: "1000620000/10000", SUPPLEMENTAL_GROUPS: "1000700000/5000,5/10"}
OPENSHIFT = Settings.create({"global": {"platform": "openshift"}})


@pytest.mark.parametrize(("text", "last"), [
    ("1000620000/10000", 1000629999), ("1000620000-1000620099", 1000620099),
    (" 5/1 ", 5), ("", None), ("1000620000", None), ("a/b", None), ("10/0", None),
    ("20-10", None)])
def test_a_block_is_start_slash_size_or_start_dash_end(text: str, last: int | None):
    assert block_max(text) == last


def test_the_uid_is_the_ranges_last_and_the_gid_the_first_groups_last():
    assert proxy_ids(RANGES) == (1000629999, 1000704999)
    assert proxy_ids({}) == (1337, 1337)
    assert proxy_ids({UID_RANGE: "junk"}) == (1337, 1337)


def pod(proxy_security: dict[str, Any] | None = None, **annotations: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = [{"name": "web", "image": "example/web:1"}]
    if proxy_security is not None:
        containers.append({"name": "istio-proxy", "image": "auto",
                           "securityContext": proxy_security})
    return {"metadata": {"name": "web-1", "namespace": "shop", "annotations": annotations},
            "spec": {"containers": containers}}


def proxy_of(injected: dict[str, Any]) -> dict[str, Any]:
    spec = injected["spec"]
    return next(c for c in spec.get("initContainers", []) + spec["containers"]
                if c["name"] == "istio-proxy")


def test_on_openshift_the_proxy_runs_and_is_exempt_as_the_namespaces_ids():
    out = inject(pod(), Request(OPENSHIFT, Workload("web", "shop"),
                                namespace_annotations=RANGES))
    context = proxy_of(out)["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (1000629999, 1000704999)
    init = out["spec"]["initContainers"][0]
    assert init["args"][init["args"].index("-u") + 1] == "1000629999"


def test_on_openshift_the_users_proxy_ids_give_way_and_are_not_recorded():
    mine = {"runAsUser": 1000620000, "runAsGroup": 7, "readOnlyRootFilesystem": False}
    out = inject(pod(mine), Request(OPENSHIFT, Workload("web", "shop"),
                                    namespace_annotations=RANGES))
    context = proxy_of(out)["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (1000629999, 1000704999)
    assert context["readOnlyRootFilesystem"] is False  # the rest of the user's stands
    [recorded] = json.loads(out["metadata"]["annotations"]["proxy.istio.io/overrides"]
                            )["initContainers"]
    assert recorded["securityContext"] == {"readOnlyRootFilesystem": False}


def test_elsewhere_or_in_tproxy_mode_the_ranges_are_not_read():
    for settings, extra in ((Settings.create(), {}),
                            (OPENSHIFT, {"sidecar.istio.io/interceptionMode": "TPROXY"})):
        out = inject(pod(**extra), Request(settings, Workload("web", "shop"),
                                           namespace_annotations=RANGES))
        assert proxy_of(out)["securityContext"]["runAsGroup"] == 1337


def test_a_gateway_on_openshift_runs_as_the_namespaces_ids():
    gateway = {"metadata": {"name": "edge-1", "namespace": "shop",
                            "annotations": {"inject.istio.io/templates": "gateway"}},
               "spec": {"containers": [{"name": "istio-proxy", "image": "auto"}]}}
    out = inject(gateway, Request(OPENSHIFT, Workload("edge", "shop"),
                                  namespace_annotations=RANGES))
    assert out["spec"]["containers"][0]["securityContext"] == {
        "runAsUser": 1000629999, "runAsGroup": 1000704999}
