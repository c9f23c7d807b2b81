"""Applying EnvoyFilter patches to generated listeners, route tables and clusters.

The order and the meaning of each operation are Istio's (pilot's envoyfilter package):
listener patches, then listener filters, then each filter chain (its patches, its network
filters, and the HTTP filters of an HTTP connection manager), then the chains to add; route
table merges, then each virtual host (its patches, then its routes), then the hosts to
add; cluster removals and merges per cluster, then the clusters to add. The contexts a
resource is patched in (``SIDECAR_INBOUND``, ``SIDECAR_OUTBOUND``, ``GATEWAY``) are decided
by the caller (`pilotfish.plugins.envoy_filter`).

Everything here works on the generated protobuf messages in place. A merge that cannot be
done (typed configs of different types) leaves the object as generated and is reported
through ``report(patch, message)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from pilotfish.plugins.envoy_filter_patches import HCM, Patch, merge

GATEWAY = "GATEWAY"
SIDECAR_INBOUND = "SIDECAR_INBOUND"
SIDECAR_OUTBOUND = "SIDECAR_OUTBOUND"
VIRTUAL_LISTENERS = ("virtualInbound", "virtualOutbound")
MERGES = ("MERGE", "MERGE_AND_REPLACE_LIST")

Report = Callable[[Patch, str], None]
Patches = Mapping[str, Sequence[Patch]]  # applyTo → patches, in application order


def in_context(context: str, patch: Patch) -> bool:
    return patch.context in ("ANY", context)


def _adds_here(context: str, patch: Patch) -> bool:
    """Listener and cluster ADDs without a context go to sidecar outbound and gateways."""
    if patch.context == "ANY":
        return context in (SIDECAR_OUTBOUND, GATEWAY)
    return patch.context == context


def _merge(dst: Message, patch: Patch) -> None:
    merge(dst, patch.value, replace_lists=patch.operation == "MERGE_AND_REPLACE_LIST")


def _merge_any(dst: any_pb2.Any, src: any_pb2.Any, *, retype: bool) -> any_pb2.Any | None:
    """``src`` merged into ``dst`` as the message they pack; None when they are not the
    same type (``retype``: read ``src`` as ``dst``'s type, as Istio does for network
    filters)."""
    pool = descriptor_pool.Default()
    try:
        descriptor = pool.FindMessageTypeByName(dst.type_url.rpartition("/")[2])
    except KeyError:
        return None
    cls = message_factory.GetMessageClass(descriptor)
    if src.type_url != dst.type_url and not retype:
        return None
    target, addition = cls(), cls()
    try:
        target.ParseFromString(dst.value)
        addition.ParseFromString(src.value)
    except DecodeError:
        return None
    merge(target, addition)
    out = any_pb2.Any()
    out.Pack(target)
    return out


# -- ordered lists: filters, listener filters -----------------------------------------

Target = Callable[[Patch], Callable[[Any], bool] | None]


def _list_ops(items: list[Any], patches: Iterable[Patch], target: Target) -> list[Any]:
    """ADD, INSERT_FIRST/BEFORE/AFTER, REPLACE and REMOVE on a list of named objects.

    ``target(patch)`` picks the element a patch is relative to (None: it names none).
    Without one, INSERT_BEFORE goes first and INSERT_AFTER last, REPLACE and REMOVE do
    nothing; with one, only its first match counts, but REMOVE takes every match."""
    for patch in patches:
        wanted = target(patch)
        value = patch.value
        if patch.operation == "ADD":
            items.append(_copy(value))
        elif patch.operation == "INSERT_FIRST":
            items.insert(0, _copy(value))
        elif patch.operation in ("INSERT_BEFORE", "INSERT_AFTER"):
            if wanted is None:
                items.insert(0 if patch.operation == "INSERT_BEFORE" else len(items),
                             _copy(value))
                continue
            at = next((i for i, item in enumerate(items) if wanted(item)), None)
            if at is not None:
                items.insert(at if patch.operation == "INSERT_BEFORE" else at + 1,
                             _copy(value))
        elif patch.operation == "REPLACE" and wanted is not None:
            at = next((i for i, item in enumerate(items) if wanted(item)), None)
            if at is not None:
                items[at] = _copy(value)
        elif patch.operation == "REMOVE" and wanted is not None:
            items = [item for item in items if not wanted(item)]
    return items


def _copy(message: Message) -> Any:
    out = type(message)()
    out.CopyFrom(message)
    return out


def _replace(field: Any, items: Sequence[Message]) -> None:
    """Set a repeated field to ``items`` (its own elements among them, reordered)."""
    del field[:]
    field.extend(items)


# -- listeners ---------------------------------------------------------------------------


def _listener_match(listener: listener_pb2.Listener, patch: Patch) -> bool:
    match = patch.listener
    if match is None:
        return True
    if match.get("name") and match["name"] != listener.name:
        return False
    # The virtual listeners hold every port's chains: their port is matched per chain.
    if patch.apply_to != "LISTENER" and listener.name in VIRTUAL_LISTENERS:
        return True
    port = match.get("portNumber") or 0
    return not port or listener.address.socket_address.port_value == port


def _chain_match(listener: listener_pb2.Listener, chain: listener_components_pb2.FilterChain,
                 patch: Patch) -> bool:
    match = patch.listener
    if match is None:
        return True
    port = match.get("portNumber") or 0
    fcm = chain.filter_chain_match
    if listener.name in VIRTUAL_LISTENERS and port and fcm.destination_port.value != port:
        return False
    wanted = match.get("filterChain")
    if not isinstance(wanted, Mapping):
        return True
    if wanted.get("name") and wanted["name"] != chain.name:
        return False
    if wanted.get("sni") and wanted["sni"] not in fcm.server_names:
        return False
    if wanted.get("transportProtocol") and wanted["transportProtocol"] != fcm.transport_protocol:
        return False
    if wanted.get("applicationProtocols") and any(
            p not in fcm.application_protocols
            for p in str(wanted["applicationProtocols"]).split(",")):
        return False
    port = wanted.get("destinationPort") or 0
    return not port or (fcm.HasField("destination_port") and fcm.destination_port.value == port)


def _filter_name(patch: Patch) -> str:
    wanted = (patch.listener or {}).get("filterChain")
    found = wanted.get("filter") if isinstance(wanted, Mapping) else None
    return str(found.get("name") or "") if isinstance(found, Mapping) else ""


def _sub_filter_name(patch: Patch) -> str:
    wanted = (patch.listener or {}).get("filterChain")
    found = wanted.get("filter") if isinstance(wanted, Mapping) else None
    sub = found.get("subFilter") if isinstance(found, Mapping) else None
    return str(sub.get("name") or "") if isinstance(sub, Mapping) else ""


def patch_listeners(listeners: list[listener_pb2.Listener], context_of: Callable[[Any], str],
                    contexts: Sequence[str], patches: Patches, report: Report,
                    patch_routes: Callable[[route_pb2.RouteConfiguration, str], None],
                    ) -> list[listener_pb2.Listener]:
    """The listeners after every patch: each in its own context (``context_of``), then
    the listeners ADDed for each of the proxy's ``contexts``. ``patch_routes`` patches the
    route tables written inline in HTTP connection managers (inbound ones), which Istio
    patches as it builds them."""
    out = [listener for listener in listeners
           if not _patch_listener(listener, context_of(listener), patches, report,
                                  patch_routes)]
    for context in contexts:
        out += [_copy(p.value) for p in patches.get("LISTENER", ())
                if p.operation == "ADD" and _adds_here(context, p)]
    return out


def _patch_listener(listener: listener_pb2.Listener, context: str, patches: Patches,
                    report: Report, patch_routes: Callable[[Any, str], None]) -> bool:
    """Patch one listener; True when a patch removes it."""
    _patch_inline_routes(listener, context, patch_routes)
    for patch in patches.get("LISTENER", ()):
        if not (in_context(context, patch) and _listener_match(listener, patch)):
            continue
        if patch.operation == "REMOVE":
            return True
        if patch.operation in MERGES:
            _merge(listener, patch)
    listener_filters = [p for p in patches.get("LISTENER_FILTER", ())
                        if in_context(context, p) and _listener_match(listener, p)]
    if listener_filters:
        def named(patch: Patch) -> Callable[[Any], bool] | None:
            name = str((patch.listener or {}).get("listenerFilter") or "")
            return (lambda item: item.name == name) if name else None
        _replace(listener.listener_filters,
                 _list_ops(list(listener.listener_filters), listener_filters, named))
    _patch_chains(listener, context, patches, report)
    return False


def _patch_inline_routes(listener: listener_pb2.Listener, context: str,
                         patch_routes: Callable[[Any, str], None]) -> None:
    chains = [*listener.filter_chains]
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    for chain in chains:
        for network_filter in chain.filters:
            if network_filter.name != HCM or not network_filter.HasField("typed_config"):
                continue
            manager = hcm_pb2.HttpConnectionManager()
            if not network_filter.typed_config.Unpack(manager) or not manager.HasField(
                    "route_config"):
                continue
            patch_routes(manager.route_config, context)
            network_filter.typed_config.Pack(manager)


def _patch_chains(listener: listener_pb2.Listener, context: str, patches: Patches,
                  report: Report) -> None:
    removed = [i for i, chain in enumerate(listener.filter_chains)
               if chain.filters and _patch_chain(listener, chain, context, patches, report)]
    default = listener.default_filter_chain
    if (listener.HasField("default_filter_chain") and default.filters
            and _patch_chain(listener, default, context, patches, report)):
        listener.ClearField("default_filter_chain")
    for patch in patches.get("FILTER_CHAIN", ()):
        if patch.operation == "ADD" and in_context(context, patch) and _listener_match(
                listener, patch):
            listener.filter_chains.add().CopyFrom(patch.value)
    for index in reversed(removed):
        del listener.filter_chains[index]


def _patch_chain(listener: listener_pb2.Listener, chain: listener_components_pb2.FilterChain,
                 context: str, patches: Patches, report: Report) -> bool:
    """Patch one filter chain; True when a patch removes it."""
    def applies(patch: Patch) -> bool:
        return (in_context(context, patch) and _listener_match(listener, patch)
                and _chain_match(listener, chain, patch))

    for patch in patches.get("FILTER_CHAIN", ()):
        if not applies(patch):
            continue
        if patch.operation == "REMOVE":
            return True
        if patch.operation in MERGES and not _merge_chain_socket(chain, patch, report):
            _merge(chain, patch)
    network = [p for p in patches.get("NETWORK_FILTER", ()) if applies(p)]

    def named(patch: Patch) -> Callable[[Any], bool] | None:
        name = _filter_name(patch)
        return (lambda item: item.name == name) if name else None

    if network:
        _replace(chain.filters, _list_ops(list(chain.filters), network, named))
    http = [p for p in patches.get("HTTP_FILTER", ()) if applies(p)]
    for network_filter in chain.filters:
        for patch in network:
            wanted = _filter_name(patch)
            if patch.operation in MERGES and (not wanted or wanted == network_filter.name):
                _merge_filter(network_filter, patch, report, retype=True)
        here = [p for p in http if _filter_name(p) in ("", network_filter.name)]
        if network_filter.name == HCM and here:
            _patch_http_filters(network_filter, here, report)
    return False


def _merge_chain_socket(chain: listener_components_pb2.FilterChain, patch: Patch,
                        report: Report) -> bool:
    """A patch with a transport socket of the chain's own kind merges into its typed
    config; True when that was the merge (nothing else of the patch is merged then)."""
    socket = patch.value.transport_socket
    if not patch.value.HasField("transport_socket") or not chain.HasField(
            "transport_socket") or socket.name != chain.transport_socket.name:
        return False
    if chain.transport_socket.HasField("typed_config") and socket.HasField("typed_config"):
        merged = _merge_any(chain.transport_socket.typed_config, socket.typed_config,
                            retype=False)
        if merged is None:
            report(patch, f"its transport socket ({socket.typed_config.type_url}) does not "
                   f"merge into {chain.transport_socket.typed_config.type_url}")
        else:
            chain.transport_socket.typed_config.CopyFrom(merged)
    return True


def _merge_filter(target: Any, patch: Patch, report: Report, *, retype: bool) -> None:
    """MERGE into a network or HTTP filter: its name, and its typed config merged as the
    message it packs."""
    if not target.HasField("typed_config"):
        return  # Istio leaves filters without a typed config alone
    user = patch.value
    merged = None
    if user.HasField("typed_config"):
        merged = _merge_any(target.typed_config, user.typed_config, retype=retype)
        if merged is None:
            report(patch, f"its typed_config ({user.typed_config.type_url}) does not merge "
                   f"into {target.name} ({target.typed_config.type_url})")
    if user.name:
        target.name = user.name
    if merged is not None:
        target.typed_config.CopyFrom(merged)


def _patch_http_filters(network_filter: listener_components_pb2.Filter,
                        patches: Sequence[Patch], report: Report) -> None:
    manager = hcm_pb2.HttpConnectionManager()
    if not network_filter.HasField("typed_config") or not network_filter.typed_config.Unpack(
            manager):
        return

    def named(patch: Patch) -> Callable[[Any], bool] | None:
        name = _sub_filter_name(patch)
        return (lambda item: item.name == name) if name else None

    _replace(manager.http_filters, _list_ops(list(manager.http_filters), patches, named))
    for http_filter in manager.http_filters:
        for patch in patches:
            if patch.operation in MERGES and _sub_filter_name(patch) == http_filter.name:
                _merge_filter(http_filter, patch, report, retype=False)
    network_filter.typed_config.Pack(manager)


# -- route tables --------------------------------------------------------------------------


def _route_port(name: str, gateway: bool) -> tuple[int, str, str]:
    """(port, gateway server port name, gateway namespace/name) a route table serves, read
    from its name as Istio does: ``80``, ``inbound|8080||``, ``http.8080``,
    ``https.443.https.gw.ns``."""
    if not gateway:
        if name.startswith("inbound|"):
            return _subset_key(name)[3], "", ""
        return (int(name) if name.isdigit() else 0), "", ""
    if name.startswith("http."):
        port = name[len("http."):]
        return (int(port) if port.isdigit() else 0), "", ""
    parts = name.split(".")
    if name.startswith("https.") and len(parts) == 5:
        return (int(parts[1]) if parts[1].isdigit() else 0), parts[2], f"{parts[4]}/{parts[3]}"
    return 0, "", ""


def _table_match(table: route_pb2.RouteConfiguration, patch: Patch, gateway: bool) -> bool:
    match = patch.route
    if match is None:
        return True
    port, port_name, gateway_name = _route_port(table.name, gateway)
    if match.get("portNumber") and match["portNumber"] != port:
        return False
    if gateway and match.get("portName") and match["portName"] != port_name:
        return False
    if gateway and match.get("gateway") and match["gateway"] != gateway_name:
        return False
    return not match.get("name") or match["name"] == table.name


def _vhost_match(vhost: route_components_pb2.VirtualHost, patch: Patch) -> bool:
    wanted = (patch.route or {}).get("vhost")
    return not isinstance(wanted, Mapping) or not wanted.get("name") or (
        wanted["name"] == vhost.name)


def _route_wanted(patch: Patch) -> Mapping[str, Any] | None:
    vhost = (patch.route or {}).get("vhost")
    route = vhost.get("route") if isinstance(vhost, Mapping) else None
    return route if isinstance(route, Mapping) else None


_ACTIONS = {"route": "ROUTE", "redirect": "REDIRECT", "direct_response": "DIRECT_RESPONSE"}


def _route_match(route: route_components_pb2.Route, patch: Patch) -> bool:
    wanted = _route_wanted(patch)
    if wanted is None:
        return True
    if wanted.get("name") and wanted["name"] != route.name:
        return False
    action = wanted.get("action") or "ANY"
    kind = _ACTIONS.get(route.WhichOneof("action") or "")
    return action == "ANY" or kind is None or kind == action


def patch_route_table(table: route_pb2.RouteConfiguration, context: str, patches: Patches,
                      gateway: bool) -> None:
    """Patch one route table (served by RDS or inline in a listener) in its context."""
    def applies(patch: Patch) -> bool:
        return in_context(context, patch) and _table_match(table, patch, gateway)

    for patch in patches.get("ROUTE_CONFIGURATION", ()):
        if patch.operation in MERGES and applies(patch):
            _merge(table, patch)
    vhost_patches = [p for p in patches.get("VIRTUAL_HOST", ()) if applies(p)]
    route_patches = [p for p in patches.get("HTTP_ROUTE", ()) if applies(p)]
    if not vhost_patches and not route_patches:
        return
    kept = []
    for vhost in table.virtual_hosts:
        patched = _patch_vhost(vhost, vhost_patches, route_patches)
        if patched is not None:
            kept.append(patched)
    kept += [_copy(p.value) for p in vhost_patches if p.operation == "ADD"]
    _replace(table.virtual_hosts, kept)


def _patch_vhost(vhost: route_components_pb2.VirtualHost, vhost_patches: Sequence[Patch],
                 route_patches: Sequence[Patch]) -> route_components_pb2.VirtualHost | None:
    vhost = _copy(vhost)
    for patch in vhost_patches:
        if not _vhost_match(vhost, patch):
            continue
        if patch.operation == "REMOVE":
            return None
        if patch.operation in MERGES:
            _merge(vhost, patch)
        elif patch.operation == "REPLACE":
            vhost = _copy(patch.value)
    here = [p for p in route_patches if _vhost_match(vhost, p)]
    if here:
        _replace(vhost.routes, _patch_routes(list(vhost.routes), here))
    return vhost


def _patch_routes(routes: list[route_components_pb2.Route], patches: Sequence[Patch]
                  ) -> list[route_components_pb2.Route]:
    kept = []
    for route in routes:
        for patch in patches:
            if not _route_match(route, patch):
                continue
            if patch.operation == "REMOVE":
                break
            if patch.operation in MERGES:
                _merge(route, patch)
        else:
            kept.append(route)
    for patch in patches:
        if patch.operation not in ("ADD", "INSERT_FIRST", "INSERT_BEFORE", "INSERT_AFTER"):
            continue
        target = _route_target(patch)
        if patch.operation == "INSERT_FIRST" and target is not None:
            # First, but only into a host that has the route it names.
            if any(target(route) for route in kept):
                kept.insert(0, _copy(patch.value))
        else:
            kept = _list_ops(kept, [patch], _route_target)
    return kept


def _route_target(patch: Patch) -> Callable[[Any], bool] | None:
    if _route_wanted(patch) is None:
        return None
    return lambda route: _route_match(route, patch)


# -- clusters -------------------------------------------------------------------------------


def _subset_key(name: str) -> tuple[str, str, str, int]:
    """(direction, subset, hostname, port) of ``outbound|80|v1|host`` (or the DNS SRV
    form ``outbound_.80_.v1_.host``); empty for other names."""
    sep = "|" if "|" in name else "_." if "_." in name else ""
    parts = name.split(sep, 3) if sep else []
    if len(parts) < 4:
        return "", "", "", 0
    return parts[0], parts[2], parts[3], int(parts[1]) if parts[1].isdigit() else 0


def _cluster_match(cluster: Any, patch: Patch, hosts: Callable[[int], Sequence[str]]) -> bool:
    match = patch.cluster
    if match is None:
        return True
    if match.get("name"):
        return bool(match["name"] == cluster.name)
    direction, subset, hostname, port = _subset_key(cluster.name)
    names = [hostname]
    if direction == "inbound":  # inbound clusters name no host: the services' hostnames
        names = list(hosts(port)) or names
    if match.get("subset") and match["subset"] != subset:
        return False
    if match.get("service") and match["service"] not in names:
        return False
    return not match.get("portNumber") or match["portNumber"] == port


def patch_clusters(clusters: list[Any], context_of: Callable[[Any], str],
                   contexts: Sequence[str], hosts: Callable[[int], Sequence[str]],
                   patches: Patches, report: Report) -> list[Any]:
    """The clusters after every patch: each in its context (removed, or merged), then the
    clusters ADDed for each of the proxy's ``contexts``. ``hosts(port)``: the services an
    inbound cluster of that port serves."""
    out = []
    for cluster in clusters:
        context = context_of(cluster)
        for patch in patches.get("CLUSTER", ()):
            if not (in_context(context, patch) and _cluster_match(cluster, patch, hosts)):
                continue
            if patch.operation == "REMOVE":
                break
            if patch.operation in MERGES and not _merge_cluster_socket(cluster, patch,
                                                                       report):
                _merge(cluster, patch)
        else:
            out.append(cluster)
    for context in contexts:
        out += [_copy(p.value) for p in patches.get("CLUSTER", ())
                if p.operation == "ADD" and _adds_here(context, p)]
    return out


def _merge_cluster_socket(cluster: Any, patch: Patch, report: Report) -> bool:
    """Istio's transport socket merge for clusters: into the transport socket match of the
    same name (none: the patch is dropped), or the cluster's own socket of that name, or
    it replaces the cluster's socket. True when that was the merge."""
    socket = patch.value.transport_socket
    if not patch.value.HasField("transport_socket"):
        return False
    found = None
    if cluster.transport_socket_matches:
        found = next((m.transport_socket for m in cluster.transport_socket_matches
                      if m.HasField("transport_socket")
                      and m.transport_socket.name == socket.name), None)
        if found is None:
            report(patch, f"cluster {cluster.name} has no transport socket match named "
                   f"{socket.name!r}; the patch is not applied to it")
            return True
    elif cluster.HasField("transport_socket") and cluster.transport_socket.name == socket.name:
        found = cluster.transport_socket
    if found is None:
        cluster.transport_socket.CopyFrom(socket)
    elif found.HasField("typed_config") and socket.HasField("typed_config"):
        merged = _merge_any(found.typed_config, socket.typed_config, retype=False)
        if merged is None:
            report(patch, f"its transport socket ({socket.typed_config.type_url}) does not "
                   f"merge into {found.typed_config.type_url} of cluster {cluster.name}")
        else:
            found.typed_config.CopyFrom(merged)
    return True
