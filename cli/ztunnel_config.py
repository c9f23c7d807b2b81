"""``pilotfish ztunnel-config``: what a ztunnel holds, read from its admin API's
``/config_dump``, printed as ``istioctl ztunnel-config`` prints it: workloads, services,
policies, certificates, or the connections it is carrying.

The local node's ztunnel is asked through the proxy backend that runs it (its admin's
``config_dump``), whichever ztunnel that is; ``--address`` reads any ztunnel's admin API
directly (Istio's answers the same way).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from pilotfish.cli.proxy_status import fetch_json
from pilotfish.core.output import CommandError, emit, table
from pilotfish.core.plugins import PluginError
from pilotfish.core.proxy_backend import ProxyError
from pilotfish.node.ambient import node_ztunnel_admin
from pilotfish.node.netns import NodeError
from pilotfish.node.state import DEFAULT_STATE_DIR, NodeState

KINDS = ("workloads", "services", "policies", "certificates", "connections", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--address",
                        help="the ztunnel's admin address (default: the local node's "
                             "ztunnel, else 127.0.0.1:15000)")
    parser.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR),
                        help="the local node's state (default %(default)s)")
    parser.add_argument("-n", "--namespace", default="",
                        help="only what is in this namespace (default: all)")
    parser.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")


def _in(namespace: str) -> Callable[[Mapping[str, Any]], bool]:
    return lambda item: not namespace or item.get("namespace") == namespace


def _waypoint(item: Mapping[str, Any]) -> str:
    waypoint = item.get("waypoint") or {}
    destination = str(waypoint.get("destination") or "")
    return destination.rsplit("/", 1)[-1] if destination else "None"


def workload_rows(dump: Mapping[str, Any], namespace: str = "") -> list[list[str]]:
    return sorted([str(w.get("namespace", "")), str(w.get("name", "")),
                   ",".join(w.get("workloadIps") or []) or "None", str(w.get("node") or "-"),
                   _waypoint(w), str(w.get("protocol", ""))]
                  for w in dump.get("workloads") or [] if _in(namespace)(w))


def service_rows(dump: Mapping[str, Any], namespace: str = "") -> list[list[str]]:
    rows = []
    for service in dump.get("services") or []:
        if not _in(namespace)(service):
            continue
        endpoints = service.get("endpoints") or {}
        healthy = sum(1 for e in endpoints.values() if (e or {}).get("status",
                                                                       "Healthy") == "Healthy")
        vips = ",".join(str(v).rsplit("/", 1)[-1] for v in service.get("vips") or []) or "None"
        rows.append([str(service.get("namespace", "")), str(service.get("name", "")), vips,
                     _waypoint(service), f"{healthy}/{len(endpoints)}"])
    return sorted(rows)


def policy_rows(dump: Mapping[str, Any], namespace: str = "") -> list[list[str]]:
    return sorted([str(p.get("namespace") or "(root)"), str(p.get("name", "")),
                   str(p.get("action", "")), str(p.get("scope", ""))]
                  for p in dump.get("policies") or [] if _in(namespace)(p))


def certificate_rows(dump: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for cert in dump.get("certificates") or []:
        chain = cert.get("certChain") or [{}]
        leaf = chain[0]
        rows.append([str(cert.get("identity", "")), "Leaf", str(cert.get("state", "")),
                     "true" if cert.get("state") == "Available" else "false",
                     str(leaf.get("serialNumber", "-")), str(leaf.get("expirationTime", "-")),
                     str(leaf.get("validFrom", "-"))])
    return sorted(rows)


def connection_rows(dump: Mapping[str, Any], namespace: str = "") -> list[list[str]]:
    return sorted([str(c.get("pod", "")), str(c.get("direction", "")), str(c.get("src", "")),
                   str(c.get("dst", "")), str(c.get("srcIdentity") or "-"),
                   str(c.get("dstIdentity") or "-"), str(c.get("protocol", ""))]
                  for c in dump.get("connections") or []
                  if not namespace or str(c.get("pod", "")).startswith(f"{namespace}/"))


SECTIONS: Sequence[tuple[str, list[str], Callable[..., list[list[str]]], bool]] = (
    ("workloads", ["NAMESPACE", "POD NAME", "ADDRESS", "NODE", "WAYPOINT", "PROTOCOL"],
     workload_rows, True),
    ("services", ["NAMESPACE", "SERVICE NAME", "SERVICE VIP", "WAYPOINT", "ENDPOINTS"],
     service_rows, True),
    ("policies", ["NAMESPACE", "POLICY NAME", "ACTION", "SCOPE"], policy_rows, True),
    ("certificates", ["CERTIFICATE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER",
                      "NOT AFTER", "NOT BEFORE"], certificate_rows, False),
    ("connections", ["POD", "DIRECTION", "SOURCE", "DESTINATION", "SOURCE IDENTITY",
                     "DESTINATION IDENTITY", "PROTOCOL"], connection_rows, True),
)


def config_dump(args: argparse.Namespace) -> dict[str, Any]:
    """The dump of the ztunnel ``--address`` names, else of the local node's (through its
    backend), else of the one on Istio's 127.0.0.1:15000."""
    state = None if args.address else NodeState.load(Path(args.state_dir))
    try:
        admin = node_ztunnel_admin(state) if state is not None else None
        if admin is not None:
            return anyio.run(admin.config_dump)
    except (ProxyError, PluginError, NodeError) as exc:
        raise CommandError(f"the local node's ztunnel ({args.state_dir}): {exc}") from None
    url = f"http://{args.address or '127.0.0.1:15000'}/config_dump"
    dump = fetch_json(url)
    if not isinstance(dump, dict):
        raise CommandError(f"{url}: not a JSON object")
    return dump


def main(args: argparse.Namespace) -> int:
    dump = config_dump(args)
    wanted = [s for s in SECTIONS if args.kind in (s[0], "all")]
    if args.output != "table":
        emit(dump if args.kind == "all" else dump.get(args.kind) or [], args.output)
        return 0
    parts = []
    for _, headers, rows, by_namespace in wanted:
        found = rows(dump, args.namespace) if by_namespace else rows(dump)
        parts.append(table(headers, found))
    print("\n".join(parts), end="")
    return 0
