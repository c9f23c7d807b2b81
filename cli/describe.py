"""``pilotfish describe pod NAME.NAMESPACE``: what applies to one pod, as ``istioctl x
describe pod`` tells it — its services and their ports, DestinationRule subsets and TLS
mode, the VirtualService that routes them and the Gateways that expose them, waypoints,
PeerAuthentication (effective mode and the policies it comes from), AuthorizationPolicies and
RequestAuthentications. Discovery works it out (``/debug/describe``) from the config it
serves now; this command prints it.
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from pilotfish.cli.proxy_status import fetch_json
from pilotfish.core.output import emit

RULE = "-" * 20


def text(found: dict[str, Any]) -> str:
    pod = found["pod"]
    lines = [f"Pod: {pod['name']}.{pod['namespace']}",
             f"   Address: {pod['ip']}, service account {pod['serviceAccount']}",
             f"   Data plane: {pod['dataplane']}"
             + (f", using waypoint {pod['waypoint']}" if pod["waypoint"] else "")]
    for service in found["services"]:
        lines += [RULE, f"Service: {service['name']}.{service['namespace']}"]
        for port in service["ports"]:
            lines.append(f"   Port: {port['name'] or '-'} {port['port']}/{port['protocol']} "
                         f"targets pod port {port['targetPort']}")
        if service["waypoint"]:
            lines.append(f"   Waypoint: {service['waypoint']}")
        rule = service["destinationRule"]
        if rule is not None:
            lines.append(f"DestinationRule: {rule['name']} for {service['host']}")
            if rule["matchingSubsets"]:
                lines.append(f"   Matching subsets: {', '.join(rule['matchingSubsets'])}")
            if rule["otherSubsets"]:
                lines.append("   (Non-matching subsets " + ", ".join(rule["otherSubsets"])
                             + ")")
            if rule["tlsMode"]:
                lines.append(f"   Traffic policy TLS mode: {rule['tlsMode']}")
        route = service["virtualService"]
        if route is not None:
            lines.append(f"VirtualService: {route['name']}")
            lines += [f"   {line}" for line in route["routes"]]
        for gateway in service["gateways"]:
            lines.append(f"Exposed on Gateway {gateway}")
    peer = found["peerAuthentication"]
    lines += [RULE, "Effective PeerAuthentication:", f"   Workload mTLS mode: {peer['mode']}"]
    lines += [f"   Port {port}: {mode}" for port, mode in peer["ports"].items()]
    if peer["applied"]:
        lines += ["Applied PeerAuthentication:", f"   {', '.join(peer['applied'])}"]
    policies = found["authorizationPolicies"]
    if policies:
        lines.append("AuthorizationPolicies: " + ", ".join(
            f"{p['name']} ({p['action']})" for p in policies))
    if found["requestAuthentications"]:
        lines.append("RequestAuthentications: " + ", ".join(found["requestAuthentications"]))
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    query = urllib.parse.urlencode({"pod": args.pod})
    found = fetch_json(f"http://{args.discovery_address}/debug/describe?{query}")
    if args.output in ("json", "yaml"):
        emit(found, args.output)
    else:
        print(text(found), end="")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=["pod"], help="what to describe (a pod)")
    parser.add_argument("pod", help="NAME.NAMESPACE of the pod")
    parser.add_argument("--discovery-address", default="127.0.0.1:15014",
                        help="discovery's debug address (default %(default)s)")
    parser.add_argument("-o", "--output", choices=["text", "json", "yaml"], default="text")
