"""``pilotfish up | down | exec | status``: the local node's commands.

``status`` and ``exec`` are typed often: what only ``up`` and ``down`` need is imported
in them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any

from pilotfish.node.state import DEFAULT_STATE_DIR, NodeState, PodState, pid_alive


def _state_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR),
                        help="where the node records what it made (default %(default)s)")


def bundled_config() -> Path:
    return Path(str(resources.files("pilotfish.demo") / "config"))


def add_up_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-dir", help="config with Pods to run (default: the bundled "
                        "demo mesh)")
    parser.add_argument("--kubeconfig", help="be the node of this cluster's API server: run "
                        "its pods, and discovery reading it (instead of --config-dir)")
    parser.add_argument("--context", help="the kubeconfig's context (default: its "
                        "current-context)")
    parser.add_argument("--mesh-config", help="pilotfish.yaml")
    parser.add_argument("--proxy", help="proxy backend (default: the mesh config's proxy, "
                        "else envoy)")
    parser.add_argument("--subnet", default="10.250.0.0/24",
                        help="pod network (default %(default)s)")
    parser.add_argument("--bridge", default="pf0", help="bridge name (default %(default)s)")
    parser.add_argument("--debug-address", default="127.0.0.1:15014")
    parser.add_argument("--proxy-concurrency", type=int, default=None,
                        help="workers per sidecar proxy (default: the proxy's own — Envoy 2 "
                        "threads, as Istio's sidecars; native 1 process)")
    parser.add_argument("--cert-ttl", default="",
                        help="workload certificate lifetime sidecars ask for (e.g. 2m; "
                        "default: the agent's 24h)")
    _state_arg(parser)


def up_main(args: argparse.Namespace) -> int:
    from pilotfish.core import meshconfig
    from pilotfish.core.plugins import PluginError, chosen_proxy
    from pilotfish.node.up import UpOptions, run_up
    if os.geteuid() != 0:
        print("pilotfish up: needs root (network namespaces, veth, iptables)", file=sys.stderr)
        return 2
    kubeconfig = Path(args.kubeconfig) if args.kubeconfig else None
    if kubeconfig is not None and args.config_dir:
        print("pilotfish up: --kubeconfig and --config-dir: the objects come from one or "
              "the other", file=sys.stderr)
        return 2
    if args.context and kubeconfig is None:
        print("pilotfish up: --context needs --kubeconfig", file=sys.stderr)
        return 2
    if kubeconfig is not None and not kubeconfig.is_file():
        print(f"pilotfish up: --kubeconfig {kubeconfig}: no such file", file=sys.stderr)
        return 2
    demo = args.config_dir is None and kubeconfig is None
    config_dir = Path(args.config_dir) if args.config_dir else bundled_config()
    if not config_dir.is_dir():
        print(f"pilotfish up: --config-dir {config_dir}: not a directory", file=sys.stderr)
        return 2
    mesh_config = Path(args.mesh_config) if args.mesh_config else None
    try:  # a wrong mesh config or proxy name stops up before it makes anything
        proxy, _ = chosen_proxy(meshconfig.load(mesh_config), args.proxy)
    except (meshconfig.MeshConfigError, PluginError) as exc:
        print(f"pilotfish up: {exc}", file=sys.stderr)
        return 2
    code = run_up(UpOptions(
        config_dir=config_dir, state_dir=Path(args.state_dir),
        mesh_config=mesh_config, proxy=proxy,
        subnet=args.subnet, bridge=args.bridge, debug_address=args.debug_address,
        demo=demo, proxy_concurrency=args.proxy_concurrency, cert_ttl=args.cert_ttl,
        kubeconfig=kubeconfig, context=args.context,
    ))
    return code


def add_down_arguments(parser: argparse.ArgumentParser) -> None:
    _state_arg(parser)


def down_main(args: argparse.Namespace) -> int:
    import anyio

    from pilotfish.node.down import down

    return anyio.run(down, Path(args.state_dir))


def find_pod(state: NodeState, name: str) -> PodState:
    for pod in state.pods.values():
        if name in (pod.key, pod.name, f"{pod.namespace}/{pod.name}"):
            return pod
    known = ", ".join(sorted(state.pods)) or "none"
    raise SystemExit(f"pilotfish: no pod {name!r} on this node; pods: {known}")


def _load(args: argparse.Namespace) -> NodeState:
    state = NodeState.load(Path(args.state_dir))
    if state is None:
        raise SystemExit(f"pilotfish: no node is up (no state in {args.state_dir}); "
                         "start one with pilotfish up")
    return state


def add_exec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pod", help="NAME, NAME.NAMESPACE or NAMESPACE/NAME")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    parser.add_argument("--user", type=int, help="uid to run as (default: the pod's app user)")
    _state_arg(parser)


def exec_main(args: argparse.Namespace) -> int:
    state = _load(args)
    pod = find_pod(state, args.pod)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise SystemExit("pilotfish exec: give a command after --")
    uid = args.user if args.user is not None else pod.app_uid
    from pilotfish.node import netns

    argv = netns.exec_argv(pod.netns, command, uid, uid)
    os.execvp(argv[0], argv)


def _ready(pod: PodState) -> str:
    """The proxy's readiness: the sidecar's, or the router's of a Gateway's pod."""
    if not (pod.sidecar or pod.router):
        return "-"
    try:
        url = f"http://{pod.ip}:{pod.health_port}/healthz/ready"
        with urllib.request.urlopen(url, timeout=1) as response:
            return "ready" if response.status == 200 else "not ready"
    except Exception:
        return "not ready"


def status_data(state: NodeState) -> dict[str, Any]:
    up = pid_alive(state.up_pid)
    return {
        "up": up,
        "up_pid": state.up_pid,
        # What up last said; "gone" when up died without tearing down (pilotfish down).
        "phase": state.phase if up else "gone",
        "problems": state.problems,
        "discovery": {"pid": state.discovery_pid, "running": pid_alive(state.discovery_pid),
                      "xds": state.xds_address, "debug": state.debug_address},
        "bridge": state.bridge,
        "subnet": state.subnet,
        "pods": [
            {"name": p.name, "namespace": p.namespace, "ip": p.ip, "netns": p.netns,
             "status": p.status if up else "left behind",
             # "sidecar": the proxy's readiness; "proxy" says which proxy it is.
             "sidecar": _ready(p), "proxy": "router" if p.router else (
                 "sidecar" if p.sidecar else ""),
             "owner": p.owner, "error": p.error, "app_uid": p.app_uid}
            for p in state.pods.values()
        ],
    }


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table")
    _state_arg(parser)


def status_main(args: argparse.Namespace) -> int:
    from pilotfish.core.output import table

    data = status_data(_load(args))
    if args.output == "json":
        print(json.dumps(data, indent=2))
        return 0
    headline = {"starting": "starting", "ready": "up, every pod ready",
                "not-ready": "up, not everything ready"}
    if data["up"]:
        node = f"{headline.get(data['phase'], data['phase'])} (pid {data['up_pid']})"
    else:
        node = (f"not running (pid {data['up_pid']} is gone without tearing down; "
                "run pilotfish down to remove what it left)")
    print(f"node: {node}, discovery {'running' if data['discovery']['running'] else 'down'} "
          f"at {data['discovery']['xds']}, bridge {data['bridge']} {data['subnet']}")
    for problem in data["problems"] if data["up"] else []:
        print(f"  not ready: {problem}")
    print(table(["POD", "NAMESPACE", "IP", "STATUS", "PROXY", "OWNER"],
                [[p["name"], p["namespace"], p["ip"], p["status"],
                  f"{p['proxy']} {p['sidecar']}" if p["proxy"] else "-", p["owner"] or "-"]
                 for p in data["pods"]]), end="")
    return 0
