"""The fake Kubernetes API server, driven by the official `kubernetes` client over HTTPS:
reads and writes, paging, watches (bookmarks, 410 Gone, a cut connection), patches,
server-side apply, the status subresource and custom resources."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import kubernetes
import kubernetes.dynamic
import pytest
import urllib3
import yaml
from kubernetes.client import ApiException

from pilotfish.testing.kube import FakeKubeApi, running

APPLY = "application/apply-patch+yaml"


def refusal(call: Callable[[], Any]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiException) as caught:
        call()
    return caught.value.status, json.loads(caught.value.body)


def pod(name: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}}


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def watched(api: FakeKubeApi, list_call: Callable[..., Any], *args: Any, **options: Any
            ) -> list[tuple[str, str]]:
    """(type, name) of the events a watch sees before a bookmark sent once it is open:
    everything it was going to be sent so far, without waiting for a timeout."""
    already = api.statistics()["watches"]  # a closed watch counts until its next write

    def mark() -> None:
        wait_for(lambda: api.statistics()["watches"] > already)
        api.bookmark()

    marker = threading.Thread(target=mark)
    marker.start()
    watch, events = kubernetes.watch.Watch(), []
    try:
        for event in watch.stream(list_call, *args, allow_watch_bookmarks=True, **options):
            if event["type"] == "BOOKMARK":
                watch.stop()
            else:
                events.append((event["type"], event["raw_object"]["metadata"]["name"]))
    finally:
        marker.join()
    return events


def test_objects_are_created_read_updated_and_deleted(core):
    made = core.create_namespaced_config_map("default", {
        "metadata": {"name": "settings", "labels": {"app": "a"}}, "data": {"k": "v"}})
    assert made.metadata.uid and made.metadata.creation_timestamp
    assert made.metadata.generation == 1
    assert made.metadata.managed_fields[0].operation == "Update"
    assert core.read_namespaced_config_map("settings", "default").data == {"k": "v"}

    made.data["k"] = "w"
    updated = core.replace_namespaced_config_map("settings", "default", made)
    assert int(updated.metadata.resource_version) > int(made.metadata.resource_version)
    assert updated.metadata.generation == 2  # data is outside metadata and status
    code, status = refusal(lambda: core.replace_namespaced_config_map(
        "settings", "default", made))  # made's resourceVersion is the old one
    assert (code, status["reason"]) == (409, "Conflict")
    assert "the object has been modified" in status["message"]

    code, status = refusal(lambda: core.create_namespaced_config_map(
        "default", {"metadata": {"name": "settings"}}))
    assert (code, status["reason"], status["details"]["kind"]) == (409, "AlreadyExists",
                                                                   "configmaps")
    deleted = core.delete_namespaced_config_map("settings", "default")  # a Status, as a dict
    assert (deleted["status"], deleted["details"]["name"]) == ("Success", "settings")
    code, status = refusal(lambda: core.read_namespaced_config_map("settings", "default"))
    assert (code, status["kind"], status["reason"]) == (404, "Status", "NotFound")


def test_a_created_object_gets_the_servers_fields_and_a_generated_name(core):
    core.create_namespace({"metadata": {"name": "shop"}})
    namespace = core.read_namespace("shop")
    assert namespace.status.phase == "Active"
    assert namespace.metadata.labels["kubernetes.io/metadata.name"] == "shop"
    made = core.create_namespaced_pod("shop", {
        "metadata": {"generateName": "web-"},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        "status": {"podIP": "10.0.0.9"}})
    assert made.metadata.name.startswith("web-") and len(made.metadata.name) == 9
    assert made.status.phase == "Pending" and made.status.pod_ip is None  # status: kubelet's


def test_refusals_are_status_objects_with_the_api_servers_codes(api, core, client):
    code, status = refusal(lambda: core.create_namespaced_config_map(
        "default", {"metadata": {}}))
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["details"]["causes"][0]["field"] == "metadata.name"
    code, status = refusal(lambda: core.create_namespaced_config_map(
        "nowhere", {"metadata": {"name": "x"}}))
    assert (code, status["message"]) == (404, 'namespaces "nowhere" not found')
    code, status = refusal(lambda: core.create_namespaced_service(
        "default", {"metadata": {"name": "Not_A_Label"}, "spec": {}}))
    assert code == 422 and "metadata.name" in status["message"]

    raw = urllib3.PoolManager(ca_certs=str(api.directory / "ca.crt"))
    bad_json = raw.request("POST", f"{api.url}/api/v1/namespaces/default/configmaps",
                           body=b"{not json", headers={
                               "Authorization": f"Bearer {api.token}",
                               "Content-Type": "application/json"})
    assert (bad_json.status, json.loads(bad_json.data)["reason"]) == (400, "BadRequest")
    unknown = raw.request("GET", f"{api.url}/api/v1/namespaces",
                          headers={"Authorization": "Bearer not-a-token"})
    assert (unknown.status, json.loads(unknown.data)["code"]) == (401, 401)
    anonymous = raw.request("GET", f"{api.url}/api/v1/namespaces")
    assert anonymous.status == 401
    assert raw.request("GET", f"{api.url}/healthz").data == b"ok"


def test_plain_http_serves_the_same_api(tmp_path):
    with running(tmp_path, tls=False) as server:
        assert server.url.startswith("http://")
        config = yaml.safe_load(server.kubeconfig.read_text())
        assert "certificate-authority-data" not in config["clusters"][0]["cluster"]
        with kubernetes.config.new_client_from_config(str(server.kubeconfig)) as plain:
            names = [ns.metadata.name for ns in kubernetes.client.CoreV1Api(
                plain).list_namespace().items]
    assert names == ["default", "kube-node-lease", "kube-public", "kube-system"]


def test_five_thousand_pods_list_in_consistent_pages(api, core):
    api.seed(*(pod(f"pod-{i:04d}", tier="web" if i % 2 else "db") for i in range(5000)))
    seen, versions, token = [], set(), None
    first = core.list_namespaced_pod("default", limit=500)
    token = first.metadata._continue
    seen += [p.metadata.name for p in first.items]
    versions.add(first.metadata.resource_version)
    assert first.metadata.remaining_item_count == 4500
    core.create_namespaced_pod("default", pod("pod-late"))  # after the list began
    core.delete_namespaced_pod("pod-4999", "default")
    while token:
        page = core.list_namespaced_pod("default", limit=500, _continue=token)
        seen += [p.metadata.name for p in page.items]
        versions.add(page.metadata.resource_version)
        token = page.metadata._continue
    assert seen == [f"pod-{i:04d}" for i in range(5000)]  # as at the first page
    assert len(versions) == 1

    web = core.list_namespaced_pod("default", label_selector="tier=web", limit=1000)
    assert len(web.items) == 1000  # of 2,499 now (pod-4999 went)
    assert web.metadata.remaining_item_count == 1499
    one = core.list_pod_for_all_namespaces(field_selector="metadata.name=pod-0007")
    assert [p.metadata.name for p in one.items] == ["pod-0007"]
    code, _ = refusal(lambda: core.list_namespaced_pod("default", field_selector="spec.x=1"))
    assert code == 400


def test_a_continue_token_expires_with_compaction(api, core):
    api.seed(*(pod(f"p{i}") for i in range(10)))
    page = core.list_namespaced_pod("default", limit=4)
    core.delete_namespaced_pod("p9", "default")
    api.compact()
    code, status = refusal(lambda: core.list_namespaced_pod(
        "default", limit=4, _continue=page.metadata._continue))
    assert (code, status["reason"]) == (410, "Expired")


def test_a_watch_replays_changes_since_a_version_then_streams_new_ones(api, core):
    listed = core.list_namespaced_config_map("default")
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    core.patch_namespaced_config_map("a", "default", {"data": {"k": "1"}})
    core.create_namespaced_config_map("default", {"metadata": {"name": "other"}})

    def later_changes() -> None:
        wait_for(lambda: api.statistics()["watches"] == 1)
        core.delete_namespaced_config_map("a", "default")

    watch = kubernetes.watch.Watch()
    events = []
    changer = threading.Thread(target=later_changes)
    changer.start()
    for event in watch.stream(core.list_namespaced_config_map, "default",
                              field_selector="metadata.name=a",
                              resource_version=listed.metadata.resource_version):
        events.append((event["type"], event["object"].metadata.name,
                       event["object"].data))
        if event["type"] == "DELETED":
            watch.stop()
    changer.join()
    assert events == [("ADDED", "a", None), ("MODIFIED", "a", {"k": "1"}),
                      ("DELETED", "a", {"k": "1"})]
    assert int(watch.resource_version) == api.statistics()["revision"]


def test_a_watch_without_a_version_starts_with_the_current_objects(api, core):
    api.seed(pod("one", app="x"), pod("two", app="y"))
    assert watched(api, core.list_namespaced_pod, "default", label_selector="app=x") == [
        ("ADDED", "one")]


def test_an_object_leaving_a_selector_is_deleted_for_the_watch(api, core):
    core.create_namespaced_pod("default", pod("p", app="x"))
    start = core.list_namespaced_pod("default").metadata.resource_version
    core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"app": "y"}}})
    assert watched(api, core.list_namespaced_pod, "default", label_selector="app=x",
                   resource_version=start) == [("DELETED", "p")]


def test_bookmarks_carry_the_current_version(api, core):
    start = core.list_namespaced_pod("default").metadata.resource_version
    api.seed(*(pod(f"p{i}") for i in range(3)))
    revision = api.statistics()["revision"]
    marker = threading.Thread(target=lambda: (
        wait_for(lambda: api.statistics()["watches"] == 1), api.bookmark()))
    marker.start()
    watch = kubernetes.watch.Watch()
    types = []
    for event in watch.stream(core.list_namespaced_pod, "default", resource_version=start,
                              allow_watch_bookmarks=True):
        types.append(event["type"])
        if event["type"] == "BOOKMARK":
            assert event["raw_object"]["metadata"]["resourceVersion"] == str(revision)
            watch.stop()
    marker.join()
    assert types == ["ADDED", "ADDED", "ADDED", "BOOKMARK"]
    assert watch.resource_version == str(revision)


def test_quiet_watches_get_periodic_bookmarks(tmp_path):
    with running(tmp_path, bookmark_interval=0.05) as server, \
            kubernetes.config.new_client_from_config(str(server.kubeconfig)) as made:
        core = kubernetes.client.CoreV1Api(made)
        watch = kubernetes.watch.Watch()
        stream = watch.stream(core.list_namespaced_pod, "default", resource_version="1",
                              allow_watch_bookmarks=True)
        assert [next(stream)["type"] for _ in range(3)] == ["BOOKMARK"] * 3
        watch.stop()
        stream.close()


def test_a_compacted_version_is_gone_and_a_relist_recovers(api, core):
    start = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    api.compact()
    with pytest.raises(ApiException) as gone:
        list(kubernetes.watch.Watch().stream(core.list_namespaced_config_map, "default",
                                             resource_version=start, timeout_seconds=1))
    assert gone.value.status == 410
    assert "too old resource version" in gone.value.reason

    relisted = core.list_namespaced_config_map("default")
    assert [c.metadata.name for c in relisted.items] == ["a"]
    core.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
    assert watched(api, core.list_namespaced_config_map, "default",
                   resource_version=relisted.metadata.resource_version) == [("ADDED", "b")]


def test_history_beyond_its_window_is_gone(tmp_path):
    with running(tmp_path, history=5) as server:
        old = server.statistics()["revision"]
        server.seed(*(pod(f"p{i}") for i in range(10)))
        with kubernetes.config.new_client_from_config(str(server.kubeconfig)) as made:
            core = kubernetes.client.CoreV1Api(made)
            events = watched(server, core.list_namespaced_pod, "default",
                             resource_version=str(old + 6))
            assert events == [("ADDED", f"p{i}") for i in range(6, 10)]
            with pytest.raises(ApiException) as gone:
                list(kubernetes.watch.Watch().stream(core.list_namespaced_pod, "default",
                                                     resource_version=str(old),
                                                     timeout_seconds=1))
    assert gone.value.status == 410


def test_a_watch_cut_mid_stream_resumes_from_its_last_version_losing_nothing(api, core):
    watch = kubernetes.watch.Watch()
    stream = watch.stream(core.list_namespaced_config_map, "default", resource_version="1")
    core.create_namespaced_config_map("default", {"metadata": {"name": "before"}})
    assert next(stream)["object"].metadata.name == "before"
    seen_at = watch.resource_version

    assert api.cut_watches() == 1
    core.create_namespaced_config_map("default", {"metadata": {"name": "during"}})
    with pytest.raises(urllib3.exceptions.ProtocolError):
        next(stream)  # the chunked body ended without its last chunk: the connection broke

    assert watched(api, core.list_namespaced_config_map, "default",
                   resource_version=seen_at) == [("ADDED", "during")]


def test_a_watch_ends_cleanly_at_its_timeout(api, core):
    started = time.monotonic()
    assert list(kubernetes.watch.Watch().stream(core.list_namespaced_pod, "default",
                                                resource_version="1",
                                                timeout_seconds=1)) == []
    assert 1 <= time.monotonic() - started < 3
    wait_for(lambda: api.statistics()["watches"] == 0)


def test_patches_json_merge_and_strategic(core):
    core.create_namespaced_pod("default", {
        "metadata": {"name": "p", "labels": {"a": "1", "b": "2"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"},
                                {"name": "side", "image": "side:1"}]}})
    merged = core.patch_namespaced_pod("p", "default", {
        "metadata": {"labels": {"b": None, "c": "3"}},
        "spec": {"containers": [{"name": "side", "image": "side:2"}]}})
    assert merged.metadata.labels == {"a": "1", "c": "3"}
    assert [(c.name, c.image) for c in merged.spec.containers] == [
        ("app", "app:1"), ("side", "side:2")]  # strategic: merged by name

    patched = core.patch_namespaced_pod("p", "default", [
        {"op": "add", "path": "/metadata/annotations", "value": {"x": "y"}},
        {"op": "replace", "path": "/spec/containers/0/image", "value": "app:2"},
        {"op": "test", "path": "/metadata/labels/a", "value": "1"}])
    assert patched.metadata.annotations == {"x": "y"}
    assert patched.spec.containers[0].image == "app:2"
    assert patched.metadata.generation == 3
    code, status = refusal(lambda: core.patch_namespaced_pod("p", "default", [
        {"op": "test", "path": "/metadata/labels/a", "value": "nope"}]))
    assert (code, status["reason"]) == (422, "Invalid")

    stale = {"metadata": {"resourceVersion": "1", "labels": {"d": "4"}}}
    code, status = refusal(lambda: core.patch_namespaced_pod(
        "p", "default", stale, _content_type="application/merge-patch+json"))
    assert code == 409


def test_server_side_apply_owns_fields_and_refuses_conflicts_unless_forced(core):
    def apply(manager: str, data: dict[str, str], force: bool | None = None) -> Any:
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cfg", "namespace": "default"}, "data": data}
        return core.patch_namespaced_config_map("cfg", "default", body, field_manager=manager,
                                                force=force, _content_type=APPLY)

    created = apply("installer", {"mode": "a", "extra": "x"})
    assert created.data == {"mode": "a", "extra": "x"}
    [entry] = created.metadata.managed_fields
    assert (entry.manager, entry.operation) == ("installer", "Apply")
    assert entry.fields_v1 == {"f:data": {"f:extra": {}, "f:mode": {}}}

    assert apply("installer", {"mode": "a"}).data == {"mode": "a"}  # extra: dropped
    assert apply("operator", {"mode": "a"}).data == {"mode": "a"}  # same value: shared

    code, status = refusal(lambda: apply("operator", {"mode": "b"}))
    assert (code, status["reason"]) == (409, "Conflict")
    assert status["details"]["causes"] == [{"reason": "FieldManagerConflict",
                                           "message": 'conflict with "installer" using v1',
                                           "field": ".data.mode"}]
    forced = apply("operator", {"mode": "b"}, force=True)
    assert forced.data == {"mode": "b"}
    owners = {e.manager: e.fields_v1 for e in forced.metadata.managed_fields}
    assert owners == {"operator": {"f:data": {"f:mode": {}}}}

    core.patch_namespaced_config_map("cfg", "default", {"data": {"mode": "c"}},
                                     field_manager="kubectl-edit")
    code, status = refusal(lambda: apply("operator", {"mode": "d"}))
    assert 'conflict with "kubectl-edit"' in status["message"]

    code, status = refusal(lambda: core.patch_namespaced_config_map(
        "cfg", "default", {"data": {}}, _content_type=APPLY))
    assert (code, status["reason"]) == (422, "Invalid")  # an apply needs a fieldManager


def test_the_status_subresource_is_written_apart_from_the_object(api, core):
    made = core.create_namespaced_pod("default", pod("p"))
    made.status.pod_ip = "10.0.0.1"
    made.metadata.labels = {"changed": "yes"}
    after_main = core.replace_namespaced_pod("p", "default", made)
    assert after_main.status.pod_ip is None  # the main resource ignores status
    assert after_main.metadata.labels == {"changed": "yes"}

    after_main.status.pod_ip = "10.0.0.1"
    after_main.status.phase = "Running"
    after_main.metadata.labels = {"ignored": "here"}
    after_status = core.replace_namespaced_pod_status("p", "default", after_main)
    assert (after_status.status.phase, after_status.status.pod_ip) == ("Running", "10.0.0.1")
    assert after_status.metadata.labels == {"changed": "yes"}
    assert after_status.metadata.generation == 1
    patched = core.patch_namespaced_pod_status("p", "default",
                                               {"status": {"podIP": "10.0.0.2"}})
    assert patched.status.pod_ip == "10.0.0.2"
    # What a test counts writes by: requests per method, kind and subresource.
    assert (api.requests("POST", "pods"), api.requests("PUT", "pods"),
            api.requests("PUT", "pods", "status"), api.requests("PATCH", "pods", "status"),
            api.requests("PATCH", "pods")) == (1, 1, 1, 1, 0)


def test_a_merge_patch_at_a_stale_resource_version_conflicts(core):
    made = core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    core.patch_namespaced_config_map("c", "default", {"data": {"a": "1"}})
    status, body = refusal(lambda: core.patch_namespaced_config_map("c", "default", {
        "metadata": {"resourceVersion": made.metadata.resource_version}, "data": {"a": "2"}}))
    assert (status, body["reason"]) == (409, "Conflict")


def test_a_scheduled_pod_terminates_first_and_finalizers_hold_deletion(api, core):
    core.create_namespaced_pod("default", {**pod("p"), "spec": {
        "nodeName": "node-1", "containers": [{"name": "app", "image": "app:1"}]}})
    terminating = core.delete_namespaced_pod("p", "default")
    assert terminating.metadata.deletion_timestamp is not None
    assert terminating.metadata.deletion_grace_period_seconds == 30
    core.delete_namespaced_pod("p", "default", grace_period_seconds=0)  # the kubelet's
    assert refusal(lambda: core.read_namespaced_pod("p", "default"))[0] == 404

    core.create_namespaced_config_map("default", {"metadata": {
        "name": "held", "finalizers": ["example.com/keep"]}})
    core.delete_namespaced_config_map("held", "default")
    held = core.read_namespaced_config_map("held", "default")
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("held", "default",
                                     [{"op": "remove", "path": "/metadata/finalizers"}])
    assert refusal(lambda: core.read_namespaced_config_map("held", "default"))[0] == 404


def test_deleting_a_namespace_deletes_what_is_in_it(api, core):
    core.create_namespace({"metadata": {"name": "gone"}})
    core.create_namespaced_config_map("gone", {"metadata": {"name": "c"}})
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    core.delete_namespace("gone")
    assert [c.metadata.namespace for c in
            core.list_config_map_for_all_namespaces().items] == ["default"]


def test_the_other_built_in_kinds_round_trip(client):
    discovery = kubernetes.client.DiscoveryV1Api(client)
    discovery.create_namespaced_endpoint_slice("default", {
        "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]})
    slices = discovery.list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=web")
    assert slices.items[0].endpoints[0].addresses == ["10.0.0.1"]

    leases = kubernetes.client.CoordinationV1Api(client)
    lease = leases.create_namespaced_lease("default", {
        "metadata": {"name": "leader"}, "spec": {"holderIdentity": "a"}})
    lease.spec.holder_identity = "b"
    assert leases.replace_namespaced_lease("leader", "default",
                                           lease).spec.holder_identity == "b"
    code, _ = refusal(lambda: leases.replace_namespaced_lease("leader", "default", lease))
    assert code == 409  # the other candidate's stale copy

    core = kubernetes.client.CoreV1Api(client)
    core.create_node({"metadata": {"name": "node-1", "labels": {
        "topology.kubernetes.io/zone": "z1"}}, "status": {"addresses": [
            {"type": "InternalIP", "address": "10.1.0.1"}]}})
    assert core.read_node("node-1").status.addresses[0].address == "10.1.0.1"
    core.create_namespaced_service_account("default", {"metadata": {"name": "web"}})
    core.create_namespaced_secret("default", {"metadata": {"name": "tls"},
                                              "type": "kubernetes.io/tls",
                                              "data": {"tls.crt": "", "tls.key": ""}})
    assert [s.metadata.name for s in core.list_namespaced_secret(
        "default", field_selector="type=kubernetes.io/tls").items] == ["tls"]
    core.create_namespaced_event("default", {
        "metadata": {"name": "web.1"}, "involvedObject": {"kind": "Pod", "name": "web"},
        "reason": "Rejected", "message": "bad config", "type": "Warning"})
    assert core.list_namespaced_event(
        "default", field_selector="involvedObject.name=web").items[0].reason == "Rejected"


WIDGETS = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {"group": "example.com", "scope": "Namespaced",
             "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                       "listKind": "WidgetList", "shortNames": ["wd"]},
             "versions": [
                 {"name": "v1", "served": True, "storage": True,
                  "subresources": {"status": {}},
                  "schema": {"openAPIV3Schema": {"type": "object",
                                                 "x-kubernetes-preserve-unknown-fields": True}}},
                 {"name": "v1beta1", "served": True, "storage": False,
                  "schema": {"openAPIV3Schema": {"type": "object",
                                                 "x-kubernetes-preserve-unknown-fields": True}}},
             ]}}


def test_custom_resources_are_served_from_their_crd_on(client):
    custom = kubernetes.client.CustomObjectsApi(client)
    extensions = kubernetes.client.ApiextensionsV1Api(client)
    widget = {"apiVersion": "example.com/v1", "kind": "Widget",
              "metadata": {"name": "w"}, "spec": {"size": 1}}
    code, _ = refusal(lambda: custom.create_namespaced_custom_object(
        "example.com", "v1", "default", "widgets", widget))
    assert code == 404

    crd = extensions.create_custom_resource_definition(WIDGETS)
    assert {c.type for c in crd.status.conditions} == {"Established", "NamesAccepted"}
    resources = kubernetes.client.CustomObjectsApi(client).get_api_resources(
        "example.com", "v1")
    assert [(r.name, r.kind) for r in resources.resources] == [
        ("widgets", "Widget"), ("widgets/status", "Widget")]
    groups = kubernetes.client.ApisApi(client).get_api_versions().groups
    assert "example.com" in [g.name for g in groups]

    made = custom.create_namespaced_custom_object("example.com", "v1", "default", "widgets",
                                                  widget)
    assert made["metadata"]["generation"] == 1
    as_beta = custom.get_namespaced_custom_object("example.com", "v1beta1", "default",
                                                  "widgets", "w")
    assert as_beta["apiVersion"] == "example.com/v1beta1"
    patched = custom.patch_namespaced_custom_object("example.com", "v1", "default",
                                                    "widgets", "w", {"spec": {"size": 2}})
    assert (patched["spec"], patched["metadata"]["generation"]) == ({"size": 2}, 2)
    status = custom.patch_namespaced_custom_object_status(
        "example.com", "v1", "default", "widgets", "w",
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    assert status["metadata"]["generation"] == 2 and status["status"]["conditions"]
    code, _ = refusal(lambda: custom.patch_namespaced_custom_object(
        "example.com", "v1", "default", "widgets", "w", {"spec": {}},
        _content_type="application/strategic-merge-patch+json"))
    assert code == 415  # no strategic merge for custom resources
    listed = custom.list_namespaced_custom_object("example.com", "v1", "default", "widgets")
    assert [(i["kind"], i["metadata"]["name"]) for i in listed["items"]] == [("Widget", "w")]

    extensions.delete_custom_resource_definition("widgets.example.com")
    code, _ = refusal(lambda: custom.list_namespaced_custom_object(
        "example.com", "v1", "default", "widgets"))
    assert code == 404


def test_a_discovering_client_finds_built_in_and_custom_kinds(client, tmp_path):
    dynamic = kubernetes.dynamic.DynamicClient(client, cache_file=str(tmp_path / "cache"))
    pods = dynamic.resources.get(api_version="v1", kind="Pod")
    assert (pods.name, pods.namespaced) == ("pods", True)
    assert dynamic.resources.get(api_version="discovery.k8s.io/v1",
                                 kind="EndpointSlice").name == "endpointslices"
    crds = dynamic.resources.get(api_version="apiextensions.k8s.io/v1",
                                 kind="CustomResourceDefinition")
    crds.create(body=WIDGETS)
    widgets = dynamic.resources.get(api_version="example.com/v1", kind="Widget")
    made = widgets.server_side_apply(body={
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w", "namespace": "default"}, "spec": {"size": 3}},
        namespace="default", field_manager="installer")
    assert made.spec.size == 3 and made.metadata.managedFields[0].manager == "installer"


@pytest.mark.corpus
def test_istio_and_gateway_api_crds_from_the_corpus_serve_their_kinds(client, corpus):
    extensions = kubernetes.client.ApiextensionsV1Api(client)
    everything = (corpus / "crds" / "crd-all.gen.yaml").read_text()
    istio = [d for d in yaml.load_all(everything, Loader=yaml.CSafeLoader)
             if d and d["metadata"]["name"] == "virtualservices.networking.istio.io"]
    gateway = corpus.parent / "gateway-api" / "config" / "crd" / "standard"
    for crd in [*istio, yaml.safe_load(
            (gateway / "gateway.networking.k8s.io_httproutes.yaml").read_text())]:
        extensions.create_custom_resource_definition(crd)
    custom = kubernetes.client.CustomObjectsApi(client)
    custom.create_namespaced_custom_object("networking.istio.io", "v1", "default",
                                           "virtualservices", {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {
            "host": "reviews", "subset": "v2"}}]}]}})
    old_style = custom.list_namespaced_custom_object("networking.istio.io", "v1alpha3",
                                                     "default", "virtualservices")
    assert old_style["items"][0]["apiVersion"] == "networking.istio.io/v1alpha3"
    custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", "default",
                                           "httproutes", {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "route"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [
            {"name": "web", "port": 80}]}]}})
    route = custom.get_namespaced_custom_object_status(
        "gateway.networking.k8s.io", "v1", "default", "httproutes", "route")
    assert route["spec"]["parentRefs"] == [{"name": "gw"}]


def test_what_an_install_applies_is_served_and_a_deployments_status_is_its_own(tmp_path):
    with running(tmp_path) as api:
        client = kubernetes.config.new_client_from_config(str(api.kubeconfig))
        apps = kubernetes.client.AppsV1Api(client)
        body = {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}},
                                      "spec": {"containers": [{"name": "w", "image": "w"}]}}},
                "status": {"availableReplicas": 5}}
        created = apps.create_namespaced_deployment("default", body)
        assert created.status is None  # status only through /status
        apps.patch_namespaced_deployment_status("web", "default",
                                                {"status": {"availableReplicas": 1}})
        assert apps.read_namespaced_deployment("web", "default").status.available_replicas == 1
        rbac = kubernetes.client.RbacAuthorizationV1Api(client)
        rbac.create_cluster_role({"metadata": {"name": "reader"}, "rules": []})
        assert [r.metadata.name for r in rbac.list_cluster_role().items] == ["reader"]
        policy = kubernetes.client.PolicyV1Api(client)
        policy.create_namespaced_pod_disruption_budget("default", {
            "metadata": {"name": "web"}, "spec": {"maxUnavailable": 1}})
        assert policy.read_namespaced_pod_disruption_budget("web", "default").spec \
            .max_unavailable == 1


def test_a_service_gets_a_cluster_ip_from_the_service_range(tmp_path):
    with running(tmp_path, service_cidr="10.97.0.0/24") as api, \
            kubernetes.config.new_client_from_config(str(api.kubeconfig)) as client:
        core = kubernetes.client.CoreV1Api(client)

        def service(name: str, **spec: Any) -> Any:
            return core.create_namespaced_service("default", {
                "metadata": {"name": name}, "spec": {"ports": [{"port": 80}], **spec}}).spec

        first, second = service("a"), service("b")
        assert (first.cluster_ip, first.cluster_ips) == ("10.97.0.2", ["10.97.0.2"])
        assert second.cluster_ip == "10.97.0.3"
        assert service("chosen", clusterIP="10.97.0.9").cluster_ips == ["10.97.0.9"]
        assert service("headless", clusterIP="None").cluster_ips is None
        assert service("external", type="ExternalName",
                       externalName="example.com").cluster_ip is None
