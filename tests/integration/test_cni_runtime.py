"""The CNI chain run exactly as a container runtime runs it: bridge, host-local, pilotfish-cni.

Each test gets its own isolated bridge and private subnet (no NAT, no gateway, no default
route: nothing leaves the machine), network namespaces for pods, and a throw-away IPAM and
result cache; everything is removed afterwards, even when the test fails. Runs as root.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from pilotfish.node import cni_runtime

CNI_PATH = [Path("/usr/lib/cni"), Path(sys.executable).parent]
EXCLUSIONS = {
    "traffic.sidecar.istio.io/excludeOutboundPorts": "5432",
    "traffic.sidecar.istio.io/excludeInboundPorts": "8081",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.96.0.0/12",
}


def sh(*argv: str, check: bool = True) -> str:
    return subprocess.run(argv, check=check, capture_output=True, text=True).stdout


class Node:
    """One test's pod network: a conflist, its bridge and IPAM folder, and pods."""

    def __init__(self, tmp: Path) -> None:
        tag = uuid.uuid4().hex[:6]
        self.bridge = f"pfcni{tag}"
        self.subnet = f"10.250.{random.randrange(1, 255)}.0/24"
        self.ipam = tmp / "ipam"
        self.cache = tmp / "cache"
        self.tag = tag
        self.netns: list[str] = []
        self.conflist: dict[str, Any] = {
            "cniVersion": "1.0.0", "name": f"pilotfish-test-{tag}",
            "plugins": [
                # isGateway false: the bridge gets no address and the host's forwarding
                # setting is left alone; pods can reach only one another.
                {"type": "bridge", "bridge": self.bridge, "isGateway": False, "ipMasq": False,
                 "ipam": {"type": "host-local", "subnet": self.subnet,
                          "dataDir": str(self.ipam)}},
                {"type": "pilotfish-cni", "capabilities": {"pilotfishPod": True}},
            ],
        }

    def pod_netns(self, pod: str) -> str:
        name = f"pf-{pod}-{self.tag}"
        sh("ip", "netns", "add", name)
        self.netns.append(name)
        return name

    def call(self, command: str, pod: str, runtime: dict[str, Any] | None = None) -> Any:
        fn = {"ADD": cni_runtime.add, "DEL": cni_runtime.delete,
              "CHECK": cni_runtime.check}[command]

        async def go() -> Any:
            return await fn(self.conflist, f"/run/netns/pf-{pod}-{self.tag}", f"ctr-{pod}",
                            "eth0", runtime_config=runtime, cni_path=CNI_PATH,
                            cache_dir=self.cache)
        return anyio.run(go)

    def allocations(self) -> list[str]:
        folder = self.ipam / self.conflist["name"]
        return sorted(p.name for p in folder.iterdir() if p.name[0].isdigit()) \
            if folder.exists() else []

    def close(self) -> None:
        for name in self.netns:
            sh("ip", "netns", "delete", name, check=False)
        sh("ip", "link", "delete", self.bridge, check=False)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    made = Node(tmp_path)
    try:
        yield made
    finally:
        made.close()


def pod_config(name: str, sidecar: bool, annotations: dict[str, str] | None = None
               ) -> dict[str, Any]:
    return {"pilotfishPod": {"name": name, "namespace": "shop", "sidecar": sidecar,
                             "annotations": annotations or {}, "labels": {"app": name},
                             "containerPorts": [8080]}}


def saved(netns: str) -> str:
    return sh("ip", "netns", "exec", netns, "iptables-save")


def test_sidecar_pod_gets_an_address_and_its_capture_and_del_undoes_everything(node: Node):
    netns = node.pod_netns("web")
    runtime = pod_config("web", True, EXCLUSIONS)
    result = node.call("ADD", "web", runtime)

    address = cni_runtime.first_ipv4(result)
    assert address.startswith(node.subnet.rsplit(".", 2)[0] + ".")
    assert f"{address}/24" in sh("ip", "-n", netns, "-o", "addr", "show", "dev", "eth0")
    assert "default" not in sh("ip", "-n", netns, "route")
    assert node.allocations() == [address]

    rules = saved(netns)
    assert "-A OUTPUT -j ISTIO_OUTPUT" in rules
    assert "-A ISTIO_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN" in rules
    assert "-A ISTIO_OUTPUT -p udp -m udp --dport 5432 -j RETURN" in rules
    assert "-A ISTIO_INBOUND -p tcp -m tcp --dport 8081 -j RETURN" in rules
    assert "-A ISTIO_OUTPUT -d 10.96.0.0/12 -j RETURN" in rules
    assert "--dport 15020 -j RETURN" in rules  # Istio CNI's own exclusions still there

    node.call("CHECK", "web", runtime)

    node.call("DEL", "web", runtime)
    assert "ISTIO" not in saved(netns)
    assert "eth0" not in sh("ip", "-n", netns, "link")
    assert node.allocations() == []
    node.call("DEL", "web", runtime)  # DEL again: nothing left is fine


def test_pod_without_sidecar_is_networked_but_not_captured(node: Node):
    netns = node.pod_netns("db")
    result = node.call("ADD", "db", pod_config("db", False))
    assert cni_runtime.first_ipv4(result)
    assert "ISTIO" not in saved(netns)
    node.call("CHECK", "db", pod_config("db", False))
    node.call("DEL", "db", pod_config("db", False))
    assert node.allocations() == []


def test_check_fails_when_the_capture_was_tampered_with(node: Node):
    netns = node.pod_netns("api")
    runtime = pod_config("api", True)
    node.call("ADD", "api", runtime)
    sh("ip", "netns", "exec", netns, "iptables", "-t", "nat", "-F", "ISTIO_OUTPUT")
    with pytest.raises(cni_runtime.ChainError) as caught:
        node.call("CHECK", "api", runtime)
    error = caught.value
    assert (error.plugin, error.code, error.msg) == ("pilotfish-cni", 101,
                                                     "capture rules are not in place")
    assert "IPv4 nat ISTIO_OUTPUT: 0 rules" in error.details


def test_bad_pod_facts_fail_add_with_the_plugins_error_and_leak_nothing(node: Node):
    node.pod_netns("bad")
    runtime = pod_config("bad", True, {"traffic.sidecar.istio.io/excludeOutboundPorts": "pg"})
    with pytest.raises(cni_runtime.ChainError) as caught:
        node.call("ADD", "bad", runtime)
    error = caught.value
    assert error.plugin == "pilotfish-cni" and error.code == 7
    assert "annotation traffic.sidecar.istio.io/excludeOutboundPorts: 'pg' is not a port" \
        in error.msg
    assert str(error).startswith(f"CNI ADD {node.conflist['name']}: plugin pilotfish-cni "
                                 "(plugins[1]) failed: ")
    assert node.allocations() == []  # the runtime's DEL after a failed ADD released it


def test_bad_stdin_is_answered_with_cni_error_json_and_a_nonzero_exit(node: Node):
    netns = node.pod_netns("raw")
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr-raw", "CNI_NETNS": f"/run/netns/{netns}",
           "CNI_IFNAME": "eth0", "CNI_PATH": ":".join(map(str, CNI_PATH)), "PATH": "/usr/bin:/bin"}
    config = {"cniVersion": "1.0.0", "name": "x", "type": "pilotfish-cni",
              "runtimeConfig": {"pilotfishPod": {"namespace": "shop", "sidecar": True}}}
    for stdin, code, msg in [
        ("{oops", 6, "network config on stdin is not JSON"),
        (json.dumps(config), 7, "runtimeConfig.pilotfishPod.name: expected a non-empty string"),
    ]:
        done = subprocess.run([str(CNI_PATH[1] / "pilotfish-cni")], input=stdin, env=env,
                              capture_output=True, text=True, check=False, timeout=30)
        assert done.returncode != 0
        error = json.loads(done.stdout)
        assert set(error) == {"cniVersion", "code", "msg", "details"}
        assert error["code"] == code and error["msg"].startswith(msg)
    assert "ISTIO" not in saved(netns)
