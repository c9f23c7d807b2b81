"""A node whose config has no pod yet comes up (discovery binds the bridge's address, which
the node makes itself before any CNI ADD), and a Gateway added later gets its router."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pilotfish.testing.node import Node, leftovers
from pilotfish.testing.processes import wait_until

pytestmark = [pytest.mark.envoy, pytest.mark.e2e]

SUBNET = "10.252.9.0/24"
GATEWAY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: late, namespace: infra}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
"""


def test_an_empty_node_comes_up_and_takes_pods_later(tmp_path: Path):
    assert os.geteuid() == 0, "the e2e tests run as root (CI does)"
    config = tmp_path / "config"
    config.mkdir()
    (config / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: infra}\n")
    node = Node(tmp_path, config, SUBNET, "pfe0")
    netns_names: list[str] = []
    try:
        node.start(timeout=60)
        assert node.status()["pods"] == []
        started = time.monotonic()
        (config / "gateway.yaml").write_text(GATEWAY)
        wait_until(lambda: [p["sidecar"] for p in node.status()["pods"]] == ["ready"], 30,
                   what="the Gateway's router to be ready")
        print(f"router ready {time.monotonic() - started:.1f}s after the Gateway was written")
        netns_names = [str(p["netns"]) for p in node.status()["pods"]]
    finally:
        node.stop()
        node.down()
    assert leftovers(node, netns_names) == []
