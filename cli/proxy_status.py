"""``pilotfish proxy-status`` and ``pilotfish proxy-config``: what proxies hold, and why.

proxy-status asks discovery (``/debug/syncz``) for every connection's per-type state.
proxy-config finds the proxy there, then reads the proxy's own admin API (``/config_dump``,
``/clusters``) — what Envoy actually runs — and prints istioctl's tables, or Envoy's JSON,
narrowed by istioctl's flags (``--fqdn``, ``--port``, ...). When the proxy's admin is
unreachable it falls back to what discovery would send. ``bootstrap`` shows what the proxy
started from; ``log`` shows its loggers' levels or sets them (``--level``), through
``POST /logging`` as ``istioctl proxy-config log`` does.
"""

from __future__ import annotations

import argparse
import calendar
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from pilotfish.cli import tables
from pilotfish.core.output import CommandError, emit, table
from pilotfish.core.xds import config_dump, types

STATUS_TYPES = (types.CLUSTER, types.LISTENER, types.ENDPOINT, types.ROUTE)
# ztunnel's Workload Discovery: one column for its two types (Address, Authorization).
WDS_TYPES = (types.ADDRESS, types.AUTHORIZATION)


def fetch_json(url: str, timeout: float = 5.0) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace").strip()
        raise CommandError(f"{url}: HTTP {exc.code}: {body}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandError(f"cannot reach {url}: {reason}") from exc


def _age(stamp: str | None) -> str:
    if not stamp:
        return ""
    then = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    seconds = max(0, int(time.time() - then))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60}m"


def _cell(state: dict[str, Any] | None) -> str:
    if state is None:
        return "IGNORED"
    status = state["status"]
    if status == "SYNCED" and state.get("ackedTime"):
        return f"SYNCED ({_age(state['ackedTime'])})"
    return str(status)


def _wds_cell(resources: dict[str, Any]) -> str:
    """Both WDS types as one cell: the worse of the two (IGNORED when neither is asked)."""
    cells = [_cell(resources.get(t)) for t in WDS_TYPES if t in resources]
    if not cells:
        return "IGNORED"
    not_synced = [c for c in cells if not c.startswith("SYNCED")]
    return not_synced[0] if not_synced else min(cells)


def status_table(items: list[dict[str, Any]]) -> str:
    rows = []
    errors = []
    for item in items:
        resources = item.get("resources", {})
        cells = [_cell(resources.get(t)) for t in STATUS_TYPES]
        rows.append([item["proxy"], item.get("proxy_type", ""), *cells, _wds_cell(resources),
                     item.get("istiod", ""), item.get("proxy_version", "")])
        for type_url in (*STATUS_TYPES, *WDS_TYPES):
            state = resources.get(type_url)
            if state and state.get("lastError"):
                errors.append(
                    f"{item['proxy']} {types.short(type_url)} rejected version "
                    f"{state.get('version_sent', '')} (nonce {state.get('sent', '')}): "
                    f"{state['lastError']}"
                )
    out = table(
        ["NAME", "TYPE", "CDS", "LDS", "EDS", "RDS", "WDS", "DISCOVERY", "VERSION"], rows
    )
    if errors:
        out += "\nNACKs:\n" + "\n".join(f"  {e}" for e in errors) + "\n"
    return out


def detail(item: dict[str, Any]) -> str:
    lines = [f"Proxy {item['proxy']} ({item.get('proxy_type')}, {item.get('xds_mode')} xDS, "
             f"connection {item.get('connection')})"]
    rows = []
    for type_url, state in sorted(item.get("resources", {}).items(),
                                  key=lambda kv: types.order_key(kv[0])):
        rows.append([
            types.short(type_url), state["status"], state.get("version_acked") or "-",
            state.get("acked") or "-", _age(state.get("ackedTime")) or "-",
            str(state.get("resources", 0)), state.get("lastError") or "",
        ])
    lines.append(table(
        ["TYPE", "STATUS", "ACKED VERSION", "ACKED NONCE", "LAST ACK", "RESOURCES", "NACK"],
        rows,
    ))
    return "\n".join(lines)


def proxy_status(args: argparse.Namespace) -> int:
    items = fetch_json(f"http://{args.discovery_address}/debug/syncz")
    if args.proxy:
        items = [i for i in items if i["proxy"] == args.proxy or i["proxy"].startswith(
            args.proxy + ".")]
        if not items:
            raise CommandError(f"no proxy {args.proxy!r} is connected to discovery at "
                               f"{args.discovery_address}")
    if args.output in ("json", "yaml"):
        emit(items, args.output)
    elif args.proxy:
        print("\n".join(detail(i) for i in items), end="")
    else:
        print(status_table(items), end="")
    return 0


def find_proxy(discovery_address: str, name: str) -> dict[str, Any]:
    items = fetch_json(f"http://{discovery_address}/debug/syncz")
    for item in items:
        if item["proxy"] == name or item["proxy"].split(".")[0] == name:
            return dict(item)
    known = ", ".join(i["proxy"] for i in items) or "none"
    raise CommandError(f"no proxy {name!r} is connected to discovery at {discovery_address}; "
                       f"connected: {known}")


def pod_netns(proxy_id: str, state_dir: str | None) -> str | None:
    """The network namespace of a proxy running on the local node (pilotfish up), if any:
    its admin API listens on the pod's own loopback, as istioctl reaches it by port-forward."""
    from pathlib import Path

    from pilotfish.node.state import DEFAULT_STATE_DIR, NodeState
    state = NodeState.load(Path(state_dir) if state_dir else DEFAULT_STATE_DIR)
    if state is None:
        return None
    pod = state.pods.get(proxy_id)
    return pod.netns if pod is not None else None


def admin_json(admin: str, path: str, netns: str | None) -> Any:
    """GET from a proxy's admin API, from inside its pod's netns when it has one."""
    if netns is None:
        return fetch_json(f"http://{admin}{path}")
    return json.loads(admin_text(admin, path, netns))


def admin_text(admin: str, path: str, netns: str | None, method: str = "GET") -> str:
    """A request to a proxy's admin API (its answer's text), from inside its pod's netns
    when it has one."""
    url = f"http://{admin}{path}"
    if netns is None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method=method),
                                        timeout=5) as response:
                return str(response.read().decode(errors="replace"))
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace").strip()
            raise CommandError(f"{url}: HTTP {exc.code}: {body}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise CommandError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from exc
    import subprocess

    result = subprocess.run(["ip", "netns", "exec", netns, "curl", "-sf", "-m", "5", "-X",
                             method, url], capture_output=True, text=True)
    if result.returncode != 0:
        raise CommandError(f"cannot reach {url} in netns {netns}: "
                           f"{result.stderr.strip() or f'curl exit {result.returncode}'}")
    return result.stdout


def _log_query(level: str) -> str:
    """``--level``: one level for every logger (``debug``), or ``name:level`` pairs
    (``http:debug,router:info``), as istioctl takes them."""
    pairs = []
    for part in filter(None, (p.strip() for p in level.split(","))):
        name, _, value = part.rpartition(":")
        pairs.append((name or "level", value))
    return "&".join(f"{urllib.parse.quote(n)}={urllib.parse.quote(v)}" for n, v in pairs)


def _log(item: dict[str, Any], netns: str | None, level: str | None) -> int:
    admin = item.get("admin")
    if not admin:
        raise CommandError(f"{item['proxy']} did not say where its admin API listens")
    query = f"?{_log_query(level)}" if level else ""
    print(admin_text(admin, f"/logging{query}", netns, method="POST"), end="")
    return 0


def _filtered(kind: str, dump: dict[str, Any], args: argparse.Namespace) -> list[Any]:
    """One kind's entries of the dump, as the command's flags narrow them."""
    if kind == "clusters":
        return [c for c in config_dump.clusters(dump) if tables.keep_cluster(
            c, args.fqdn, args.port, args.subset, args.direction)]
    if kind == "listeners":
        return [item for item in config_dump.listeners(dump) if tables.keep_listener(
            item, args.port, args.address, args.type)]
    if kind == "routes":
        return [r for r in config_dump.routes(dump) if tables.keep_route(r, args.name)]
    return [e for e in config_dump.endpoints(dump)
            if not args.cluster or args.cluster in str(e.get("cluster_name", ""))]


def proxy_config(args: argparse.Namespace) -> int:
    item = find_proxy(args.discovery_address, args.proxy)
    admin = item.get("admin")
    netns = pod_netns(item["proxy"], getattr(args, "state_dir", None))
    if args.kind == "log":
        return _log(item, netns, args.level)
    dump: dict[str, Any] | None = None
    clusters_json: dict[str, Any] | None = None
    source = f"proxy admin {admin}"
    if admin:
        try:
            dump = admin_json(admin, "/config_dump?include_eds", netns)
            if args.kind in ("endpoints", "all"):
                clusters_json = admin_json(admin, "/clusters?format=json", netns)
        except CommandError as exc:
            print(f"warning: {exc}; showing what discovery would send instead",
                  file=sys.stderr)
    if dump is None and args.kind in ("secret", "bootstrap"):
        # Secrets and the bootstrap come from the agent, not discovery: no fallback.
        raise CommandError(f"cannot read the {args.kind} of {item['proxy']}: its admin API "
                           f"{admin or '(unknown)'} is not reachable, and discovery does not "
                           "hold it (the proxy's agent makes it)")
    if dump is None:
        source = "discovery"
        dump = fetch_json(
            f"http://{args.discovery_address}/debug/config_dump?proxyID={item['proxy']}"
        )
    if args.kind == "bootstrap":  # Envoy's JSON, as istioctl prints it
        emit(config_dump.bootstrap(dump), "yaml" if args.output == "yaml" else "json")
        return 0
    if args.output in ("json", "yaml"):
        selected: Any = dump
        if args.kind == "secret":
            selected = config_dump.secrets(dump)
        elif args.kind != "all":
            selected = _filtered(args.kind, dump, args)
        emit(selected, args.output)
        return 0
    sections = []
    if args.kind in ("clusters", "all"):
        sections.append(table(tables.CLUSTER_HEADERS,
                              tables.cluster_rows(_filtered("clusters", dump, args))))
    if args.kind in ("listeners", "all"):
        sections.append(table(tables.LISTENER_HEADERS,
                              tables.listener_rows(_filtered("listeners", dump, args))))
    if args.kind in ("routes", "all"):
        sections.append(table(tables.ROUTE_HEADERS,
                              tables.route_rows(_filtered("routes", dump, args))))
    if args.kind in ("endpoints", "all"):
        rows = (tables.endpoint_rows_from_clusters_json(clusters_json) if clusters_json
                else tables.endpoint_rows_from_dump(_filtered("endpoints", dump, args)))
        sections.append(table(tables.ENDPOINT_HEADERS, [
            row for row in rows if tables.keep_endpoint_row(
                row, args.cluster, args.port, args.address, args.status)]))
    if args.kind in ("secret", "all") and source != "discovery":
        from pilotfish.cli import secret_dump  # certificates parsed: only when asked for

        sections.append(table(
            secret_dump.SECRET_HEADERS, secret_dump.secret_rows(config_dump.secrets(dump))))
    if source == "discovery":
        print("# from discovery: the proxy's admin API was not reachable", file=sys.stderr)
    print("\n".join(sections), end="")
    return 0


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("proxy", nargs="?", help="NAME.NAMESPACE of one proxy (optional)")
    parser.add_argument("--discovery-address", default="127.0.0.1:15014",
                        help="discovery's debug address (default %(default)s)")
    parser.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")


CONFIG_KINDS = ["clusters", "listeners", "routes", "endpoints", "secret", "bootstrap", "log",
                "all"]


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=CONFIG_KINDS)
    parser.add_argument("proxy", help="NAME.NAMESPACE (or NAME) of the proxy")
    parser.add_argument("--discovery-address", default="127.0.0.1:15014",
                        help="discovery's debug address (default %(default)s)")
    parser.add_argument("--state-dir", help="the local node's state (default "
                        "/run/pilotfish/node): proxies in its pods are read inside their netns")
    parser.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    narrow = parser.add_argument_group("narrowing (istioctl's flags)")
    narrow.add_argument("--fqdn", default="", help="clusters: part of the service FQDN")
    narrow.add_argument("--port", type=int, help="clusters, listeners, endpoints: the port")
    narrow.add_argument("--subset", default="", help="clusters: the subset")
    narrow.add_argument("--direction", default="", choices=["", "inbound", "outbound"],
                        help="clusters: inbound or outbound")
    narrow.add_argument("--address", default="", help="listeners, endpoints: the address")
    narrow.add_argument("--type", default="", help="listeners: HTTP, TCP or HTTP+TCP")
    narrow.add_argument("--name", default="", help="routes: the route configuration's name")
    narrow.add_argument("--cluster", default="", help="endpoints: part of the cluster name")
    narrow.add_argument("--status", default="", help="endpoints: HEALTHY, UNHEALTHY...")
    narrow.add_argument("--level", help="log: a level for every logger (debug), or "
                        "name:level pairs (http:debug,router:info); without it, show them")
