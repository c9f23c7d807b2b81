"""Gateway (router proxy) route configurations.

Servers of every Gateway that selects the proxy are grouped by the route configuration
their listener asks for (`route_name`, the contract with LDS): all plain-HTTP servers on a
port share ``http.<port>``; each TLS-terminating HTTPS server has its own
``https.<port>.<portName>.<gateway>.<namespace>``. A virtual host ``<host>:<port>`` is made
for every VirtualService host, bound to the server's gateway, that the server admits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf import wrappers_pb2

from pilotfish.core import protocol
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import GatewayServer, PushContext
from pilotfish.translators.destinations import RouteContext
from pilotfish.translators.route_match import is_catch_all
from pilotfish.translators.routes import vs_routes
from pilotfish.translators.virtual_hosts import MAX_DIRECT_RESPONSE_BODY

TLS_TERMINATING_MODES = frozenset({"SIMPLE", "MUTUAL", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"})
BLACKHOLE = "blackhole"


def route_name(server: GatewayServer) -> str | None:
    """The RDS name a gateway server's HTTP connection manager uses (None: not HTTP).

    In file mode there is no gateway Service to map the server port to a target port,
    so both forms use the server's port number.
    """
    kind = protocol.parse(server.protocol)
    if kind.is_http:
        return f"http.{server.port}"
    if kind is protocol.Protocol.HTTPS:
        if str(server.tls.get("mode") or "").upper() in TLS_TERMINATING_MODES:
            gw = server.gateway
            return f"https.{server.port}.{server.port_name}.{gw.name}.{gw.namespace}"
        if server.tls.get("httpsRedirect"):
            return f"http.{server.port}"  # plain HTTP that only tells clients to use TLS
    return None


def admitted_hosts(server: GatewayServer, vs_namespace: str) -> list[str]:
    """The server's hosts a VirtualService in ``vs_namespace`` may bind to.

    ``ns/host`` admits only VirtualServices of ``ns`` (``.``: the gateway's namespace,
    ``*``: any); a bare host admits every namespace.
    """
    out = []
    for entry in server.hosts:
        namespace, slash, host = entry.rpartition("/")
        if slash:
            if namespace == ".":
                namespace = server.gateway.namespace
            if namespace not in ("*", vs_namespace):
                continue
        out.append(host)
    return out


def _within(host: str, pattern: str) -> bool:
    """Is every name ``host`` stands for also covered by ``pattern``?"""
    if host == pattern or pattern == "*":
        return True
    if not pattern.startswith("*"):
        return False
    return host.lstrip("*").endswith(pattern[1:]) if host.startswith("*") else host.endswith(
        pattern[1:]
    )


def intersect(server_hosts: Sequence[str], vs_hosts: Sequence[str]) -> list[str]:
    """Names both sides cover, each as the narrower of the pair: a VirtualService for
    ``a.example.com`` on a ``*.example.com`` server yields ``a.example.com``."""
    out: list[str] = []
    for ours in server_hosts:
        for theirs in vs_hosts:
            narrower = ours if _within(ours, theirs) else theirs if _within(theirs, ours) else ""
            if narrower and narrower not in out:
                out.append(narrower)
    return out


@attrs.define
class _Host:
    name: str
    domains: list[str]
    routes: list[rc.Route]
    sources: list[tuple[str, str]]  # (gateway, VirtualService) each route list came from
    require_tls: bool


def _collapse(hosts: dict[str, _Host]) -> list[_Host]:
    """Hosts with the very same routes share one virtual host: a VirtualService with many
    hosts would otherwise repeat its whole route table per host."""
    merged: dict[tuple[tuple[tuple[str, str], ...], bool], _Host] = {}
    for hostname in sorted(hosts):
        entry = hosts[hostname]
        key = (tuple(entry.sources), entry.require_tls)
        if key in merged:
            merged[key].domains += entry.domains
        else:
            merged[key] = entry
    return list(merged.values())


def _virtual_hosts(
    push: PushContext, proxy: Proxy, servers: Sequence[GatewayServer], tls: bool,
    memo: dict[Any, Any],
) -> list[rc.VirtualHost]:
    hosts: dict[str, _Host] = {}
    built: dict[tuple[str, str], list[rc.Route]] = {}
    for server in servers:
        gw = server.gateway
        ctx = RouteContext(push, proxy, server.port, frozenset({gw.ref}), tls)
        redirect = bool(server.tls.get("httpsRedirect"))
        for vs in push.virtual_services_for(proxy, gw.ref):
            names = intersect(admitted_hosts(server, vs.namespace), vs.hosts)
            if not names:
                continue
            source = (gw.ref, str(vs.key))
            if source not in built:
                built[source] = vs_routes(ctx, vs, memo)
            if not built[source]:
                continue
            for name in names:
                entry = hosts.get(name)
                if entry is None:
                    hosts[name] = _Host(f"{name}:{server.port}", [name], list(built[source]),
                                        [source], redirect)
                else:  # several VirtualServices for one host: their routes are concatenated
                    entry.routes += built[source]
                    entry.sources.append(source)
                    entry.require_tls |= redirect
        if redirect:
            for name in (h.rpartition("/")[2] for h in server.hosts):
                if name in hosts:
                    hosts[name].require_tls = True
                else:
                    hosts[name] = _Host(f"{name}:{server.port}", [name], [], [], True)
    if not hosts:
        # Envoy answers 404 for a virtual host without routes: nothing is bound here yet.
        return [rc.VirtualHost(name=f"{BLACKHOLE}:{servers[0].port}", domains=["*"])]
    out = []
    for entry in _collapse(hosts):
        # Catch-all routes of one VirtualService would shadow the next one's routes.
        routes = [r for r in entry.routes if not is_catch_all(r)]
        routes += [r for r in entry.routes if is_catch_all(r)]
        out.append(rc.VirtualHost(
            name=entry.name, domains=entry.domains, routes=routes,
            include_request_attempt_count=True,
            require_tls=rc.VirtualHost.ALL if entry.require_tls else rc.VirtualHost.NONE,
        ))
    return sorted(out, key=lambda v: v.name)


def gateway_route_configs(
    push: PushContext, proxy: Proxy, memo: dict[Any, Any]
) -> list[route_pb2.RouteConfiguration]:
    """Every route configuration a router proxy's gateway listeners refer to."""
    groups: dict[str, list[GatewayServer]] = {}
    for gateway in push.gateways_for(proxy):
        for server in gateway.servers:
            name = route_name(server)
            if name is not None:
                groups.setdefault(name, []).append(server)
    return [
        route_pb2.RouteConfiguration(
            name=name,
            virtual_hosts=_virtual_hosts(push, proxy, servers, name.startswith("https."), memo),
            validate_clusters=wrappers_pb2.BoolValue(value=False),
            # Same limit as sidecars, so a directResponse body behaves the same everywhere.
            max_direct_response_body_size_bytes=wrappers_pb2.UInt32Value(
                value=MAX_DIRECT_RESPONSE_BODY
            ),
            ignore_port_in_host_matching=True,
        )
        for name, servers in sorted(groups.items())
    ]
