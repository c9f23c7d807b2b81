"""``pilotfish down``: remove everything ``up`` made, from the state it wrote down.

Order: stop ``up`` itself if it still runs, stop discovery, then per pod kill every
process in its netns, CNI DEL (veth and address), delete the netns and its /etc/netns
folder; then the bridge and the state. Each step tolerates what is already gone, so
``down`` also finishes the job after a crash, and running it twice is harmless.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from pathlib import Path

import anyio

from pilotfish.node import netns
from pilotfish.node.state import NodeState, PodState, pid_alive


async def _stop_pid(pid: int, grace: float = 10.0) -> None:
    if not pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    with anyio.move_on_after(grace):
        while pid_alive(pid):
            await anyio.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def remove_pod(state: NodeState, pod: PodState) -> list[str]:
    """Kill every process in the pod's netns, CNI DEL, delete the netns, its /etc/netns
    folder and the pod's folder; returns the problems met (each already handled)."""
    from pilotfish.node import cni_runtime
    problems: list[str] = []
    try:
        await netns.kill_all(pod.netns)
    except netns.NodeError as exc:
        problems.append(str(exc))
    if state.cni_conf.exists() and netns.exists(pod.netns):
        try:
            await cni_runtime.delete(
                json.loads(state.cni_conf.read_text()), netns.netns_path(pod.netns),
                pod.container_id, "eth0", runtime_config=pod.cni_runtime,
                cache_dir=state.cni_cache, cni_path=[Path("/usr/lib/cni"), Path(_bin_dir())])
        except Exception as exc:  # the netns goes anyway; report and continue
            problems.append(f"pod {pod.key}: CNI DEL: {exc}")
    shutil.rmtree(state.pod_dir(pod), ignore_errors=True)
    try:
        await netns.delete(pod.netns)
    except netns.NodeError as exc:
        problems.append(str(exc))
    return problems


async def teardown(state: NodeState, *, keep_up_pid: bool = False) -> list[str]:
    """Remove what the state lists; returns the problems met (each already handled)."""
    problems: list[str] = []
    if not keep_up_pid and state.up_pid and state.up_pid != os.getpid():
        await _stop_pid(state.up_pid, grace=30.0)
    await _stop_pid(state.discovery_pid)
    for pid in state.ambient_pids.values():  # ztunnel first lets go of the pods' sockets
        await _stop_pid(pid)
    for pod in list(state.pods.values()):
        problems += await remove_pod(state, pod)
    if state.bridge:
        check = await anyio.run_process(["ip", "link", "show", state.bridge], check=False)
        if check.returncode == 0:
            try:
                await netns.run(["ip", "link", "delete", state.bridge],
                                what=f"bridge {state.bridge}: delete")
            except netns.NodeError as exc:
                problems.append(str(exc))
    shutil.rmtree(state.state_dir, ignore_errors=True)
    return problems


def _bin_dir() -> str:
    import sys

    return str(Path(sys.executable).parent)


async def down(state_dir: Path) -> int:
    state = NodeState.load(state_dir)
    if state is None:
        print(f"nothing to do: no node state in {state_dir}")
        return 0
    problems = await teardown(state)
    for problem in problems:
        print(f"warning: {problem}")
    print(f"removed {len(state.pods)} pods, the bridge {state.bridge} and {state_dir}")
    return 0
