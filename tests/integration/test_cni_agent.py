"""The CNI node agent end to end: pilotfish-cni run as a container runtime runs it, the agent
writing the in-pod rules, and a ztunnel (a ZDS client here) receiving the pod's netns.

Runs as root: a bridge, host-local IPAM and network namespaces per test, as
test_cni_runtime.py does; everything is removed afterwards. The agent runs in the test's event
loop; the plugin is the installed ``pilotfish-cni`` executable in a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from pilotfish.core.ambient.zds import WorkloadInfo, run_client
from pilotfish.core.backoff import Backoff
from pilotfish.core.http_client import request
from pilotfish.interceptors import iptables
from pilotfish.interceptors.ambient_rules import inpod_plan
from pilotfish.interceptors.ambient_settings import AmbientSettings
from pilotfish.interceptors.netns_exec import Netns
from pilotfish.node import cni_runtime
from pilotfish.node.cni_agent import CniAgent
from pilotfish.testing.zds import RecordingZtunnel as Ztunnel
from pilotfish.testing.zds import netns_id

CNI_PATH = [Path("/usr/lib/cni"), Path(sys.executable).parent]
SETTINGS = AmbientSettings()  # Istio's defaults: IPv6 and DNS capture on
AMBIENT = {"istio.io/dataplane-mode": "ambient"}


def sh(*argv: str, check: bool = True) -> str:
    return subprocess.run(argv, check=check, capture_output=True, text=True).stdout


class Node:
    def __init__(self, tmp: Path) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.bridge = f"pfza{self.tag}"
        self.run_dir = tmp / "istio-cni"
        self.zds_socket = tmp / "ztunnel" / "ztunnel.sock"
        self.cache = tmp / "cache"
        mesh = tmp / "pilotfish.yaml"
        mesh.write_text("profile: [sidecar, ambient]\n")
        self.netns: list[str] = []
        self.conflist: dict[str, Any] = {
            "cniVersion": "1.0.0", "name": f"pilotfish-ambient-{self.tag}",
            "plugins": [
                {"type": "bridge", "bridge": self.bridge, "isGateway": False, "ipMasq": False,
                 "ipam": {"type": "host-local",
                          "subnet": f"10.251.{random.randrange(1, 255)}.0/24",
                          "dataDir": str(tmp / "ipam")}},
                {"type": "pilotfish-cni", "capabilities": {"pilotfishPod": True},
                 "mesh_config": str(mesh), "cni_agent_run_dir": str(self.run_dir)},
            ],
        }

    def pod_netns(self, pod: str) -> str:
        name = f"pfza-{pod}-{self.tag}"
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        self.netns.append(name)
        return name

    async def cni(self, command: str, pod: str, runtime: dict[str, Any]) -> Any:
        fn = {"ADD": cni_runtime.add, "DEL": cni_runtime.delete,
              "CHECK": cni_runtime.check}[command]
        return await fn(self.conflist, f"/run/netns/pfza-{pod}-{self.tag}", f"ctr-{pod}",
                        "eth0", runtime_config=runtime, cni_path=CNI_PATH,
                        cache_dir=self.cache)

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


def pod(name: str, labels: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"pilotfishPod": {"name": name, "namespace": "shop", "uid": f"uid-{name}",
                             "serviceAccount": f"sa-{name}", "labels": labels, **extra}}


async def start_ztunnel(tasks: anyio.abc.TaskGroup, node: Node, ztunnel: Ztunnel
                        ) -> anyio.CancelScope:
    """A ztunnel connecting to the agent; cancel the scope to kill it."""
    scope = anyio.CancelScope()

    async def client() -> None:
        with scope:
            await run_client(node.zds_socket, ztunnel, retry=Backoff(initial=0.02,
                                                                      maximum=0.1))
    tasks.start_soon(client)
    return scope


@asynccontextmanager
async def running(node: Node, ztunnel: Ztunnel | None = None
                  ) -> AsyncIterator[tuple[CniAgent, anyio.abc.TaskGroup]]:
    agent = CniAgent(node.zds_socket, node.run_dir / "pluginevent.sock", SETTINGS)
    async with anyio.create_task_group() as tasks:
        await tasks.start(agent.run)
        if ztunnel is not None:
            await start_ztunnel(tasks, node, ztunnel)
            await asyncio.wait_for(agent.zds.wait_connected(), 5)
            assert await ztunnel.next() == ("snapshot_sent", frozenset())
        yield agent, tasks
        tasks.cancel_scope.cancel()


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with anyio.fail_after(60):
            await body()
    anyio.run(bounded)


def rules_in(netns: str) -> str:
    return sh("ip", "netns", "exec", netns, "iptables-save")


def probe_set() -> dict[str, str]:
    """The node's probe ipset (this namespace's): IP → pod UID; {} when there is none."""
    listed = sh("ipset", "list", "istio-inpod-probes-v4", "-output", "save", check=False)
    return {words[2]: words[4].strip('"') for words in map(str.split, listed.splitlines())
            if len(words) >= 5 and words[0] == "add"}


def host_rule() -> bool:
    return "ISTIO_POSTRT" in sh("iptables-save", "-t", "nat")


def test_cni_add_writes_the_inpod_rules_and_hands_ztunnel_the_netns_and_del_undoes_it(
        node: Node):
    netns = node.pod_netns("web")
    ztunnel = Ztunnel()
    runtime = pod("web", AMBIENT)

    async def body() -> None:
        async with running(node) as (agent, tasks):
            first = await start_ztunnel(tasks, node, ztunnel)
            assert await ztunnel.next() == ("snapshot_sent", frozenset())
            await node.cni("ADD", "web", runtime)
            assert await ztunnel.next() == ("add", "uid-web",
                                            WorkloadInfo("web", "shop", "sa-web"),
                                            netns_id(f"/run/netns/{netns}"))
            assert await anyio.to_thread.run_sync(
                iptables.differences, inpod_plan(SETTINGS), Netns(netns)) == []
            assert "uid-web" in agent.zds.known()
            # the node's probes reach the pod past ztunnel: its IP in the set, the rule there
            [address] = [a for a in sh("ip", "-n", netns, "-o", "-4", "addr", "show", "eth0")
                         .split() if a.startswith("10.251.") and "/" in a]
            assert probe_set() == {address.split("/")[0]: "uid-web"} and host_rule()
            await node.cni("CHECK", "web", runtime)

            # ztunnel restarted: the new one is handed the pod's netns again.
            first.cancel()
            restarted = Ztunnel()
            await start_ztunnel(tasks, node, restarted)
            assert await restarted.next() == ("add", "uid-web",
                                              WorkloadInfo("web", "shop", "sa-web"),
                                              netns_id(f"/run/netns/{netns}"))
            assert await restarted.next() == ("snapshot_sent", frozenset({"uid-web"}))

            await node.cni("DEL", "web", runtime)
            assert await restarted.next() == ("del", "uid-web")
            assert probe_set() == {}
            assert "ISTIO" not in rules_in(netns)
            assert "lookup 100" not in sh("ip", "-n", netns, "rule")
            assert agent.zds.known() == frozenset()

    run(body)


def test_sidecar_and_plain_pods_are_not_the_agents(node: Node):
    ztunnel = Ztunnel()
    node.pod_netns("plain")
    node.pod_netns("opted-out")

    async def body() -> None:
        async with running(node, ztunnel) as (agent, _):
            await node.cni("ADD", "plain", pod("plain", {}))
            await node.cni("ADD", "opted-out", pod(
                "opted-out", {"istio.io/dataplane-mode": "none"},
                namespaceLabels=AMBIENT))
            assert ztunnel.events.empty() and agent.pods == {}
            await node.cni("DEL", "plain", pod("plain", {}))
            assert await ztunnel.next() == ("del", "uid-plain")  # named: ztunnel forgets it

    run(body)


def test_a_running_pod_labelled_ambient_is_enrolled_without_the_plugin(node: Node):
    netns = node.pod_netns("late")
    ztunnel = Ztunnel()
    events = str(node.run_dir / "pluginevent.sock")

    async def body() -> None:
        async with running(node, ztunnel):
            body = {"Netns": f"/run/netns/{netns}", "PodName": "late", "PodNamespace": "shop",
                    "PodUID": "uid-late", "Labels": {}, "NamespaceLabels": AMBIENT}
            reply = await request("http://unix/enroll", "POST",
                                  body=json.dumps(body).encode(), unix_socket=events)
            assert reply.status == 200, reply.text
            assert json.loads(reply.body)["redirection"] == "enabled"
            assert await ztunnel.next() == ("add", "uid-late",
                                            WorkloadInfo("late", "shop", "default"),
                                            netns_id(f"/run/netns/{netns}"))
            assert "-A ISTIO_OUTPUT" in rules_in(netns)

    run(body)


def test_bad_events_get_a_4xx_naming_the_field_and_the_agent_carries_on(node: Node):
    netns = node.pod_netns("odd")
    events = str(node.run_dir / "pluginevent.sock")
    good = {"Netns": f"/run/netns/{netns}", "PodName": "odd", "PodNamespace": "shop",
            "PodUID": "uid-odd", "Labels": AMBIENT}

    async def post(path: str, body: Any) -> tuple[int, str]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        reply = await request(f"http://unix{path}", "POST", body=data, unix_socket=events)
        return reply.status, json.loads(reply.body)["error"] if reply.status != 200 else ""

    async def body() -> None:
        async with running(node) as (agent, _):
            assert await post("/cmdadd", b"{nope") == (
                400, "/cmdadd: the body is not JSON: Expecting property name enclosed in "
                     "double quotes: line 1 column 2 (char 1)")
            assert await post("/cmdadd", {**good, "PodUID": ""}) == (
                400, "/cmdadd: PodUID: expected a non-empty string, got ''")
            status, error = await post("/cmdadd", {k: v for k, v in good.items()
                                                   if k != "PodName"})
            assert (status, error) == (400, "/cmdadd: PodName: missing (a non-empty string)")
            status, error = await post("/cmdadd", {**good, "Labels": {"app": 7}})
            assert status == 400 and error.startswith("/cmdadd: Labels: expected")
            status, error = await post("/cmdadd", {**good, "Netns": "/run/netns/nope"})
            assert status == 400 and error.startswith("Netns: '/run/netns/nope': ")
            status, error = await post("/cmdadd", {**good, "Labels": {}})
            assert status == 400 and "not in ambient mode" in error
            status, error = await post("/cmdadd", {**good, "Annotations": {
                "istio.io/reroute-virtual-interfaces": "bad name!"}})
            assert status == 400 and "istio.io/reroute-virtual-interfaces" in error
            reply = await request("http://unix/cmdadd", unix_socket=events)
            assert reply.status == 405
            # None of that stopped it: a good pod is captured (held: no ztunnel yet).
            status, _ = await post("/cmdadd", good)
            assert status == 200 and agent.zds.known() == {"uid-odd"}
            assert "-A ISTIO_PRERT" in rules_in(netns)

    run(body)


def test_without_the_agent_cni_add_fails_saying_so(node: Node):
    node.pod_netns("lost")

    async def body() -> None:
        with pytest.raises(cni_runtime.ChainError) as caught:
            await node.cni("ADD", "lost", pod("lost", AMBIENT))
        error = caught.value
        assert error.plugin == "pilotfish-cni" and error.code == 100
        assert "the CNI node agent on" in error.details
        assert "is `pilotfish cni-agent` running?" in error.details

    run(body)


def test_the_command_serves_both_sockets_and_removes_them_on_sigterm(tmp_path: Path):
    zds_socket, events = tmp_path / "ztunnel" / "ztunnel.sock", tmp_path / "cni" / "ev.sock"
    agent = subprocess.Popen([str(Path(sys.executable).parent / "pilotfish"), "cni-agent",
                              "--zds-socket", str(zds_socket), "--events-socket", str(events)],
                             stderr=subprocess.PIPE, text=True)
    ztunnel = Ztunnel()

    async def body() -> None:
        while not (zds_socket.exists() and events.exists()):
            await anyio.sleep(0.02)
        assert zds_socket.stat().st_mode & 0o777 == 0o600
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(lambda: run_client(zds_socket, ztunnel))
            assert await ztunnel.next() == ("snapshot_sent", frozenset())
            reply = await request("http://unix/pods", unix_socket=str(events))
            assert json.loads(reply.body) == {"ztunnelConnected": True,
                                              "hostProbes": True, "pods": []}
            assert host_rule()
            tasks.cancel_scope.cancel()

    try:
        run(body)
        agent.send_signal(15)
        _, err = agent.communicate(timeout=10)
        assert agent.returncode == 0, err
        assert not zds_socket.exists() and not events.exists()
        # the rule and the set go with the agent
        assert not host_rule()
        assert "istio-inpod-probes" not in sh("ipset", "list", "-name")
    finally:
        agent.kill()


def test_a_restarted_agent_holds_its_pods_again_but_not_the_gone_ones(node: Node):
    stays, goes = node.pod_netns("stays"), node.pod_netns("goes")
    ztunnel = Ztunnel()
    events = str(node.run_dir / "pluginevent.sock")

    async def enroll(name: str, netns: str) -> None:
        body = {"Netns": f"/run/netns/{netns}", "PodName": name, "PodNamespace": "shop",
                "PodUID": f"uid-{name}", "Labels": AMBIENT}
        reply = await request("http://unix/cmdadd", "POST", body=json.dumps(body).encode(),
                              unix_socket=events)
        assert reply.status == 200, reply.text

    async def body() -> None:
        async with running(node):
            await enroll("stays", stays)
            await enroll("goes", goes)
        sh("ip", "netns", "delete", goes)  # the pod went while the agent was down
        async with running(node) as (agent, tasks):
            assert agent.zds.known() == {"uid-stays"}
            await start_ztunnel(tasks, node, ztunnel)
            assert await ztunnel.next() == ("add", "uid-stays",
                                            WorkloadInfo("stays", "shop", "default"),
                                            netns_id(f"/run/netns/{stays}"))
            assert await ztunnel.next() == ("snapshot_sent", frozenset({"uid-stays"}))
            await node.cni("DEL", "stays", pod("stays", AMBIENT))
            assert "ISTIO" not in rules_in(stays)  # the rules of a pod held again go too
        saved = json.loads((node.run_dir / "ambient-pods.json").read_text())
        assert saved == []

    run(body)


def test_a_pod_with_ipv6_off_on_its_loopback_is_captured_without_the_ipv6_route(node: Node):
    netns = node.pod_netns("v4")
    sh("ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv6.conf.lo.disable_ipv6=1")
    ztunnel = Ztunnel()

    async def body() -> None:
        async with running(node, ztunnel):
            await node.cni("ADD", "v4", pod("v4", AMBIENT))
            assert (await ztunnel.next())[:2] == ("add", "uid-v4")
            assert "local default dev lo" in sh("ip", "-n", netns, "route", "show",
                                                "table", "100")
            assert sh("ip", "-n", netns, "-6", "route", "show", "table", "100").strip() == ""
            assert "-A ISTIO_OUTPUT" in rules_in(netns)

    run(body)
