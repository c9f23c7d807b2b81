"""``pilotfish waypoint apply|list|delete``: the Gateway istioctl writes, in a config folder
(files of its own; a user's files never rewritten) and in a cluster (the fake API server,
through the real client, with server-side apply)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
import yaml

from pilotfish.cli.main import main
from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import parse_node
from pilotfish.core.yamlload import load_text
from pilotfish.testing.kube import FakeKubeApi, running
from pilotfish.testing.kube.crds import crd
from pilotfish.translators.ambient.waypoint_scope import bound_services

GATEWAY = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "Gateway",
    "metadata": {"name": "waypoint", "namespace": "shop",
                 "labels": {"istio.io/waypoint-for": "service"}},
    "spec": {"gatewayClassName": "istio-waypoint",
             "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]},
}
SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 9080}]
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["waypoint", *args]) == 0
    return capsys.readouterr().out


def test_apply_writes_istioctls_gateway_and_enrolls_the_namespace(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "reviews.yaml").write_text(SERVICE)
    out = run(capsys, "apply", "-n", "shop", "--config-dir", str(tmp_path),
              "--enroll-namespace")
    assert "✅ waypoint shop/waypoint applied" in out
    assert '✅ namespace shop labeled with "istio.io/use-waypoint: waypoint"' in out
    assert yaml.safe_load((tmp_path / "waypoint-shop-waypoint.yaml").read_text()) == GATEWAY
    assert main(["validate", str(tmp_path)]) == 0  # what it wrote validates cleanly
    assert "0 errors, 0 warnings" in capsys.readouterr().err
    # What discovery will read from the folder binds the namespace's service to it.
    objects = []
    for path in sorted(tmp_path.glob("*.yaml")):
        found, errors = load_text(path.read_text(), str(path))
        assert not errors
        objects += found
    push = push_context.build(objects, MeshSettings(), "v1")
    proxy = parse_node("waypoint~10.0.0.9~waypoint-1.shop~shop.svc.cluster.local",
                       {"LABELS": {"gateway.networking.k8s.io/gateway-name": "waypoint"}})
    assert [b.service.name for b in bound_services(push, proxy)] == ["reviews"]


def test_list_and_delete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = ["--config-dir", str(tmp_path)]
    run(capsys, "apply", "-n", "shop", *folder)
    run(capsys, "apply", "-n", "shop", "--name", "all-traffic", "--for", "all", *folder)
    run(capsys, "apply", "-n", "other", *folder)
    assert run(capsys, "list", "-n", "shop", *folder).splitlines() == [
        "NAME         NAMESPACE  TRAFFIC TYPE",
        "all-traffic  shop       all",
        "waypoint     shop       service"]
    assert len(run(capsys, "list", "-A", *folder).splitlines()) == 4
    listed = json.loads(run(capsys, "list", "-n", "other", "-o", "json", *folder))
    assert [w["metadata"]["namespace"] for w in listed] == ["other"]
    assert "deleted" in run(capsys, "delete", "-n", "shop", "all-traffic", "waypoint", *folder)
    assert run(capsys, "list", "-n", "shop", *folder) == "No waypoints found in namespace shop.\n"


def test_a_users_own_files_are_never_rewritten(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "shop.yaml"
    mine.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n"
                    + yaml.safe_dump(GATEWAY))
    before = mine.read_text()
    folder = ["-n", "shop", "--config-dir", str(tmp_path)]
    assert main(["waypoint", "apply", *folder]) == 2
    assert f"{mine}: already declares Gateway shop/waypoint" in capsys.readouterr().err
    assert main(["waypoint", "delete", *folder]) == 2
    assert f"{mine}: declares waypoint shop/waypoint" in capsys.readouterr().err
    assert main(["waypoint", "apply", "--name", "second", "--enroll-namespace", *folder]) == 2
    err = capsys.readouterr().err
    assert f'{mine}: declares Namespace shop; add the label "istio.io/use-waypoint: second"' \
        in err
    assert mine.read_text() == before


def test_enrolling_a_namespace_that_uses_another_waypoint_needs_overwrite(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = ["-n", "shop", "--config-dir", str(tmp_path)]
    run(capsys, "apply", "--enroll-namespace", *folder)
    assert main(["waypoint", "apply", "--name", "next", "--enroll-namespace", *folder]) == 2
    assert "already uses waypoint waypoint; pass --overwrite" in capsys.readouterr().err
    run(capsys, "apply", "--name", "next", "--enroll-namespace", "--overwrite", *folder)
    labels = yaml.safe_load((tmp_path / "namespace-shop.yaml").read_text())["metadata"]["labels"]
    assert labels == {"istio.io/use-waypoint": "next"}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FakeKubeApi]:
    with running(tmp_path / "api") as server:
        server.seed({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": "shop", "labels": {"team": "books"}}},
                    crd("gateway.networking.k8s.io", "Gateway"))
        yield server


def test_in_a_cluster_with_server_side_apply(
        api: FakeKubeApi, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = ["-n", "shop", "--kubeconfig", str(api.kubeconfig)]
    run(capsys, "apply", "--enroll-namespace", *cluster)
    with kubernetes.config.new_client_from_config(str(api.kubeconfig)) as client:
        custom = kubernetes.client.CustomObjectsApi(client)
        found = custom.get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", "shop", "gateways", "waypoint")
        assert found["spec"] == GATEWAY["spec"]
        assert found["metadata"]["managedFields"][0]["manager"] == "pilotfish"
        namespace = kubernetes.client.CoreV1Api(client).read_namespace("shop")
        # the label is added; what others set stays
        assert namespace.metadata.labels["istio.io/use-waypoint"] == "waypoint"
        assert namespace.metadata.labels["team"] == "books"
    assert "waypoint  shop       service" in run(capsys, "list", *cluster)
    run(capsys, "delete", *cluster)
    assert run(capsys, "list", *cluster) == "No waypoints found in namespace shop.\n"
