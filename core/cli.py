"""The ``pilotfish`` command: one entry point, a subcommand per job."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from pilotfish.core import meshconfig, plugins
from pilotfish.core.proxy_status import (
    CommandError,
    add_config_arguments,
    add_status_arguments,
    proxy_config,
    proxy_status,
)


def _discovery(args: argparse.Namespace) -> int:
    import anyio

    from pilotfish.core.discovery import Discovery, DiscoveryOptions
    from pilotfish.core.sources import SourceSettings

    config = meshconfig.load(args.mesh_config)
    active = plugins.Plugins.from_config(config)
    options = DiscoveryOptions(
        xds_address=args.xds_address,
        debug_address=args.debug_address or None,
        sources=SourceSettings(config_dir=Path(args.config_dir) if args.config_dir else None),
    )
    if options.sources.config_dir is not None and not options.sources.config_dir.is_dir():
        raise CommandError(f"--config-dir {args.config_dir}: not a directory")
    discovery = Discovery(config, active, options)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signal, tg.cancel_scope)
            await tg.start(discovery.run)
            for error in discovery.store.errors():
                print(error, file=sys.stderr)

    anyio.run(main)
    return 0


async def _stop_on_signal(scope: Any) -> None:
    import signal

    import anyio

    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return


def _plugins(args: argparse.Namespace) -> int:
    config = meshconfig.load(args.mesh_config)
    active = plugins.select(config)
    if args.output in ("json", "yaml"):
        data = [{"group": p.group, "name": p.name, "module": p.value,
                 "distribution": p.distribution, "version": p.version} for p in active]
        print(json.dumps(data, indent=2) if args.output == "json"
              else yaml.safe_dump(data, sort_keys=False), end="\n" if args.output == "json"
              else "")
        return 0
    from pilotfish.core.config_dump import table

    print(f"profile: {config.profile} ({config.source})")
    print(table(["GROUP", "NAME", "DISTRIBUTION", "MODULE"],
                [[p.group, p.name, f"{p.distribution} {p.version}", p.value] for p in active]),
          end="")
    return 0


def _agent(args: argparse.Namespace) -> int:
    from pilotfish.core import agent

    return agent.main(args)


def _validate(args: argparse.Namespace) -> int:
    from pilotfish.core.validation import cli as validate_cli

    return validate_cli.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pilotfish",
        description="A service mesh in Python that implements Istio's architecture.",
    )
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("discovery", help="run the control plane (istiod's job)",
                       description="Serve xDS to proxies from Istio config in a directory.")
    p.add_argument("--config-dir", help="directory of Istio/Kubernetes YAML (read recursively, "
                   "watched for changes)")
    p.add_argument("--mesh-config", help="pilotfish.yaml: profile, plugins, mesh settings")
    p.add_argument("--xds-address", default="127.0.0.1:15010",
                   help="gRPC ADS address (default %(default)s)")
    p.add_argument("--debug-address", default="127.0.0.1:15014",
                   help="debug HTTP address, empty to disable (default %(default)s)")
    p.set_defaults(func=_discovery)

    p = sub.add_parser("agent", help="bootstrap and run a proxy (pilot-agent's job)")
    from pilotfish.core import agent

    agent.add_arguments(p)
    p.set_defaults(func=_agent)

    p = sub.add_parser("validate", help="validate config files offline")
    from pilotfish.core.validation import cli as validate_cli

    validate_cli.add_arguments(p)
    p.set_defaults(func=_validate)

    p = sub.add_parser("analyze", help="find config that validates but will not work as meant")
    from pilotfish.core import analyze

    analyze.add_arguments(p)
    p.set_defaults(func=analyze.main)

    from pilotfish.core.node import cli as node_cli

    p = sub.add_parser("up", help="run a mesh on this machine: pods as network namespaces")
    node_cli.add_up_arguments(p)
    p.set_defaults(func=node_cli.up_main)
    p = sub.add_parser("down", help="remove everything pilotfish up made")
    node_cli.add_down_arguments(p)
    p.set_defaults(func=node_cli.down_main)
    p = sub.add_parser("exec", help="run a command in a pod's network namespace")
    node_cli.add_exec_arguments(p)
    p.set_defaults(func=node_cli.exec_main)
    p = sub.add_parser("status", help="the node's pods, IPs and sidecars")
    node_cli.add_status_arguments(p)
    p.set_defaults(func=node_cli.status_main)

    p = sub.add_parser("plugins", help="show the active plugins and where they come from")
    p.add_argument("--mesh-config", help="pilotfish.yaml")
    p.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    p.set_defaults(func=_plugins)

    p = sub.add_parser("proxy-status", help="sync state of every connected proxy")
    add_status_arguments(p)
    p.set_defaults(func=proxy_status)

    p = sub.add_parser("proxy-config", help="what one proxy holds: clusters, listeners, ...")
    add_config_arguments(p)
    p.set_defaults(func=proxy_config)

    p = sub.add_parser("iptables", help="capture a pod's traffic with istio-iptables's rules")
    from pilotfish.interceptors import iptables_cli

    iptables_cli.add_arguments(p)
    p.set_defaults(func=iptables_cli.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (CommandError, meshconfig.MeshConfigError, plugins.PluginError) as exc:
        print(f"pilotfish {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
