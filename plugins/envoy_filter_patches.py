"""EnvoyFilter ``configPatches`` as patches ready to apply, and the problems that stop them.

One EnvoyFilter object becomes a `Compiled` filter: its selection (``workloadSelector`` or
``targetRefs``), its ``priority`` and creation time, and one `Patch` per config patch with
the value already converted into the Envoy message of its ``applyTo`` (``@type`` values
resolved against the Envoy protos of xds-protos). Conversion happens once per object, not
once per proxy scope.

Problems are what Istio's validation would say, graded by what pilotfish does with them:

- *fatal*: the object cannot be applied as written (a value that does not convert into the
  Envoy type, a missing ``applyTo``, ``patch`` or operation, a bad version regex, a filter
  match without a name). The whole EnvoyFilter is skipped, as Istio's webhook would refuse
  it, so that no half of a set of patches that belong together is applied.
- *no effect*: a part pilotfish cannot apply (``BOOTSTRAP``, ``EXTENSION_CONFIG``, the
  ``WAYPOINT`` context, ``match.proxy.metadata``) or Istio ignores (``filterClass``,
  ``listener.portName``). That patch is left out; the others apply.
- *note*: unknown fields in a value (ignored, as Istio converts leniently) and deprecated
  filter names in a match.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import extension_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import descriptor_pool, duration_pb2, json_format
from google.protobuf.message import Message

from pilotfish.core.objects import ConfigKey, ConfigObject, FieldPath, as_json

HCM = "envoy.filters.network.http_connection_manager"

# applyTo → the Envoy message its value converts into.
VALUE_TYPES: Mapping[str, type[Message]] = {
    "LISTENER": listener_pb2.Listener,
    "FILTER_CHAIN": listener_components_pb2.FilterChain,
    "NETWORK_FILTER": listener_components_pb2.Filter,
    "HTTP_FILTER": hcm_pb2.HttpFilter,
    "ROUTE_CONFIGURATION": route_pb2.RouteConfiguration,
    "VIRTUAL_HOST": route_components_pb2.VirtualHost,
    "HTTP_ROUTE": route_components_pb2.Route,
    "CLUSTER": cluster_pb2.Cluster,
    "LISTENER_FILTER": listener_components_pb2.ListenerFilter,
    "EXTENSION_CONFIG": extension_pb2.TypedExtensionConfig,
    "BOOTSTRAP": bootstrap_pb2.Bootstrap,
}
LISTENER_CLASS = frozenset({"LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER",
                            "LISTENER_FILTER"})
ROUTE_CLASS = frozenset({"ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE"})
# Where the INSERT_* operations keep their meaning; elsewhere Istio turns them into ADD.
ORDERED = frozenset({"HTTP_FILTER", "NETWORK_FILTER", "HTTP_ROUTE", "LISTENER_FILTER"})
NOT_APPLIED = {
    "BOOTSTRAP": "BOOTSTRAP patches are not applied: the pilotfish agent writes the "
                 "bootstrap",
    "EXTENSION_CONFIG": "EXTENSION_CONFIG patches are not applied: pilotfish serves no "
                        "extension configs (ECDS)",
}
OPERATIONS = frozenset({"MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER",
                        "INSERT_FIRST", "REPLACE", "MERGE_AND_REPLACE_LIST"})
# The names Envoy dropped for its filters (a match on one finds nothing).
DEPRECATED_NAMES = {
    "envoy.http_connection_manager": HCM,
    "envoy.tcp_proxy": "envoy.filters.network.tcp_proxy",
    "envoy.router": "envoy.filters.http.router",
    "envoy.lua": "envoy.filters.http.lua",
    "envoy.cors": "envoy.filters.http.cors",
    "envoy.fault": "envoy.filters.http.fault",
    "envoy.ext_authz": "envoy.filters.http.ext_authz",
    "envoy.listener.tls_inspector": "envoy.filters.listener.tls_inspector",
    "envoy.listener.http_inspector": "envoy.filters.listener.http_inspector",
}
# The Envoy proto packages a value's ``@type`` may name (the xds-protos distribution).
_PROTO_ROOTS = ("envoy.", "udpa.", "xds.", "google.protobuf.", "google.rpc.")
_V2 = re.compile(r"v2(alpha\d*)?")


def object_at(value: Any) -> Mapping[str, Any]:
    """A field of the spec that should be an object (anything else reads as empty)."""
    return value if isinstance(value, Mapping) else {}


@attrs.frozen
class Problem:
    path: FieldPath
    message: str
    grade: str  # "fatal" | "no effect" | "note"


@attrs.frozen
class Patch:
    """One config patch, converted."""

    origin: str  # "EnvoyFilter ns/name configPatches[i]", for what is logged
    apply_to: str
    operation: str  # INSERT_* already turned into ADD where Istio does so
    context: str  # ANY, SIDECAR_INBOUND, SIDECAR_OUTBOUND, GATEWAY
    listener: Mapping[str, Any] | None = None
    route: Mapping[str, Any] | None = None  # match.routeConfiguration
    cluster: Mapping[str, Any] | None = None
    value: Any = None  # a message of VALUE_TYPES[apply_to], or None (REMOVE)
    proxy_version: re.Pattern[str] | None = None


@attrs.frozen
class Compiled:
    """One EnvoyFilter: whom it selects, where it sorts, and its patches in order."""

    key: ConfigKey
    priority: int
    creation: str
    selector: Mapping[str, str] | None  # workloadSelector.labels (None: every workload)
    gateways: tuple[str, ...] | None  # targetRefs Gateway names (None: no targetRefs)
    patches: tuple[Patch, ...]
    problems: tuple[Problem, ...]

    @property
    def fatal(self) -> bool:
        return any(p.grade == "fatal" for p in self.problems)


def compile_filter(obj: ConfigObject) -> Compiled:
    """The patches of one EnvoyFilter object and what stands in their way."""
    spec = as_json(obj.spec)
    problems: list[Problem] = []
    selector = object_at(object_at(spec.get("workloadSelector")).get("labels"))
    gateways = None
    if spec.get("targetRefs") is not None:
        gateways = tuple(_target_gateways(spec["targetRefs"], problems))
    patches = []
    for index, raw in enumerate(spec.get("configPatches") or ()):
        patch = _patch(obj, index, raw if isinstance(raw, Mapping) else {}, problems)
        if patch is not None:
            patches.append(patch)
    priority = spec.get("priority")
    return Compiled(
        key=obj.key, priority=priority if isinstance(priority, int) else 0,
        creation=obj.creation,
        selector={str(k): str(v) for k, v in selector.items()} if selector else None,
        gateways=gateways, patches=tuple(patches), problems=tuple(problems),
    )


def _target_gateways(refs: Any, problems: list[Problem]) -> Iterator[str]:
    """The Gateway API Gateways ``targetRefs`` names; any other target selects nothing."""
    for index, ref in enumerate(refs if isinstance(refs, list) else ()):
        ref = ref if isinstance(ref, Mapping) else {}
        if ref.get("group") == "gateway.networking.k8s.io" and ref.get("kind") == "Gateway":
            yield str(ref.get("name") or "")
        else:
            problems.append(Problem(
                ("spec", "targetRefs", index),
                f"targetRefs to {ref.get('group') or 'core'}/{ref.get('kind')} select no "
                "proxy: only Gateways (gateway.networking.k8s.io) are supported", "no effect"))


def _patch(obj: ConfigObject, index: int, raw: Mapping[str, Any], problems: list[Problem]
           ) -> Patch | None:
    """One config patch, or None (with the problems saying why)."""
    at: FieldPath = ("spec", "configPatches", index)

    def problem(path: FieldPath, message: str, grade: str = "fatal") -> None:
        problems.append(Problem((*at, *path), message, grade))

    apply_to = str(raw.get("applyTo") or "INVALID")
    body = raw.get("patch")
    match = object_at(raw.get("match"))
    proxy = object_at(match.get("proxy"))
    operation = str(body.get("operation") or "INVALID") if isinstance(body, Mapping) else ""
    if apply_to not in VALUE_TYPES:
        problem(("applyTo",), "missing applyTo" if apply_to == "INVALID"
                else f"unknown applyTo {apply_to}")
    elif not isinstance(body, Mapping):
        problem(("patch",), "missing patch")
    elif operation not in OPERATIONS:
        problem(("patch", "operation"), "missing patch operation")
    elif operation != "REMOVE" and body.get("value") is None:
        problem(("patch", "value"), "missing patch value for non-remove operation")
    else:
        try:
            version = re.compile(str(proxy["proxyVersion"])) if proxy.get(
                "proxyVersion") else None
        except re.error as exc:
            problem(("match", "proxy", "proxyVersion"),
                    f"invalid regex for proxy version: {exc}")
            return None
        listener, route, cluster = (match.get(k) for k in ("listener", "routeConfiguration",
                                                           "cluster"))
        if not _match_fits(apply_to, listener, route, cluster, problem):
            return None
        value = None
        if body.get("value") is not None:
            value = _convert(apply_to, body["value"],
                             lambda message, grade: problem(("patch", "value"), message, grade))
            if value is None:
                return None
            if apply_to in ("NETWORK_FILTER", "HTTP_FILTER", "LISTENER_FILTER") and (
                    operation not in ("MERGE", "REMOVE")) and not value.name:
                problem(("patch", "value", "name"), f"a {apply_to} value needs a name")
                return None
        context = str(match.get("context") or "ANY")
        if not _applicable(apply_to, context, match, body, problem):
            return None
        if operation.startswith("INSERT_") and apply_to not in ORDERED:
            operation = "ADD"
        return Patch(
            origin=f"EnvoyFilter {obj.namespace}/{obj.name} configPatches[{index}]",
            apply_to=apply_to, operation=operation, context=context,
            listener=listener if isinstance(listener, Mapping) else None,
            route=route if isinstance(route, Mapping) else None,
            cluster=cluster if isinstance(cluster, Mapping) else None,
            value=value, proxy_version=version,
        )
    return None


def _applicable(apply_to: str, context: str, match: Mapping[str, Any],
                body: Mapping[str, Any], problem: Any) -> bool:
    """Whether pilotfish can apply a valid patch: the parts it cannot apply (or Istio
    ignores) are said, and leave the other patches be."""
    listener = object_at(match.get("listener"))
    chain = object_at(listener.get("filterChain"))
    vhost = object_at(object_at(match.get("routeConfiguration")).get("vhost"))
    unsupported = [
        (apply_to in NOT_APPLIED, ("applyTo",), NOT_APPLIED.get(apply_to, "")),
        (context == "WAYPOINT", ("match", "context"),
         "the WAYPOINT context matches nothing: pilotfish runs no waypoints"),
        (bool(object_at(match.get("proxy")).get("metadata")),
         ("match", "proxy", "metadata"),
         "match.proxy.metadata is not supported (config is shared by every proxy of a "
         "scope, which carries no node metadata): the patch is not applied"),
        (bool(chain.get("transportSocket")),
         ("match", "listener", "filterChain", "transportSocket"),
         "filterChain.transportSocket matches are not supported: the patch is not applied"),
        (bool(vhost.get("domainName")),
         ("match", "routeConfiguration", "vhost", "domainName"),
         "vhost.domainName matches are not supported: the patch is not applied"),
    ]
    for found, path, message in unsupported:
        if found:
            problem(path, message, "no effect")
            return False
    if listener.get("portName"):
        problem(("match", "listener", "portName"), "listener portName is not implemented "
                "(as in Istio): it matches every port", "no effect")
    if body.get("filterClass") not in (None, "UNSPECIFIED"):
        problem(("patch", "filterClass"), "filterClass has no effect (Istio does not "
                "implement it either): the filter is placed by the operation alone",
                "no effect")
    return True


def _match_fits(apply_to: str, listener: Any, route: Any, cluster: Any, problem: Any
                ) -> bool:
    """Istio's rules for which match goes with which applyTo."""
    given = [k for k, v in (("listener", listener), ("routeConfiguration", route),
                            ("cluster", cluster)) if v is not None]
    wanted = ("listener" if apply_to in LISTENER_CLASS else
              "routeConfiguration" if apply_to in ROUTE_CLASS else
              "cluster" if apply_to == "CLUSTER" else None)
    if wanted is not None and given and given != [wanted]:
        problem(("match",), f"applyTo {apply_to} cannot have a {given[0]} match")
        return False
    chain = listener.get("filterChain") if isinstance(listener, Mapping) else None
    found = chain.get("filter") if isinstance(chain, Mapping) else None
    if isinstance(found, Mapping):
        path = ("match", "listener", "filterChain", "filter")
        if apply_to in ("LISTENER", "FILTER_CHAIN"):
            problem(path, f"a filter match has no effect with applyTo {apply_to}", "note")
        if not found.get("name"):
            problem((*path, "name"), "filter match has no name to match on")
            return False
        sub = found.get("subFilter")
        if sub is not None:
            if apply_to != "HTTP_FILTER":
                problem((*path, "subFilter"), "a subFilter match goes with applyTo "
                        "HTTP_FILTER only")
                return False
            if found["name"] not in (HCM, "envoy.http_connection_manager"):
                problem((*path, "subFilter"), f"a subFilter match needs a filter match on {HCM}")
                return False
            if not isinstance(sub, Mapping) or not sub.get("name"):
                problem((*path, "subFilter", "name"), "subfilter match has no name to match on")
                return False
        for name in (found.get("name"), (sub or {}).get("name") if isinstance(sub, Mapping)
                     else None):
            if name in DEPRECATED_NAMES:
                problem(path, f"deprecated filter name {name!r} matches nothing: use "
                        f"{DEPRECATED_NAMES[name]!r}", "note")
    return True


def _convert(apply_to: str, raw: Any, problem: Any) -> Message | None:
    """The value as the Envoy message of ``applyTo``; unknown fields are dropped with a
    note, as Istio converts leniently; anything else that does not fit is fatal."""
    message = VALUE_TYPES[apply_to]()
    if not isinstance(raw, Mapping):
        problem(f"expected an object for the {message.DESCRIPTOR.full_name}", "fatal")
        return None
    for type_name in _type_names(raw):
        if not resolve_type(type_name):
            problem(f"referenced type unknown: {type_name}" + (
                " (hint: use the v3 xDS API)" if ".v2." in type_name else ""), "fatal")
            return None
    try:
        json_format.ParseDict(raw, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        problem(f"does not convert into {message.DESCRIPTOR.full_name}: {exc}", "fatal")
        return None
    try:
        json_format.ParseDict(raw, VALUE_TYPES[apply_to]())
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        problem(f"{exc} (ignored, as Istio does)", "note")
    return message


def _type_names(value: Any) -> Iterator[str]:
    """Every ``@type`` in a value, innermost included."""
    if isinstance(value, Mapping):
        type_url = value.get("@type")
        if isinstance(type_url, str):
            yield type_url.rpartition("/")[2]
        for item in value.values():
            yield from _type_names(item)
    elif isinstance(value, list):
        for item in value:
            yield from _type_names(item)


def resolve_type(full_name: str) -> bool:
    """Whether the message type is known, importing its xds-protos package on first use
    (only packages of the Envoy API are ever imported)."""
    pool = descriptor_pool.Default()
    if full_name.startswith("envoy.") and any(_V2.fullmatch(part)
                                              for part in full_name.split(".")[:-1]):
        return False  # xds-protos still ships the v2 API, which Envoy no longer takes
    try:
        pool.FindMessageTypeByName(full_name)
        return True
    except KeyError:
        pass
    package = full_name.rpartition(".")[0]
    if not full_name.startswith(_PROTO_ROOTS) or not re.fullmatch(r"[A-Za-z0-9_.]+", package):
        return False
    try:
        module = importlib.import_module(package)
    except ImportError:
        return False
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        if info.name.endswith("_pb2"):
            try:
                importlib.import_module(f"{package}.{info.name}")
            except ImportError:
                continue
    try:
        pool.FindMessageTypeByName(full_name)
        return True
    except KeyError:
        return False


def merge(dst: Message, src: Message, replace_lists: bool = False) -> None:
    """Protobuf merge as Istio does it: set fields of ``src`` overwrite, repeated fields
    append (replaced with ``replace_lists``, MERGE_AND_REPLACE_LIST), map entries are
    replaced, messages merge field by field except Durations, which are replaced whole."""
    for field, value in src.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target = getattr(dst, field.name)
            for key in value:
                if field.message_type.fields_by_name["value"].message_type is not None:
                    target[key].CopyFrom(value[key])
                else:
                    target[key] = value[key]
        elif field.is_repeated:
            target = getattr(dst, field.name)
            if replace_lists:
                del target[:]
            if field.message_type is not None:
                for item in value:
                    target.add().CopyFrom(item)
            else:
                target.extend(value)
        elif field.message_type is not None:
            if field.message_type.full_name == duration_pb2.Duration.DESCRIPTOR.full_name:
                getattr(dst, field.name).CopyFrom(value)
            else:
                target = getattr(dst, field.name)
                target.SetInParent()  # an empty message in the patch is still set
                merge(target, value, replace_lists)
        else:
            setattr(dst, field.name, value)
