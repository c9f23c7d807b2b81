"""The injector's parts on plain data: the strategic merge, the policy and selectors, the
pipeline's idempotency and overrides, JSON patches, quantities and the webhook path."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from pilotfish.discovery.admission import parse_inject_path
from pilotfish.discovery.inject import policy
from pilotfish.discovery.inject.jsonpatch import create_patch
from pilotfish.discovery.inject.merge import merge
from pilotfish.discovery.inject.pod import Request, inject
from pilotfish.discovery.inject.quantity import canonical
from pilotfish.discovery.inject.settings import InjectionError, Settings, set_value
from pilotfish.discovery.inject.template import Workload, append_multus_network
from pilotfish.testing.kube.patches import json_patch


def pod(**metadata: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web-1", "namespace": "shop", **metadata},
            "spec": {"containers": [{"name": "web", "image": "example/web:1",
                                     "ports": [{"name": "http", "containerPort": 8080}],
                                     "livenessProbe": {"httpGet": {"port": "http"}}}]}}


REQUEST = Request(Settings.create(), Workload("web-1", "shop"))


# -- strategic merge -----------------------------------------------------------------------

def test_a_new_container_of_the_patch_comes_before_the_pods_own():
    merged = merge({"spec": {"containers": [{"name": "hello", "image": "a"}]}},
                   {"spec": {"containers": [{"name": "injected", "image": "b"}]}})
    assert [c["name"] for c in merged["spec"]["containers"]] == ["injected", "hello"]


def test_keyed_lists_merge_item_by_item_and_others_are_replaced():
    original = {"spec": {"containers": [{
        "name": "proxy", "args": ["a"], "env": [{"name": "A", "value": "1"}],
        "volumeMounts": [{"mountPath": "/certs", "name": "certs"}]}]}}
    patch = {"spec": {"containers": [{
        "name": "proxy", "args": ["b"], "env": [{"name": "B", "value": "2"},
                                                {"name": "A", "value": "3"}],
        "volumeMounts": [{"mountPath": "/data", "name": "data"}]}]}}
    [proxy] = merge(original, patch)["spec"]["containers"]
    assert proxy["args"] == ["b"]
    assert proxy["env"] == [{"name": "B", "value": "2"}, {"name": "A", "value": "3"}]
    assert [m["mountPath"] for m in proxy["volumeMounts"]] == ["/data", "/certs"]


def test_null_removes_and_patch_replace_replaces_a_map():
    merged = merge({"metadata": {"labels": {"a": "1", "b": "2"}, "annotations": {"x": "y"}}},
                   {"metadata": {"labels": {"$patch": "replace", "c": "3"},
                                 "annotations": {"x": None}}})
    assert merged["metadata"] == {"labels": {"c": "3"}, "annotations": {}}


# -- policy ------------------------------------------------------------------------------

@pytest.mark.parametrize(("labels", "annotations", "values", "want"), [
    ({}, {}, {}, True),
    ({}, {"sidecar.istio.io/inject": "false"}, {}, False),
    ({}, {"sidecar.istio.io/inject": "yes"}, {}, True),  # not a bool: the policy decides
    ({"sidecar.istio.io/inject": "true"}, {"sidecar.istio.io/inject": "false"},
     {"global": {"proxy": {"autoInject": "disabled"}}}, True),  # the label wins
    ({}, {}, {"global": {"proxy": {"autoInject": "disabled"}}}, False),
    ({"foo": "bar"}, {}, {"sidecarInjectorWebhook": {"neverInjectSelector": [
        {"matchLabels": {"foo": "bar"}}]}}, False),
    ({"always": "x"}, {}, {"global": {"proxy": {"autoInject": "disabled"}},
                           "sidecarInjectorWebhook": {"alwaysInjectSelector": [
                               {"matchExpressions": [{"key": "always",
                                                      "operator": "Exists"}]}]}}, True),
])
def test_injection_required_follows_istios_rules(labels, annotations, values, want):
    subject = pod(labels=labels, annotations=annotations)
    assert policy.injection_required(subject, "shop", Settings.create(values))[0] is want


def test_host_network_and_kubernetes_namespaces_are_never_injected():
    subject = pod()
    subject["spec"]["hostNetwork"] = True
    assert policy.injection_required(subject, "shop", Settings.create()) == (
        False, "has host networking enabled")
    assert not policy.injection_required(pod(), "kube-system", Settings.create())[0]


def test_the_webhook_selectors_pick_namespaces_and_pods_by_revision():
    assert policy.selected({"istio-injection": "enabled"}, {})
    assert not policy.selected({"istio-injection": "enabled"}, {"sidecar.istio.io/inject": "false"})
    assert policy.selected({"istio.io/rev": "canary"}, {}, "canary")
    assert not policy.selected({"istio.io/rev": "canary"}, {})
    assert policy.selected({}, {"istio.io/rev": "canary"}, "canary")
    assert not policy.selected({}, {})
    assert policy.selected({}, {}, enable_namespaces_by_default=True)


def test_the_webhook_configurations_carry_the_selectors_and_the_bundle():
    mutating, validating = policy.webhook_configurations("QlVORExF")
    assert mutating["metadata"]["name"] == "istio-sidecar-injector"
    assert {h["name"] for h in mutating["webhooks"]} == {
        "rev.namespace.sidecar-injector.istio.io", "rev.object.sidecar-injector.istio.io",
        "namespace.sidecar-injector.istio.io", "object.sidecar-injector.istio.io"}
    hook = mutating["webhooks"][0]
    assert hook["clientConfig"] == {"service": {"name": "istiod", "namespace": "istio-system",
                                                "path": "/inject", "port": 443},
                                    "caBundle": "QlVORExF"}
    assert validating["metadata"]["name"] == "istio-validator-istio-system"
    assert validating["webhooks"][0]["clientConfig"]["service"]["path"] == "/validate"
    canary = Settings.create({"revision": "canary"})
    [mutating, _] = policy.webhook_configurations("x", canary)
    assert mutating["metadata"]["name"] == "istio-sidecar-injector-canary"
    assert len(mutating["webhooks"]) == 2


def test_the_owner_of_a_generated_pod_is_its_deployment_or_cronjob():
    def owned(kind: str, name: str, **labels: str) -> dict[str, Any]:
        return {"metadata": {"generateName": name + "-", "labels": labels,
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind,
                                                  "name": name, "controller": True}]}}

    assert policy.workload_of(owned("ReplicaSet", "web-5d8f", **{"pod-template-hash": "5d8f"}),
                              "shop") == Workload("web", "shop", "apps/v1", "Deployment")
    assert policy.workload_of(owned("Job", "report-28012345"), "shop") == \
        Workload("report", "shop", "batch/v1", "CronJob")
    assert policy.workload_of(pod(), "shop") == Workload("web-1", "shop", "v1", "Pod")


# -- the pipeline --------------------------------------------------------------------------

def test_injecting_an_injected_pod_changes_nothing():
    once = inject(pod(), REQUEST)
    assert inject(once, REQUEST) == once


def test_a_users_proxy_fields_win_and_are_kept_for_reinjection():
    subject = pod()
    subject["spec"]["containers"].append({"name": "istio-proxy", "image": "auto",
                                          "resources": {"limits": {"cpu": "3000m"}}})
    once = inject(subject, REQUEST)
    [proxy] = [c for c in once["spec"]["initContainers"] if c["name"] == "istio-proxy"]
    assert proxy["resources"]["limits"]["cpu"] == "3"
    assert proxy["image"].startswith("localhost/pilotfish:")  # "auto": the injected image
    assert [c["name"] for c in once["spec"]["containers"]] == ["web"]
    assert json.loads(once["metadata"]["annotations"]["proxy.istio.io/overrides"]) == {
        "initContainers": [{"name": "istio-proxy", "resources": {"limits": {"cpu": "3"}}}]}
    assert inject(once, REQUEST) == once


def test_probes_go_to_the_agent_and_the_originals_to_the_proxy():
    injected = inject(pod(), REQUEST)
    assert injected["spec"]["containers"][0]["livenessProbe"] == {
        "httpGet": {"port": 15020, "path": "/app-health/web/livez"}}
    proxy = injected["spec"]["initContainers"][1]
    probers = next(e["value"] for e in proxy["env"] if e["name"] == "ISTIO_KUBE_APP_PROBERS")
    assert json.loads(probers) == {"/app-health/web/livez": {"httpGet": {"port": 8080}}}
    off = inject(pod(annotations={"sidecar.istio.io/rewriteAppHTTPProbers": "false"}), REQUEST)
    assert off["spec"]["containers"][0]["livenessProbe"] == {"httpGet": {"port": "http"}}


def test_a_prometheus_target_on_an_istio_port_is_refused():
    subject = pod(annotations={"prometheus.io/scrape": "true", "prometheus.io/port": "15000"})
    with pytest.raises(InjectionError, match="port 15000 is reserved"):
        inject(subject, REQUEST)


def test_a_broken_go_template_or_missing_template_is_refused_naming_it():
    with pytest.raises(InjectionError, match="no template 'grpc-mystery'"):
        inject(pod(annotations={"inject.istio.io/templates": "grpc-mystery"}), REQUEST)
    settings = Settings.create({"sidecarInjectorWebhook": {"templates": {
        "extra": "spec:\n  containers:\n  {{ range .Spec.Containers }}"}}})
    with pytest.raises(InjectionError, match=r"template 'extra': missing \{\{ end \}\}"):
        inject(pod(annotations={"inject.istio.io/templates": "sidecar,extra"}),
               Request(settings, REQUEST.workload))


def test_the_webhook_path_sets_the_proxys_cluster_and_network():
    assert parse_inject_path("/inject/cluster/c--slash--1/net/n1/custom_env/x") == {
        "ISTIO_META_CLUSTER_ID": "c/1", "ISTIO_META_NETWORK": "n1", "CUSTOM_ENV": "x"}
    assert parse_inject_path("/inject/:ENV:cluster=c2:ENV:rootpage=/foo/bar") == {
        "ISTIO_META_CLUSTER_ID": "c2", "ROOTPAGE": "/foo/bar"}
    assert parse_inject_path("/inject") == {}
    injected = inject(pod(), Request(REQUEST.settings, REQUEST.workload,
                                     proxy_env={"ISTIO_META_CLUSTER_ID": "east",
                                                "ISTIO_META_NETWORK": "net-1"}))
    env = {e["name"]: e.get("value") for e in injected["spec"]["initContainers"][1]["env"]}
    assert (env["ISTIO_META_CLUSTER_ID"], env["ISTIO_META_NETWORK"]) == ("east", "net-1")
    assert injected["metadata"]["labels"]["topology.istio.io/network"] == "net-1"


# -- JSON patch, quantities, values --------------------------------------------------------

def test_the_patch_turns_the_pod_into_the_injected_one():
    original = pod(annotations={"a/b~c": "1"})
    injected = inject(original, REQUEST)
    patch = create_patch(original, injected)
    assert json_patch(copy.deepcopy(original), patch) == injected
    assert create_patch(injected, injected) == []
    assert {"op": "remove", "path": "/metadata/annotations/a~1b~0c"} in create_patch(
        original, {**original, "metadata": {**original["metadata"], "annotations": {}}})


@pytest.mark.parametrize(("given", "want"), [
    ("2000m", "2"), ("1024Mi", "1Gi"), ("100m", "100m"), ("0.5", "500m"), ("1.5Gi", "1536Mi"),
    ("1000", "1k"), ("1500", "1500"), ("0", "0"), ("512", "512"), ("nonsense", "nonsense"),
])
def test_quantities_are_written_as_the_api_server_stores_them(given: str, want: str):
    assert canonical(given) == want


def test_set_reads_values_as_yaml():
    values = set_value({}, "values.global.proxy.statusPort=123")
    values = set_value(values, "global.nativeSidecar=false")
    assert values == {"global": {"proxy": {"statusPort": 123}, "nativeSidecar": False}}
    with pytest.raises(InjectionError, match="expected KEY=VALUE"):
        set_value({}, "global.proxy.image")
    with pytest.raises(InjectionError, match=r"global\.proxy\.statusPort: expected a whole"):
        Settings.create({"global": {"proxy": {"statusPort": "many"}}})


def test_multus_gets_istio_cni_once_whatever_the_form():
    assert append_multus_network("", "default/istio-cni") == "default/istio-cni"
    assert append_multus_network("a, b", "default/istio-cni") == "a, b, default/istio-cni"
    json_form = '[{"name": "a"}]'
    once = append_multus_network(json_form, "default/istio-cni")
    assert json.loads(once) == [{"name": "a"}, {"name": "istio-cni", "namespace": "default"}]
    assert append_multus_network(once, "default/istio-cni") == once
