"""``pilotfish gateway-status``: the Gateway API status discovery computed.

The files source cannot write ``status`` back into the objects, so discovery keeps what it
would write (``/debug/gateway_status``) and this command shows it, as ``kubectl get`` would
show the conditions: one row per object (and per Gateway listener and route parent).
"""

from __future__ import annotations

import argparse
from typing import Any

from pilotfish.cli.proxy_status import fetch_json
from pilotfish.core.output import emit, table


def _conditions(entry: dict[str, Any]) -> str:
    return ", ".join(f"{c['type']}={c['status']}" + (f" ({c['reason']})" if c["reason"] not in (
        c["type"], "NoConflicts") else "") for c in entry.get("conditions") or ())


def rows(items: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for item in items:
        name = f"{item['kind']} {item['namespace']}/{item['name']}"
        status = item["status"]
        if item["kind"] == "Gateway":
            addresses = ",".join(a["value"] for a in status.get("addresses") or ()) or "-"
            out.append([name, "", addresses, _conditions(status)])
            for listener in status.get("listeners") or ():
                out.append(["", f"listener {listener['name']}",
                            f"{listener['attachedRoutes']} routes", _conditions(listener)])
        elif "parents" in status:
            for parent in status["parents"]:
                ref = parent["parentRef"]
                where = f"{ref.get('kind', 'Gateway')} {ref.get('namespace')}/{ref['name']}"
                if ref.get("sectionName"):
                    where += f" ({ref['sectionName']})"
                out.append([name, where, "", _conditions(parent)])
                name = ""
        else:
            out.append([name, "", "", _conditions(status)])
    return out


def main(args: argparse.Namespace) -> int:
    items = fetch_json(f"http://{args.discovery_address}/debug/gateway_status")
    if args.output in ("json", "yaml"):
        emit(items, args.output)
    else:
        print(table(["OBJECT", "PART", "ATTACHED/ADDRESS", "CONDITIONS"], rows(items)), end="")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--discovery-address", default="127.0.0.1:15014",
                        help="discovery's debug address (default %(default)s)")
    parser.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
