"""The CNI node agent's watch: a running pod labelled into ambient is captured without the
plugin, and let go when it leaves; against the test kit's API server and a real network
namespace holding the pod's IP. Runs as root."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from pilotfish.core.ambient.zds import WorkloadInfo, run_client
from pilotfish.core.backoff import Backoff
from pilotfish.node.ambient_watch import PodWatch, netns_holding
from pilotfish.node.cni_agent import CniAgent
from pilotfish.plugins.kube import client
from pilotfish.testing.kube import FakeKubeApi, running
from pilotfish.testing.zds import RecordingZtunnel, netns_id

AMBIENT = {"istio.io/dataplane-mode": "ambient"}


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def pod_netns() -> Iterator[tuple[str, str]]:
    """A pod's network namespace, and the address it holds."""
    name = f"pf-zw-{uuid.uuid4().hex[:8]}"
    address = f"10.79.{os.getpid() % 250}.{uuid.uuid4().int % 250 + 1}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", name, "addr", "add", f"{address}/32", "dev", "lo")  # where is no matter
        yield name, address
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FakeKubeApi]:
    with running(tmp_path / "api") as server:
        yield server


def test_netns_holding_finds_the_namespace_by_address(pod_netns: tuple[str, str]):
    name, address = pod_netns
    assert netns_holding(address) == f"/run/netns/{name}"
    assert netns_holding("10.79.255.254") is None


def test_a_running_pod_labelled_ambient_is_captured_and_let_go_when_it_leaves(
        api: FakeKubeApi, pod_netns: tuple[str, str], tmp_path: Path):
    netns, address = pod_netns
    _, web, _ = api.seed(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
         "spec": {"nodeName": "node-a", "serviceAccountName": "web",
                  "containers": [{"name": "app"}]},
         "status": {"phase": "Running", "podIP": address}},
        {"apiVersion": "v1", "kind": "Pod",  # another node's: not this agent's
         "metadata": {"name": "far", "namespace": "shop"},
         "spec": {"nodeName": "node-b", "containers": [{"name": "app"}]},
         "status": {"phase": "Running", "podIP": "10.79.254.1"}})
    uid = web["metadata"]["uid"]
    kube = client.load(api.kubeconfig, pool_size=1)
    ztunnel = RecordingZtunnel()
    agent = CniAgent(tmp_path / "ztunnel.sock", tmp_path / "cni" / "pluginevent.sock")

    def patch(path: str, body: dict[str, Any]) -> dict[str, Any]:
        return kube.request("PATCH", path, None, body, "application/merge-patch+json")

    def rules() -> str:
        return sh("ip", "netns", "exec", netns, "iptables-save")

    async def body() -> None:
        async with anyio.create_task_group() as tasks:
            await tasks.start(agent.run)
            tasks.start_soon(lambda: run_client(agent.zds.path, ztunnel,
                                                retry=Backoff(initial=0.02, maximum=0.1)))
            assert await ztunnel.next() == ("snapshot_sent", frozenset())
            await tasks.start(PodWatch(agent, api.kubeconfig, "node-a").run)
            assert agent.pods == {}  # not ambient yet

            # The namespace joins ambient: the running pod is captured.
            await anyio.to_thread.run_sync(patch, "/api/v1/namespaces/shop",
                                           {"metadata": {"labels": AMBIENT}})
            assert await ztunnel.next() == ("add", uid, WorkloadInfo("web", "shop", "web"),
                                            netns_id(f"/run/netns/{netns}"))
            assert "-A ISTIO_OUTPUT" in rules()
            for _ in range(100):
                pod = await anyio.to_thread.run_sync(
                    kube.request, "GET", "/api/v1/namespaces/shop/pods/web")
                if pod["metadata"].get("annotations"):
                    break
                await anyio.sleep(0.05)
            assert pod["metadata"]["annotations"] == {"ambient.istio.io/redirection":
                                                      "enabled"}

            # The pod opts out: let go.
            await anyio.to_thread.run_sync(patch, "/api/v1/namespaces/shop/pods/web", {
                "metadata": {"labels": {"istio.io/dataplane-mode": "none"}}})
            assert await ztunnel.next() == ("del", uid)
            assert "ISTIO" not in rules()
            assert agent.pods == {}

            # Back in, then deleted from the API server: let go as well.
            await anyio.to_thread.run_sync(patch, "/api/v1/namespaces/shop/pods/web", {
                "metadata": {"labels": {"istio.io/dataplane-mode": None}}})
            assert (await ztunnel.next())[:2] == ("add", uid)
            await anyio.to_thread.run_sync(
                kube.request, "DELETE", "/api/v1/namespaces/shop/pods/web",
                {"gracePeriodSeconds": "0"})
            assert await ztunnel.next() == ("del", uid)
            assert "ISTIO" not in rules()
            tasks.cancel_scope.cancel()

    try:
        anyio.run(body)
    finally:
        kube.close()
