"""The Kubernetes source against the fake API server, through the official client: what a
user creates, changes and deletes reaches the store; a watch cut off and a 410 Gone lose
nothing and rebuild nothing that did not change; invalid objects keep their last good
version; CRDs come and go; only referenced Secrets are kept."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import kubernetes
import pytest

from pilotfish.core.objects import ConfigKey
from pilotfish.plugins.kube import client as kube_client
from pilotfish.plugins.kube.source import KubernetesSource
from pilotfish.testing.kube import FakeKubeApi
from pilotfish.testing.kube.crds import crd
from pilotfish.testing.kube.server import ADMIN

from .conftest import Running, running_source

VS = ("networking.istio.io", "v1", "virtualservices")


def service(name: str, port: int = 80, namespace: str = "default") -> dict:
    return {"metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port}]}}


def pod(name: str, ip: str, app: str, namespace: str = "default") -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
            "spec": {"nodeName": "node-1",
                     "containers": [{"name": "app", "image": "app:1",
                                     "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def virtual_service(name: str, host: str, weight: int = 100) -> dict:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name},
            "spec": {"hosts": [host], "http": [{"route": [
                {"destination": {"host": host}, "weight": weight}]}]}}


def port_of(found: Running, name: str) -> int | None:
    obj = found.get("Service", "default", name)
    return None if obj is None else obj.spec["ports"][0]["port"]


def set_port(core: kubernetes.client.CoreV1Api, name: str, port: int) -> None:
    core.patch_namespaced_service(name, "default", {"spec": {"ports": [
        {"name": "http", "port": port}]}}, _content_type="application/merge-patch+json")


def changed_keys(found: Running) -> set[str]:
    return {f"{k.kind}/{k.name}" for u in found.updates for k in u.changed}


def test_objects_created_changed_and_deleted_reach_the_store(api, core, crds, custom):
    crds()
    core.create_namespaced_service("default", service("before"))
    api.seed(pod("before-1", "10.1.0.1", "before"))
    with running_source(api) as found:
        # started() came after the first list: everything there is in the store already.
        assert port_of(found, "before") == 80
        assert found.get("Pod", "default", "before-1").body["status"]["podIP"] == "10.1.0.1"
        assert found.get("Namespace", "", "kube-system") is not None

        core.create_namespaced_service("default", service("web"))
        custom.create_namespaced_custom_object(*VS[:2], "default", VS[2],
                                               virtual_service("web", "web"))
        found.wait(lambda: port_of(found, "web") == 80 and found.get(
            "VirtualService", "default", "web"), "the new objects")
        set_port(core, "web", 81)
        found.wait(lambda: port_of(found, "web") == 81, "the change")
        core.delete_namespaced_service("web", "default")
        custom.delete_namespaced_custom_object(*VS[:2], "default", VS[2], "web")
        found.wait(lambda: found.get("Service", "default", "web") is None and found.get(
            "VirtualService", "default", "web") is None, "the deletions")
        stats = found.statistics()
        assert "relists" not in stats and "errors" not in stats
        assert stats["held"]["services"] == 1


def test_a_watch_cut_off_mid_stream_resumes_and_loses_nothing(api, core):
    core.create_namespaced_service("default", service("kept"))
    core.create_namespaced_service("default", service("removed"))
    with running_source(api) as found:
        assert all_watching(api, found) == 9  # the CRDs' and the built-in kinds'
        watches = found.statistics()["watches"]
        updates = len(found.updates)
        cut = api.cut_watches()
        assert cut == 9
        # Written while every watch is down or reconnecting.
        core.create_namespaced_service("default", service("added"))
        set_port(core, "kept", 82)
        core.delete_namespaced_service("removed", "default")
        found.wait(lambda: port_of(found, "added") == 80 and port_of(found, "kept") == 82
                   and found.get("Service", "default", "removed") is None, "the changes")
        found.wait(lambda: found.statistics()["watches"] >= watches + cut, "every watch back")
        assert "relists" not in found.statistics()  # resumed where they were, not relisted
        # Nothing seen before the cut came again as a change.
        assert changed_keys(attrs_slice(found, updates)) == {
            "Service/added", "Service/kept", "Service/removed"}


def all_watching(api: FakeKubeApi, found: Running) -> int:
    """Wait until every resource's watch is open; how many there are."""
    resources = len(found.statistics()["held"])
    found.wait(lambda: api.statistics()["watches"] >= resources, "every watch to open")
    return resources


def attrs_slice(found: Running, start: int) -> Running:
    return Running(found.source, found.store, found.portal, found.updates[start:])


def test_a_410_gone_lists_again_loses_nothing_and_pushes_only_what_changed(api, core):
    for name in ("a", "b", "c"):
        core.create_namespaced_service("default", service(name))
    with running_source(api) as found:
        all_watching(api, found)
        watches = found.statistics()["watches"]
        first = api.cut_watches()  # resumed at once, and cut off again within a second:
        found.wait(lambda: found.statistics()["watches"] >= watches + first, "the watches back")
        updates = len(found.updates)
        cut = api.cut_watches()  # this time they back off before they resume
        core.delete_namespaced_service("b", "default")
        core.create_namespaced_service("default", service("d"))
        api.compact()  # the history every watch would resume from is gone: 410s
        found.wait(lambda: found.statistics().get("relists", 0) >= cut, "every resource to "
                   "list again")
        found.wait(lambda: found.get("Service", "default", "b") is None
                   and port_of(found, "d") == 80, "the relist's changes")
        assert port_of(found, "a") == 80 and port_of(found, "c") == 80
        # The relists found everything else as it was: no other change reached the store.
        assert changed_keys(attrs_slice(found, updates)) == {"Service/b", "Service/d"}


def test_5000_pods_and_1000_services_are_listed_in_pages(api):
    api.seed(*({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": f"svc-{i}", "namespace": "default"},
                "spec": {"selector": {"app": f"app-{i}"},
                         "ports": [{"name": "http", "port": 80}]}} for i in range(1000)))
    api.seed(*(pod(f"pod-{i}", f"10.{i // 250}.{i % 250}.1", f"app-{i % 1000}")
               for i in range(5000)))
    started = time.monotonic()
    with running_source(api, page_size=500) as found:
        synced = time.monotonic() - started
        assert found.on_loop(lambda: len(found.store.objects("Pod"))) == 5000
        assert found.on_loop(lambda: len(found.store.objects("Service"))) == 1000
        stats = found.statistics()
        assert stats["held"]["pods"] == 5000
        # 10 pages of pods, 2 of services, one each for the rest.
        assert stats["pages"] == stats["lists"] + 9 + 1
        print(f"5,000 pods and 1,000 services listed in {stats['pages']} pages and synced "
              f"in {synced:.1f}s")


def test_an_invalid_object_keeps_its_last_good_version_and_gets_an_event(api, core, crds,
                                                                        custom):
    crds("VirtualService")
    custom.create_namespaced_custom_object(*VS[:2], "default", VS[2],
                                           virtual_service("web", "web", 100))
    with running_source(api) as found:
        good = found.get("VirtualService", "default", "web")
        broken = custom.patch_namespaced_custom_object(
            *VS[:2], "default", VS[2], "web",
            {"spec": {"http": [{"route": [{"destination": {"host": "web"}, "weight": -5}]}]}})
        found.wait(lambda: found.on_loop(found.store.errors), "the refusal")
        assert found.get("VirtualService", "default", "web").same_content(good)
        (error,) = found.on_loop(found.store.errors)
        assert str(error) == ("kubernetes:virtualservices.networking.istio.io: VirtualService "
                              "default/web: spec.http[0].route[0].weight: Invalid value: -5: "
                              "weight must not be negative")

        def event() -> kubernetes.client.CoreV1Event | None:
            events = core.list_namespaced_event(
                "default", field_selector="involvedObject.name=web").items
            return events[0] if events else None

        posted = found.wait(event, "the Event")
        assert (posted.type, posted.reason, posted.involved_object.kind,
                posted.involved_object.resource_version) == (
            "Warning", "InvalidConfig", "VirtualService",
            broken["metadata"]["resourceVersion"])
        assert "weight must not be negative" in posted.message

        custom.patch_namespaced_custom_object(*VS[:2], "default", VS[2], "web", {
            "spec": {"http": [{"route": [{"destination": {"host": "web"}, "weight": 1}]}]}})
        found.wait(lambda: found.get("VirtualService", "default", "web").spec["http"][0][
            "route"][0]["weight"] == 1, "the fixed version")
        assert found.on_loop(found.store.errors) == []
        # counted once the POST's answer is read, which may come after the Event is listed
        found.wait(lambda: found.statistics().get("events_posted") == 1, "the Event counted")


def test_a_crd_installed_later_is_picked_up_and_one_removed_takes_its_objects(
        api, client, crds, custom, caplog):
    with caplog.at_level(logging.INFO, logger="pilotfish.sources.kubernetes"), \
            running_source(api) as found:
        missing = [r.getMessage() for r in caplog.records
                   if "VirtualService.networking.istio.io" in r.getMessage()]
        assert missing == ["VirtualService.networking.istio.io: no CRD installed; skipped "
                           "until one is"]
        assert "VirtualService.networking.istio.io" in found.statistics()["missing_kinds"]
        crds("VirtualService")
        custom.create_namespaced_custom_object(*VS[:2], "default", VS[2],
                                               virtual_service("web", "web"))
        found.wait(lambda: found.get("VirtualService", "default", "web"), "the new kind")
        assert "VirtualService.networking.istio.io" not in found.statistics()["missing_kinds"]

        kubernetes.client.ApiextensionsV1Api(client).delete_custom_resource_definition(
            "virtualservices.networking.istio.io")
        found.wait(lambda: found.get("VirtualService", "default", "web") is None,
                   "the kind's objects to go with its CRD")


def test_a_crd_upgraded_to_another_version_keeps_its_objects_in_force(api, client, custom):
    extensions = kubernetes.client.ApiextensionsV1Api(client)
    extensions.create_custom_resource_definition(crd("networking.istio.io", "VirtualService",
                                                     ("v1beta1", "v1")))
    custom.create_namespaced_custom_object(*VS[:2], "default", VS[2],
                                           virtual_service("web", "web"))
    key = ConfigKey("VirtualService", "default", "web")
    with running_source(api) as found:
        assert found.get("VirtualService", "default", "web").api_version == \
            "networking.istio.io/v1beta1"
        present: list[bool] = []
        found.on_loop(found.store.subscribe, lambda update: present.append(
            found.store.get(key) is not None) if key in update.changed else None)
        upgraded = crd("networking.istio.io", "VirtualService", ("v1", "v1beta1"))
        extensions.patch_custom_resource_definition(
            upgraded["metadata"]["name"], {"spec": {"versions": upgraded["spec"]["versions"]}})
        found.wait(lambda: found.get("VirtualService", "default", "web").api_version ==
                   "networking.istio.io/v1", "the object read in the stored version")
        assert present and all(present)  # never absent on the way


def test_only_the_secrets_config_refers_to_are_kept(api, core, crds, custom):
    crds("Gateway")
    api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "edge"}},
             *({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name,
                                                                   "namespace": "edge"},
                "data": {"note": "eA=="}} for name in ("first", "second", "unrelated")))
    gateway = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
               "metadata": {"name": "gw"},
               "spec": {"selector": {"istio": "ingressgateway"}, "servers": [{
                   "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                   "hosts": ["*"], "tls": {"mode": "SIMPLE", "credentialName": "first"}}]}}
    custom.create_namespaced_custom_object("networking.istio.io", "v1", "edge", "gateways",
                                           gateway)
    with running_source(api) as found:
        assert found.get("Secret", "edge", "first") is not None
        assert found.get("Secret", "edge", "second") is None
        stats = found.statistics()
        assert stats["held"]["secrets"] == 3 and stats["kept"]["secrets"] == 1

        gateway["spec"]["servers"][0]["tls"]["credentialName"] = "second"
        custom.patch_namespaced_custom_object("networking.istio.io", "v1", "edge", "gateways",
                                              "gw", {"spec": gateway["spec"]})
        found.wait(lambda: found.get("Secret", "edge", "second") is not None
                   and found.get("Secret", "edge", "first") is None,
                   "the newly referred Secret (fetched) in place of the other")
        assert found.statistics()["fetched"] == 1
        core.patch_namespaced_secret("second", "edge", {"data": {"note": "eQ=="}})
        found.wait(lambda: found.get("Secret", "edge", "second").body["data"]["note"] ==
                   "eQ==", "the referred Secret's change")
        assert found.get("Secret", "edge", "unrelated") is None


def test_the_mesh_config_configmap_is_kept_and_others_are_not(api, core):
    core.create_namespace({"metadata": {"name": "istio-system"}})
    core.create_namespaced_config_map("istio-system", {
        "metadata": {"name": "istio"}, "data": {"mesh": "enableAutoMtls: false\n"}})
    core.create_namespaced_config_map("istio-system", {"metadata": {"name": "other"}})
    with running_source(api) as found:
        assert found.get("ConfigMap", "istio-system", "istio").body["data"] == {
            "mesh": "enableAutoMtls: false\n"}
        assert found.get("ConfigMap", "istio-system", "other") is None


def test_failures_are_retried_with_backoff_and_recover(api, core, caplog):
    with caplog.at_level(logging.WARNING, logger="pilotfish.sources.kubernetes"), \
            running_source(api) as found:
        api.revoke_token(api.token)
        api.cut_watches()
        found.wait(lambda: found.statistics()["errors"] >= 16, "refused watches")
        assert any("Unauthorized (401)" in r.getMessage() and "retrying in" in r.getMessage()
                   for r in caplog.records)
        api.add_token(ADMIN, api.token)
        core.create_namespaced_service("default", service("after"))
        found.wait(lambda: port_of(found, "after") == 80, "recovery", timeout=10)


def test_in_cluster_config_reads_the_service_account_token_and_ca(api: FakeKubeApi,
                                                                 tmp_path: Path):
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text(api.token)
    ca.write_bytes(api.ca_pem)
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1",
               "KUBERNETES_SERVICE_PORT": str(api.port)}
    assert kube_client.in_cluster(environ, token)
    assert not kube_client.in_cluster({}, token)
    made = kube_client.load(environ=environ, token_file=token, ca_file=ca)
    try:
        names = [n["metadata"]["name"] for n in made.request("GET", "/api/v1/namespaces")[
            "items"]]
    finally:
        made.close()
    assert "kube-system" in names
    with pytest.raises(kube_client.ConfigError, match="in-cluster config"):
        kube_client.load(environ={}, token_file=token, ca_file=ca)
    assert KubernetesSource.name == "kubernetes"
