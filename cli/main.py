"""The ``pilotfish`` command: one entry point, a subcommand per job.

Only the chosen subcommand's module is imported: ``pilotfish --help`` lists the commands
from the table below without loading any of them, and ``pilotfish status`` loads the node's
state reader, not the control plane.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

# name, help, module with the functions (imported on use), its add-arguments and main.
COMMANDS: tuple[tuple[str, str, str, str, str], ...] = (
    ("discovery", "run the control plane (istiod's job)",
     "pilotfish.discovery.command", "add_arguments", "main"),
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
    ("ztunnel", "ambient mode's node proxy: HBONE, in-pod sockets, L4 policy",
     "pilotfish.agent.ztunnel", "add_arguments", "main"),
    ("ztunnel-config", "what a ztunnel holds: workloads, services, policies, certificates, "
     "connections", "pilotfish.cli.ztunnel_config", "add_arguments", "main"),
    ("plugins", "show the profiles and active plugins, and where they come from",
     "pilotfish.cli.plugins", "add_arguments", "main"),
    ("proxy-status", "sync state of every connected proxy",
     "pilotfish.cli.proxy_status", "add_status_arguments", "proxy_status"),
    ("proxy-config", "what one proxy holds: clusters, listeners, routes, endpoints, "
     "secrets, its bootstrap; its log levels",
     "pilotfish.cli.proxy_status", "add_config_arguments", "proxy_config"),
    ("describe", "what applies to a pod: services, routes, subsets, mTLS, policies",
     "pilotfish.cli.describe", "add_arguments", "main"),
    ("gateway-status", "Gateway API status: Gateways, listeners and routes with conditions",
     "pilotfish.cli.gateway_status", "add_arguments", "main"),
    ("waypoint", "apply, list or delete waypoints (istio-waypoint Gateways)",
     "pilotfish.cli.waypoint", "add_arguments", "main"),
    ("iptables", "capture a pod's traffic with istio-iptables's rules",
     "pilotfish.cli.iptables", "add_arguments", "main"),
    ("cni-agent", "the CNI node agent for ambient pods: in-pod rules, ZDS to ztunnel",
     "pilotfish.node.cni_agent", "add_arguments", "main"),
    ("kube-inject", "inject sidecars into Kubernetes manifests offline",
     "pilotfish.cli.kube_inject", "add_arguments", "main"),
    ("webhook-config", "the webhook configurations that send pods and config to discovery",
     "pilotfish.cli.webhook_config", "add_arguments", "main"),
    ("manifest", "the manifests that install pilotfish on a Kubernetes cluster",
     "pilotfish.cli.manifest", "add_arguments", "main"),
    ("install", "install pilotfish on a Kubernetes cluster and wait until it serves",
     "pilotfish.cli.install", "add_install_arguments", "install_main"),
    ("uninstall", "remove what pilotfish install put on a cluster",
     "pilotfish.cli.install", "add_uninstall_arguments", "uninstall_main"),
)
LOG_LEVELS = ["debug", "info", "warning", "error"]


class HelpFormatter(argparse.HelpFormatter):
    """argparse's, with the terminal's width found as ``shutil`` finds it but without
    importing it: argparse makes a formatter for every argument added, and ``shutil``
    (which brings ``bz2`` and ``lzma``) would cost a long-running command such as ztunnel
    0.5 MiB it never uses (issue 13)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         _columns() - 2 if width is None else width)


def _columns() -> int:
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0 and sys.__stdout__ is not None:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (ValueError, OSError):
            columns = 0
    return columns or 80


def _global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS)


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv``, found without parsing any command's options."""
    probe = argparse.ArgumentParser(add_help=False, formatter_class=HelpFormatter)
    _global_options(probe)
    try:
        _, rest = probe.parse_known_args(argv)
    except SystemExit:  # a bad global option: let the real parser say so
        return None
    return rest[0] if rest else None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with the arguments of the one command ``argv`` names (``pilotfish
    COMMAND --help`` loads that command's module; ``pilotfish --help`` none); with no
    ``argv``, of every command."""
    parser = argparse.ArgumentParser(
        prog="pilotfish",
        description="A service mesh in Python that implements Istio's architecture.",
        formatter_class=HelpFormatter,
    )
    _global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = None if argv is None else chosen_command(argv)
    for name, text, module_name, add, run in COMMANDS:
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".",
                           formatter_class=HelpFormatter)
        if argv is None or name == chosen:
            module = importlib.import_module(module_name)
            getattr(module, add)(p)
            p.set_defaults(func=getattr(module, run))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from pilotfish.core.output import CommandError

    args_in = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(args_in)
    args = parser.parse_args(args_in)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CommandError as exc:
        print(f"pilotfish {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        # Config and plugin choices fail the same way from every command: name the command
        # and what is wrong, no traceback.
        from pilotfish.core.meshconfig import MeshConfigError
        from pilotfish.core.plugins import PluginError

        if isinstance(exc, MeshConfigError | PluginError):
            print(f"pilotfish {args.command}: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
