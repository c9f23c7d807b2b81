"""``pilotfish demo``: discovery, the demo workloads and an Envoy ingress gateway, locally.

The bundled config (``demo/config``) is copied to a working folder the user may edit: the
running mesh picks up every change. Each Pod's container command runs as a local process
with the pod's IP in ``$(POD_IP)`` (the demo pods sit on 127.0.10.x); the gateway is
``pilotfish agent --type router`` with the labels the demo Gateway selects.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import time
from functools import partial
from importlib import resources
from pathlib import Path

import anyio
import anyio.abc

from pilotfish.core import meshconfig
from pilotfish.core.children import ChildExited, expand, run_child
from pilotfish.core.discovery import Discovery, DiscoveryOptions
from pilotfish.core.objects import ConfigObject
from pilotfish.core.plugins import Plugins
from pilotfish.core.sources import SourceSettings

log = logging.getLogger("pilotfish.demo")

GATEWAY_LABELS = {"istio": "ingressgateway", "app": "istio-ingressgateway"}


def bundled_config() -> Path:
    return Path(str(resources.files("pilotfish.demo") / "config"))


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def pod_commands(pod: ConfigObject) -> list[tuple[str, list[str], dict[str, str]]]:
    """(name, argv, env) per container, with Kubernetes' env and $(VAR) expansion."""
    ip = str((pod.body.get("status") or {}).get("podIP") or "")
    out = []
    for container in pod.spec.get("containers") or []:
        env = {"POD_NAME": pod.name, "POD_NAMESPACE": pod.namespace, "POD_IP": ip}
        for item in container.get("env") or []:
            field = ((item.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            if field == "status.podIP":
                env[item["name"]] = ip
            elif field == "metadata.name":
                env[item["name"]] = pod.name
            elif "value" in item:
                env[item["name"]] = expand(str(item["value"]), env)
        argv = [expand(str(a), env) for a in [*(container.get("command") or []),
                                              *(container.get("args") or [])]]
        if argv:
            out.append((f"{pod.name}/{container.get('name', '')}", argv, env))
    return out


def gateway_port(discovery: Discovery) -> int:
    for gateway in discovery.state.push.gateways:
        for server in gateway.servers:
            return server.port
    return 8080


def tour(port: int, config_dir: Path, debug: str) -> str:
    url = f"http://127.0.0.1:{port}"
    return f"""
The mesh is up. Try:

  curl -s {url}/productpage                 # the product page (through the gateway)
  for i in $(seq 10); do curl -s {url}/reviews/1 | grep '"version"'; done
                                            # 80% reviews v1, 20% v3 (weighted split)
  curl -s -H 'end-user: jason' {url}/reviews/1 | grep version     # header match: v2
  curl -s -o /dev/null -w '%{{http_code}}\\n' -H 'end-user: tester' {url}/ratings/1
                                            # fault injection: 503
  time curl -s -o /dev/null {url}/ratings/slow    # fault injection: a 2 s delay
  curl -s -w '%{{http_code}}\\n' -o /dev/null {url}/details/flaky/$RANDOM
                                            # fails once, retried: 200

  pilotfish proxy-status --discovery-address {debug}
  pilotfish proxy-config routes istio-ingressgateway.istio-system --discovery-address {debug}

Edit the YAML in {config_dir}: changes apply within a second, no restarts.
Ctrl-C stops everything.
"""


async def run_demo(args: argparse.Namespace) -> int:
    config_dir = Path(args.workdir) / "config"
    logs = Path(args.workdir) / "logs"
    if not config_dir.exists():
        shutil.copytree(args.config_dir or bundled_config(), config_dir)
    logs.mkdir(parents=True, exist_ok=True)
    config = meshconfig.load(args.mesh_config)
    step(f"discovery on {args.xds_address} (config: {config_dir})")
    discovery = Discovery(config, Plugins.from_config(config), DiscoveryOptions(
        xds_address=args.xds_address, debug_address=args.debug_address,
        sources=SourceSettings(config_dir=config_dir),
    ))
    # Pods' "python3" is this interpreter's environment, where pilotfish is installed.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    async with anyio.create_task_group() as tg:
        await tg.start(discovery.run)
        for error in discovery.store.errors():
            print(f"    {error}")
        for pod in discovery.store.objects("Pod"):
            for name, argv, env in pod_commands(pod):
                step(f"pod {name} ({env['POD_IP']}): {' '.join(argv[:4])} ...")
                await tg.start(partial(run_child, name, argv, env={**env, "PATH": path},
                                       log_path=logs / f"{name.replace('/', '_')}.log"))
        step("ingress gateway: pilotfish agent --type router (Envoy)")
        agent = [sys.executable, "-m", "pilotfish.core.cli", "agent", "--type", "router",
                 "--name", "istio-ingressgateway", "--namespace", "istio-system",
                 "--ip", "127.0.0.1", "--discovery", args.xds_address,
                 "--labels", ",".join(f"{k}={v}" for k, v in GATEWAY_LABELS.items()),
                 "--admin-port", str(args.admin_port),
                 "--config-dir", str(Path(args.workdir) / "gateway")]
        await tg.start(partial(run_child, "gateway", agent, log_path=logs / "gateway.log"))
        port = gateway_port(discovery)
        await wait_routing(port, timeout=30)
        print(tour(port, config_dir, args.debug_address), flush=True)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                step("stopping")
                tg.cancel_scope.cancel()
                break
    return 0


async def wait_routing(port: int, timeout: float) -> None:
    """Until the gateway answers on its port (a route may still 404: it is up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            stream = await anyio.connect_tcp("127.0.0.1", port)
            await stream.aclose()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gateway did not listen on {port} within {timeout}s "
                                   "(see its log)") from None
            await anyio.sleep(0.2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-dir", help="config to copy into the working folder "
                        "(default: the bundled demo mesh)")
    parser.add_argument("--workdir", default=".local/demo",
                        help="working folder for config copies and logs (default %(default)s)")
    parser.add_argument("--mesh-config", help="pilotfish.yaml")
    parser.add_argument("--xds-address", default="127.0.0.1:15010")
    parser.add_argument("--debug-address", default="127.0.0.1:15014")
    parser.add_argument("--admin-port", type=int, default=15000,
                        help="the gateway's Envoy admin port (default %(default)s)")


def main(args: argparse.Namespace) -> int:
    try:
        return anyio.run(run_demo, args)
    except BaseException as exc:  # task groups wrap failures in exception groups
        problems = _flatten(exc)
        if not problems or not all(isinstance(p, ChildExited | TimeoutError | OSError)
                                   for p in problems):
            raise
        for problem in problems:
            print(f"pilotfish demo: {problem}", file=sys.stderr)
        return 1


def _flatten(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _flatten(inner)]
    return [exc]
