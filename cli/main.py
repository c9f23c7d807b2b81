"""The ``pilotfish`` command: one entry point, a subcommand per job."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from pilotfish.cli.proxy_status import CommandError
from pilotfish.core import meshconfig, plugins


def _discovery(args: argparse.Namespace) -> int:
    import anyio

    from pilotfish.core.security.provider import CaSetupError
    from pilotfish.core.sources import SourceSettings
    from pilotfish.discovery.app import Discovery, DiscoveryOptions

    config = meshconfig.load(args.mesh_config)
    active = plugins.Plugins.from_config(config)
    options = DiscoveryOptions(
        xds_address=args.xds_address,
        debug_address=args.debug_address or None,
        sources=SourceSettings(config_dir=Path(args.config_dir) if args.config_dir else None),
        secure_xds_address=args.secure_xds_address or None,
        certs=_cert_settings(args, config),
        token_key=Path(args.token_key) if args.token_key else None,
    )
    if options.sources.config_dir is not None and not options.sources.config_dir.is_dir():
        raise CommandError(f"--config-dir {args.config_dir}: not a directory")
    try:
        discovery = Discovery(config, active, options)
    except CaSetupError as exc:
        raise CommandError(str(exc)) from exc

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signal, tg.cancel_scope)
            await tg.start(discovery.run)
            for error in discovery.store.errors():
                print(error, file=sys.stderr)

    anyio.run(main)
    return 0


def _cert_settings(args: argparse.Namespace, config: meshconfig.MeshConfig) -> Any:
    from pilotfish.core.security.files import default_state_dir
    from pilotfish.core.security.provider import CertSettings

    ttl = config.discovery.workload_cert_ttl
    max_ttl = config.discovery.max_workload_cert_ttl
    if args.workload_cert_ttl:
        ttl = meshconfig.parse_duration(args.workload_cert_ttl, "--workload-cert-ttl")
    if args.max_workload_cert_ttl:
        max_ttl = meshconfig.parse_duration(args.max_workload_cert_ttl, "--max-workload-cert-ttl")
    if not 0 < ttl <= max_ttl:
        raise CommandError(f"workload certificate TTL {ttl:g}s must be positive and at most "
                           f"the maximum {max_ttl:g}s")
    if args.ca_dir and not Path(args.ca_dir).is_dir():
        raise CommandError(f"--ca-dir {args.ca_dir}: not a directory")
    return CertSettings(
        state_dir=Path(args.state_dir) if args.state_dir else default_state_dir(),
        ca_dir=Path(args.ca_dir) if args.ca_dir else None,
        trust_domain=config.mesh.trust_domain, workload_ttl=ttl, max_workload_ttl=max_ttl)


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
    from pilotfish.core.xds.config_dump import table
    print(f"profile: {config.profile} ({config.source})")
    print(table(["GROUP", "NAME", "DISTRIBUTION", "MODULE"],
                [[p.group, p.name, f"{p.distribution} {p.version}", p.value] for p in active]),
          end="")
    return 0


def _add_discovery_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Serve xDS to proxies from Istio config in a directory."
    p.add_argument("--config-dir", help="directory of Istio/Kubernetes YAML (read recursively, "
                   "watched for changes)")
    p.add_argument("--mesh-config", help="pilotfish.yaml: profile, plugins, mesh settings")
    p.add_argument("--xds-address", default="127.0.0.1:15010",
                   help="gRPC ADS address (default %(default)s)")
    p.add_argument("--debug-address", default="127.0.0.1:15014",
                   help="debug HTTP address, empty to disable (default %(default)s)")
    p.add_argument("--secure-xds-address", default="127.0.0.1:15012",
                   help="TLS address for ADS (callers must authenticate) and the CA, empty "
                   "to disable (default %(default)s)")
    p.add_argument("--state-dir", help="where the CA keeps its root and writes root-cert.pem "
                   "(default /var/lib/pilotfish/discovery as root, else "
                   "~/.local/state/pilotfish/discovery)")
    p.add_argument("--ca-dir", help="plugged-in CA files (ca-cert.pem, ca-key.pem, "
                   "root-cert.pem, cert-chain.pem) for istio-ca; the mounted root (and "
                   "discovery's cert) for the file provider")
    p.add_argument("--token-key", help="the node's PEM public key: verifies pod tokens "
                   "(authorization: Bearer) on 15012")
    p.add_argument("--workload-cert-ttl", help="lifetime of a workload certificate when the "
                   "CSR asks for none (default: mesh config, else 24h)")
    p.add_argument("--max-workload-cert-ttl", help="longer requests are refused (default: "
                   "mesh config, else 2160h = 90 days)")


def _add_plugins_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mesh-config", help="pilotfish.yaml")
    p.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")


# name, help, module with the functions (imported on use), its add-arguments and main.
COMMANDS: tuple[tuple[str, str, str, str, str], ...] = (
    ("discovery", "run the control plane (istiod's job)",
     "pilotfish.cli.main", "_add_discovery_arguments", "_discovery"),
    ("agent", "bootstrap and run a proxy (pilot-agent's job)",
     "pilotfish.agent.command", "add_arguments", "main"),
    ("validate", "validate config files offline",
     "pilotfish.cli.validate", "add_arguments", "main"),
    ("analyze", "find config that validates but will not work as meant",
     "pilotfish.cli.analyze", "add_arguments", "main"),
    ("up", "run a mesh on this machine: pods as network namespaces",
     "pilotfish.node.commands", "add_up_arguments", "up_main"),
    ("down", "remove everything pilotfish up made",
     "pilotfish.node.commands", "add_down_arguments", "down_main"),
    ("exec", "run a command in a pod's network namespace",
     "pilotfish.node.commands", "add_exec_arguments", "exec_main"),
    ("status", "the node's pods, IPs and sidecars",
     "pilotfish.node.commands", "add_status_arguments", "status_main"),
    ("plugins", "show the active plugins and where they come from",
     "pilotfish.cli.main", "_add_plugins_arguments", "_plugins"),
    ("proxy-status", "sync state of every connected proxy",
     "pilotfish.cli.proxy_status", "add_status_arguments", "proxy_status"),
    ("proxy-config", "what one proxy holds: clusters, listeners, routes, endpoints, secrets",
     "pilotfish.cli.proxy_status", "add_config_arguments", "proxy_config"),
    ("iptables", "capture a pod's traffic with istio-iptables's rules",
     "pilotfish.cli.iptables", "add_arguments", "main"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pilotfish",
        description="A service mesh in Python that implements Istio's architecture.",
    )
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, text, module_name, add, run in COMMANDS:
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=text)
        getattr(module, add)(p)
        p.set_defaults(func=getattr(module, run))
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
