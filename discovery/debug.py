"""Discovery's debug HTTP endpoints (istiod's :15014 ``/debug/*``) and ``/metrics``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pilotfish.core import gateway_api
from pilotfish.core.gateway_api import status as gateway_status
from pilotfish.core.http import HttpServer, Request, Response
from pilotfish.core.xds import config_dump, types
from pilotfish.core.xds.server import Connection

if TYPE_CHECKING:
    from pilotfish.discovery.app import Discovery
_SHORT_KEYS = {types.CLUSTER: "cluster", types.LISTENER: "listener", types.ROUTE: "route",
               types.ENDPOINT: "endpoint"}


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def sync_status(connection: Connection, discovery_id: str) -> dict[str, Any]:
    """One proxy's sync state, as istiod's /debug/syncz reports it (values are nonces)."""
    proxy = connection.proxy
    out: dict[str, Any] = {
        "cluster_id": proxy.metadata.get("CLUSTER_ID", "Kubernetes"),
        "proxy": proxy.id,
        "proxy_type": proxy.kind,
        "proxy_version": proxy.metadata.get("ISTIO_VERSION", ""),
        "istiod": discovery_id,
        "connection": connection.id,
        "identity": connection.identity,  # SPIFFE ID proven on 15012; "" on plaintext
        "xds_mode": connection.mode.value,
        "connected_at": _iso(connection.connected_at),
        "admin": proxy.metadata.get("PILOTFISH_ADMIN", ""),
        "labels": dict(proxy.labels),
        "resources": {},
    }
    for type_url, watch in connection.session.watches.items():
        key = _SHORT_KEYS.get(type_url)
        if key:
            out[f"{key}_sent"] = watch.nonce_sent
            out[f"{key}_acked"] = watch.nonce_acked
        out["resources"][type_url] = {
            "status": watch.status.value,
            "sent": watch.nonce_sent,
            "acked": watch.nonce_acked,
            "version_sent": watch.version_sent,
            "version_acked": watch.version_acked,
            "sentTime": _iso(watch.sent_at),
            "ackedTime": _iso(watch.acked_at),
            "lastError": watch.last_error,
            "errorTime": _iso(watch.error_at),
            "subscribed": sorted(watch.names) if not watch.wildcard else ["*"],
            "resources": len(watch.known),
            "acks": watch.acks,
            "nacks": watch.nacks,
        }
    return out


def server(discovery: Discovery) -> HttpServer:
    async def syncz(request: Request) -> Response:
        namespace = request.query.get("namespace")
        items = [
            sync_status(c, discovery.options.id)
            for c in sorted(discovery.xds.connections.values(), key=lambda c: c.proxy.id)
            if namespace is None or c.proxy.namespace == namespace
        ]
        return Response.json(items)

    def find(proxy_id: str) -> Connection | None:
        for connection in discovery.xds.connections.values():
            if connection.proxy.id == proxy_id or connection.id == proxy_id:
                return connection
        for connection in discovery.xds.connections.values():
            if proxy_id in connection.id:
                return connection
        return None

    async def dump(request: Request) -> Response:
        proxy_id = request.query.get("proxyID", "")
        connection = find(proxy_id)
        if connection is None:
            return Response.text(
                f"config dump could not find connection for proxyID {proxy_id!r}\n", 404
            )
        wanted = request.query.get("types")
        urls = [types.BY_SHORT_NAME.get(t.upper(), t) for t in wanted.split(",")] if wanted \
            else None
        return Response.json(config_dump.build(discovery.resources_for(connection.proxy, urls)))

    async def registryz(request: Request) -> Response:
        push = discovery.state.push
        out = []
        for service in sorted(push.services.values(), key=lambda s: s.hostname):
            out.append({
                "hostname": service.hostname,
                "namespace": service.namespace,
                "name": service.name,
                "addresses": list(service.vips),
                "resolution": service.resolution.value,
                "meshExternal": service.mesh_external,
                "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol.value,
                           "targetPort": p.target_port} for p in service.ports],
                "endpoints": {
                    str(p.port): [f"{e.address}:{e.port}" for e in push.endpoints(
                        service.hostname, p.port)]
                    for p in service.ports
                },
                "source": str(service.origin) if service.origin else "",
            })
        return Response.json(out)

    async def describe(request: Request) -> Response:
        """What applies to one pod (``?pod=NAME.NAMESPACE``): ``discovery.describe``."""
        from pilotfish.discovery.describe import describe_pod

        name, _, namespace = request.query.get("pod", "").partition(".")
        if not name or not namespace:
            return Response.text("describe: give ?pod=NAME.NAMESPACE\n", 400)
        found = describe_pod(discovery.state.push, namespace, name)
        if found is None:
            return Response.text(f"describe: discovery knows no pod {name}.{namespace}\n", 404)
        return Response.json(found)

    async def gateway_status_view(request: Request) -> Response:
        """Gateway API status, as it would be written back to the objects (the files source
        cannot); a Gateway's address is its connected routers'."""
        served: dict[tuple[str, str], list[str]] = {}
        for connection in discovery.xds.connections.values():
            proxy = connection.proxy
            name = proxy.labels.get(gateway_api.GATEWAY_NAME_LABEL)
            if name and proxy.ip:
                served.setdefault((proxy.namespace, name), []).append(proxy.ip)
        view = discovery.state.push.gateway_api.status.view()
        return Response.json(gateway_status.with_proxies(
            view, {key: sorted(set(ips)) for key, ips in served.items()}))

    async def leases(request: Request) -> Response:
        """On a cluster: the Leases this replica takes part in, whether it leads each, and
        what the Gateway API status writer did while it led."""
        writer = discovery.status_writer
        return Response.json({
            "leases": [election.statistics() for election in discovery.elections.values()],
            "gatewayStatus": {"writes": writer.writes, "failures": writer.failures}
            if writer is not None else None,
        })

    async def configz(request: Request) -> Response:
        return Response.json([
            {"kind": o.kind, "apiVersion": o.api_version, "namespace": o.namespace,
             "name": o.name, "source": str(o.source)}
            for o in sorted(discovery.store.objects(), key=lambda o: str(o.key))
        ])

    async def errorz(request: Request) -> Response:
        return Response.json([e.as_dict() for e in discovery.config_errors()])

    async def push_status(request: Request) -> Response:
        record = discovery.last_push
        return Response.json({
            "version": record.version,
            "time": _iso(record.at),
            "changedTypes": [types.short(t) for t in record.changed_types],
            "changedObjects": record.changed_keys,
            "buildSeconds": round(record.build_seconds, 6),
            "pushes": record.pushes,
            "epochs": {str(key): epoch for key, epoch in sorted(discovery.state.epochs.items())},
            "cache": discovery.cache.statistics(),
            "connections": len(discovery.xds.connections),
        })

    async def adsz(request: Request) -> Response:
        if request.query.get("push") == "true":
            discovery.request_full_push("debug")
        return Response.json([
            {"id": c.id, "peer": c.peer, "mode": c.mode.value, "proxy": c.proxy.node_id,
             "connected_at": _iso(c.connected_at), "bytes_sent": c.bytes_sent,
             "responses": c.responses_sent,
             "watches": [types.short(t) for t in c.session.watched_types()]}
            for c in discovery.xds.connections.values()
        ])

    async def ready(request: Request) -> Response:
        if not discovery.ready:
            return Response.text("not ready\n", 503)
        if discovery.push_error:
            return Response.text(discovery.push_error + "\n", 503)
        return Response.text("ready\n")

    async def metrics(request: Request) -> Response:
        connections = list(discovery.xds.connections.values())
        rejects = sum(w.nacks for c in connections for w in c.session.watches.values())
        lines = [
            "# TYPE pilot_xds gauge", f"pilot_xds {len(connections)}",
            "# TYPE pilot_services gauge", f"pilot_services {len(discovery.state.push.services)}",
            "# TYPE pilot_total_xds_rejects counter", f"pilot_total_xds_rejects {rejects}",
            "# TYPE pilot_xds_pushes counter",
            f"pilot_xds_pushes {sum(c.responses_sent for c in connections)}",
            "# TYPE pilot_pushcontext_init_seconds gauge",
            f"pilot_pushcontext_init_seconds {discovery.last_push.build_seconds:.6f}",
            "# TYPE pilotfish_config_errors gauge",
            f"pilotfish_config_errors {len(discovery.config_errors())}",
        ]
        return Response(200, ("\n".join(lines) + "\n").encode(),
                        "text/plain; version=0.0.4")

    return HttpServer({
        "/debug/syncz": syncz,
        "/debug/config_dump": dump,
        "/debug/registryz": registryz,
        "/debug/configz": configz,
        "/debug/gateway_status": gateway_status_view,
        "/debug/describe": describe,
        "/debug/leases": leases,
        "/debug/config_errors": errorz,
        "/debug/push_status": push_status,
        "/debug/adsz": adsz,
        "/ready": ready,
        "/metrics": metrics,
    })
