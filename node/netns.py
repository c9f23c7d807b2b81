"""Network namespaces for pods: create, configure, run commands in, remove.

Thin wrappers over iproute2 and iptables. ``ip netns exec`` also bind-mounts
``/etc/netns/NAME/{hosts,resolv.conf}`` over ``/etc``, which is how pods resolve service
names (see `pilotfish.node.cluster.hosts_file`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path

import anyio

ETC_NETNS = Path("/etc/netns")
RUN_NETNS = Path("/var/run/netns")


class NodeError(RuntimeError):
    """A step of setting up or tearing down the node failed; the message names it."""


async def run(argv: Sequence[str], *, what: str, stdin: bytes | None = None) -> str:
    try:
        result = await anyio.run_process(list(argv), input=stdin, check=False)
    except FileNotFoundError as exc:
        raise NodeError(f"{what}: {argv[0]} is not installed (./dev setup installs it)") from exc
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).decode(errors="replace").strip()
        raise NodeError(f"{what}: {' '.join(argv[:6])} failed ({result.returncode}): {detail}")
    return result.stdout.decode(errors="replace")


def netns_path(name: str) -> str:
    return str(RUN_NETNS / name)


def exists(name: str) -> bool:
    return (RUN_NETNS / name).exists()


async def create(name: str) -> None:
    if not exists(name):
        await run(["ip", "netns", "add", name], what=f"netns {name}: create")
    await run(["ip", "-n", name, "link", "set", "lo", "up"], what=f"netns {name}: loopback up")


async def delete(name: str) -> None:
    if exists(name):
        await run(["ip", "netns", "delete", name], what=f"netns {name}: delete")
    shutil.rmtree(ETC_NETNS / name, ignore_errors=True)


async def add_route(name: str, cidr: str, via: str) -> None:
    await run(["ip", "-n", name, "route", "replace", cidr, "via", via],
              what=f"netns {name}: route {cidr} via {via}")


async def set_extra_addresses(name: str, device: str, own: str,
                              wanted: AbstractSet[str]) -> None:
    """Make ``wanted`` the IPv4 addresses ``device`` holds besides its own (``own``), as
    /32s: a load balancer's addresses, answered for on the bridge by ARP."""
    out = await run(["ip", "-n", name, "-4", "-o", "addr", "show", "dev", device],
                    what=f"netns {name}: addresses of {device}")
    held = {fields[3].split("/")[0]: fields[3] for line in out.splitlines()
            if len(fields := line.split()) > 3 and fields[2] == "inet"}
    held.pop(own, None)
    for address in sorted(wanted - set(held)):
        await run(["ip", "-n", name, "addr", "add", f"{address}/32", "dev", device],
                  what=f"netns {name}: load-balancer address {address}")
    for address in sorted(set(held) - set(wanted)):
        await run(["ip", "-n", name, "addr", "del", held[address], "dev", device],
                  what=f"netns {name}: load-balancer address {address} removed")


def write_name_files(name: str, hosts: str, resolv: str) -> None:
    folder = ETC_NETNS / name
    folder.mkdir(parents=True, exist_ok=True)
    for file, text in (("hosts", hosts), ("resolv.conf", resolv)):
        tmp = folder / f".{file}.tmp"
        tmp.write_text(text)
        tmp.replace(folder / file)


def exec_argv(name: str, argv: Sequence[str], uid: int | None = None,
              gid: int | None = None, caps: Sequence[str] = ()) -> list[str]:
    """argv that runs ``argv`` inside the pod's netns, as ``uid:gid`` when given. ``caps``
    (``net_admin``) are all a root ``uid`` keeps, for it and what it runs (a container's
    ``capabilities: {drop: [ALL], add: [...]}``)."""
    out = ["ip", "netns", "exec", name]
    if uid is not None:
        out += ["setpriv", f"--reuid={uid}", f"--regid={gid if gid is not None else uid}",
                "--clear-groups"]
        if caps:
            kept = ",".join(["-all", *(f"+{cap}" for cap in caps)])
            out += [f"--inh-caps={kept}", f"--bounding-set={kept}"]
        out.append("--")
    return out + list(argv)


async def apply_nat(name: str, rules: str, chain: str) -> None:
    """Replace one of our nat chains inside the netns and make sure OUTPUT jumps to it."""
    await run(["ip", "netns", "exec", name, "iptables-restore", "--noflush"],
              what=f"netns {name}: service rules", stdin=rules.encode())
    check = await anyio.run_process(
        ["ip", "netns", "exec", name, "iptables", "-t", "nat", "-C", "OUTPUT", "-j", chain],
        check=False)
    if check.returncode != 0:
        await run(["ip", "netns", "exec", name, "iptables", "-t", "nat", "-A", "OUTPUT",
                   "-j", chain], what=f"netns {name}: jump to {chain}")


async def pids(name: str) -> list[int]:
    if not exists(name):
        return []
    out = await run(["ip", "netns", "pids", name], what=f"netns {name}: list processes")
    return [int(p) for p in out.split()]


async def kill_all(name: str, grace: float = 5.0) -> None:
    """Stop every process in the netns: SIGTERM, a grace period, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        remaining = await pids(name)
        for pid in remaining:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if not remaining:
            return
        with anyio.move_on_after(grace if sig == signal.SIGTERM else 2.0):
            while await pids(name):
                await anyio.sleep(0.1)
