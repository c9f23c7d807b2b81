"""Routes → VirtualService rules, attached where the spec lets them attach.

Each match of each rule is one VirtualService ``http`` entry; the entries of every route
attached to a (listener, hostname) are ordered by the spec's precedence: an exact path,
then the longest prefix (or regex), then a method, then most headers, then most query
parameters; ties go to the oldest route, then ``namespace/name``, then rule and match
order. Path prefixes match whole segments (``/foo`` takes ``/foo/bar``, not ``/foobar``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pilotfish.core.gateway_api.status import Condition, ParentStatus, Statuses
from pilotfish.core.objects import ConfigObject

if TYPE_CHECKING:
    from pilotfish.core.gateway_api import Listener, _Inputs

Entry = tuple[tuple[Any, ...], dict[str, Any]]  # (precedence key, VirtualService rule)
_PATH_RANK = {"Exact": 0, "PathPrefix": 1, "RegularExpression": 2}
# Where a TLS or TCP route without one valid backend sends its connections: no such service.
UNRESOLVED_BACKEND = "unresolved-backend.pilotfish.invalid"
MESH = "mesh"


def intersect(listener: str, hostnames: Sequence[str]) -> list[str]:
    """The hostnames a route serves on a listener: the route's within the listener's (a
    wildcard taking any number of labels), the listener's where the route's is wider."""
    if not hostnames:
        return [listener or "*"]
    if not listener:
        return list(dict.fromkeys(hostnames))
    out = []
    for host in hostnames:
        if _within(host, listener):
            out.append(host)
        elif _within(listener, host):
            out.append(listener)
    return list(dict.fromkeys(out))


def _within(host: str, pattern: str) -> bool:
    if pattern in ("*", host):
        return True
    return pattern.startswith("*.") and host.endswith(pattern[1:]) and (
        not host.startswith("*.") or len(host) > len(pattern))


class Builder:
    """Collects the rules of every attached route, then makes the VirtualServices."""

    def __init__(self, inputs: _Inputs, listeners: Mapping[tuple[str, str], list[Listener]],
                 status: Statuses) -> None:
        self.inputs = inputs
        self.listeners = listeners
        self.status = status
        self.http: dict[tuple[str, str], list[Entry]] = defaultdict(list)
        self.tls: dict[tuple[str, str], list[Entry]] = defaultdict(list)
        self.tcp: dict[str, list[Entry]] = defaultdict(list)
        self.mesh: dict[str, list[Entry]] = defaultdict(list)
        self.origins: dict[Any, ConfigObject] = {}
        # (namespace, Service) → the Gateways (namespace, name) whose routes send to it.
        self.ancestors: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
        self._backends: set[tuple[str, str]] = set()  # of the route being attached

    # -- attaching ----------------------------------------------------------------------

    def attach(self, route: ConfigObject) -> None:
        from pilotfish.core.gateway_api import GROUP, allows

        problems: list[tuple[str, str]] = []
        self._backends = set()
        rules = [self._rule(route, index, rule, problems)
                 for index, rule in enumerate(route.spec.get("rules") or ())]
        resolved = Condition("ResolvedRefs", True, "ResolvedRefs", "All references resolved")
        if problems:
            resolved = Condition("ResolvedRefs", False, problems[0][0], problems[0][1])
        hostnames = [str(h) for h in route.spec.get("hostnames") or ()]
        for raw in route.spec.get("parentRefs") or ():
            ref = {"group": GROUP, "kind": "Gateway", **dict(raw)}
            ref.setdefault("namespace", route.namespace)
            if ref["kind"] == "Service" and str(ref["group"]) in ("", "core"):
                self._mesh(route, ref, rules, resolved)
                continue
            if ref["group"] != GROUP or ref["kind"] != "Gateway":
                continue
            listeners = self.listeners.get((str(ref["namespace"]), str(ref["name"])))
            if listeners is None:
                continue  # not a Gateway this controller owns: its status is not ours
            candidates = [
                listener for listener in listeners
                if (not ref.get("sectionName") or listener.name == ref["sectionName"])
                and (not ref.get("port") or listener.port == int(ref["port"]))
            ]
            allowed = [listener for listener in candidates
                       if listener.status.accepted.status and allows(listener, route,
                                                                     self.inputs)]
            hosted = [(listener, hosts) for listener in allowed
                      if (hosts := intersect(listener.hostname, hostnames))]
            if not candidates:
                accepted = Condition("Accepted", False, "NoMatchingParent",
                                     "no listener matches the parentRef")
            elif not allowed:
                accepted = Condition("Accepted", False, "NotAllowedByListeners",
                                     "no listener allows this route")
            elif not hosted:
                accepted = Condition("Accepted", False, "NoMatchingListenerHostname",
                                     "no hostname of the route matches a listener's")
            else:
                accepted = Condition("Accepted", True, "Accepted", "Route was valid")
            self.status.route_parent(route, ParentStatus(ref, accepted, resolved))
            if hosted:
                for backend in self._backends:
                    self.ancestors[backend].add((str(ref["namespace"]), str(ref["name"])))
            for listener, hosts in hosted:
                listener.status.attached_routes += 1
                if listener.status.ok:
                    self._add(route, listener, hosts, rules)

    def _isolated(self, listener: Listener, hosts: list[str]) -> list[str]:
        """Listener isolation: a request goes to the listener of its port with the most
        specific hostname, so hostnames a more specific sibling listener covers are not
        served here (a route on the hostname-less listener naming ``*.example.com`` leaves
        those names to a ``*.example.com`` listener)."""
        gateway = listener.gateway
        siblings = [other.hostname for other in self.listeners[(gateway.namespace, gateway.name)]
                    if other is not listener and other.port == listener.port
                    and other.status.accepted.status and other.hostname
                    and other.hostname != listener.hostname
                    and _within(other.hostname, listener.hostname or "*")]
        return [host for host in hosts
                if not any(_within(host, narrower) for narrower in siblings)]

    def _add(self, route: ConfigObject, listener: Listener, hosts: list[str],
             rules: list[list[Entry]]) -> None:
        hosts = self._isolated(listener, hosts)
        entries = [entry for rule in rules for entry in rule]
        if route.kind in ("HTTPRoute", "GRPCRoute"):
            for host in hosts:
                self.http[(listener.internal, host)] += entries
                self.origins[(listener.internal, host)] = route
        elif route.kind == "TLSRoute":
            terminated = (listener.spec.get("tls") or {}).get("mode", "Terminate") != (
                "Passthrough")
            if terminated:
                self.tcp[listener.internal] += entries
                self.origins[listener.internal] = route
            else:
                for host in hosts:
                    sni = [{"sniHosts": [host]}]
                    self.tls[(listener.internal, host)] += [
                        (key, {**rule, "match": sni}) for key, rule in entries]
                    self.origins[(listener.internal, host)] = route
        else:
            self.tcp[listener.internal] += entries
            self.origins[listener.internal] = route

    def _mesh(self, route: ConfigObject, ref: Mapping[str, Any], rules: list[list[Entry]],
              resolved: Condition) -> None:
        from pilotfish.core.gateway_api import service_host

        namespace, name = str(ref["namespace"]), str(ref["name"])
        if (namespace, name) not in self.inputs.services or route.kind not in (
                "HTTPRoute", "GRPCRoute"):
            accepted = Condition("Accepted", False, "NoMatchingParent",
                                 f"Service {namespace}/{name} not found")
        else:
            accepted = Condition("Accepted", True, "Accepted", "Route was valid")
            host = service_host(self.inputs, namespace, name)
            self.mesh[host] += [entry for rule in rules for entry in rule]
            self.origins[host] = route
        self.status.route_parent(route, ParentStatus(ref, accepted, resolved))

    # -- rules ---------------------------------------------------------------------------

    def _rule(self, route: ConfigObject, index: int, rule: Mapping[str, Any],
              problems: list[tuple[str, str]]) -> list[Entry]:
        action = self._action(route, rule, problems)
        base = (route.creation, route.namespace, route.name, index)
        name = f"{route.namespace}.{route.name}.{rule.get('name') or index}"
        if route.kind in ("TLSRoute", "TCPRoute"):
            return [((0, *base), {"route": action.get("route") or []})]
        matches = list(rule.get("matches") or ()) or [None]
        out = []
        for position, match in enumerate(matches):
            if route.kind == "GRPCRoute":
                converted, key = grpc_match(match)
            else:
                converted, key = http_match(match)
            entry = {"name": name, "match": [converted], **_for_prefix(action, converted)}
            out.append(((*key, *base, position), entry))
        return out

    def _action(self, route: ConfigObject, rule: Mapping[str, Any],
                problems: list[tuple[str, str]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for spec in rule.get("filters") or ():
            _filter(out, spec, route, self.inputs, problems)
        if "redirect" in out:
            return out
        refs = rule.get("backendRefs") or ()
        destinations = [d for ref in refs
                        if (d := self._backend(route, ref, problems)) is not None]
        if route.kind in ("TLSRoute", "TCPRoute") and not destinations:
            # Nowhere valid to send the stream: the listener still takes the connection and
            # closes it (a cluster that does not exist), rather than not listening at all.
            out["route"] = [{"destination": {"host": UNRESOLVED_BACKEND}}]
        elif route.kind in ("TLSRoute", "TCPRoute") or destinations:
            out["route"] = destinations
        else:  # nowhere valid to send it: the spec's 500
            out = {k: v for k, v in out.items() if k in ("headers",)}
            out["directResponse"] = {"status": 500}
        timeouts = rule.get("timeouts") or {}
        if timeouts.get("request") and _seconds(str(timeouts["request"])):
            out["timeout"] = _duration(str(timeouts["request"]))
        if timeouts.get("backendRequest") and _seconds(str(timeouts["backendRequest"])):
            # Without retries the one backend request is the request (as Istio converts it;
            # the API keeps backendRequest within request): Envoy's per-try timeout only
            # applies where a retry policy is.
            out["timeout"] = _duration(str(timeouts["backendRequest"]))
        return out

    def _backend(self, route: ConfigObject, ref: Mapping[str, Any],
                 problems: list[tuple[str, str]]) -> dict[str, Any] | None:
        from pilotfish.core.gateway_api import service_host

        group, kind = str(ref.get("group") or ""), str(ref.get("kind") or "Service")
        namespace = str(ref.get("namespace") or route.namespace)
        name = str(ref.get("name") or "")
        weight = int(ref.get("weight", 1))
        if group != "" or kind != "Service":
            problems.append(("InvalidKind", f"backend kind {kind} is not supported"))
            return None
        if not self.inputs.granted(route.kind, route.namespace, "", "Service", namespace, name):
            problems.append(("RefNotPermitted", f"backend {namespace}/{name}: no "
                             "ReferenceGrant allows it"))
            return None
        if (namespace, name) not in self.inputs.services:
            problems.append(("BackendNotFound", f"backend {namespace}/{name} not found"))
            return None
        self._backends.add((namespace, name))
        if weight <= 0:
            return None
        destination: dict[str, Any] = {"host": service_host(self.inputs, namespace, name)}
        if ref.get("port"):
            destination["port"] = {"number": int(ref["port"])}
        out: dict[str, Any] = {"destination": destination, "weight": weight}
        headers: dict[str, Any] = {}
        for spec in ref.get("filters") or ():
            _filter(headers, spec, route, self.inputs, problems)
        if headers.get("headers"):
            out["headers"] = headers["headers"]
        return out

    # -- output --------------------------------------------------------------------------

    def objects(self) -> list[ConfigObject]:
        from pilotfish.core.gateway_api import derived

        out = []
        for (gateway, host), entries in sorted(self.http.items()):
            out.append(self._vs(gateway, host, {"http": _ordered(entries)}))
        for (gateway, host), entries in sorted(self.tls.items()):
            out.append(self._vs(gateway, host, {"tls": _ordered(entries)}))
        for gateway, entries in sorted(self.tcp.items()):
            out.append(self._vs(gateway, "*", {"tcp": _ordered(entries)[:1]}))
        for host, entries in sorted(self.mesh.items()):
            origin = self.origins[host]
            name = f"{host.split('.')[0]}-mesh-istio-autogenerated-k8s-gateway"
            out.append(derived(origin, "VirtualService", name, host.split(".")[1], {
                "hosts": [host], "gateways": [MESH], "http": _ordered(entries)}))
        return out

    def _vs(self, gateway: str, host: str, rules: Mapping[str, Any]) -> ConfigObject:
        from pilotfish.core.gateway_api import derived

        namespace, _, name = gateway.partition("/")
        origin = self.origins.get((gateway, host)) or self.origins[gateway]
        label = host.replace("*", "wildcard")
        return derived(origin, "VirtualService", f"{name}.{label}", namespace, {
            "hosts": [host], "gateways": [gateway], **rules})


def _ordered(entries: list[Entry]) -> list[dict[str, Any]]:
    return [rule for _, rule in sorted(entries, key=lambda e: e[0])]


def _for_prefix(action: Mapping[str, Any], match: Mapping[str, Any]) -> dict[str, Any]:
    """The action for one match: a ReplacePrefixMatch (rewrite or redirect) replaces that
    match's own prefix, whole segments only, as a regex rewrite (Envoy's plain prefix
    rewrite would turn ``/foo/bar`` with ``/foo`` → ``/`` into ``//bar``)."""
    uri = match.get("uri") or {}
    prefix = str(uri.get("pathSeparatedPrefix") or uri.get("prefix") or "/")
    out = dict(action)
    rewrite = dict(out.get("rewrite") or {})
    if "prefixReplacement" in rewrite:
        rewrite["uriRegexRewrite"] = _prefix_regex(prefix, rewrite.pop("prefixReplacement"))
        out["rewrite"] = rewrite
    redirect = dict(out.get("redirect") or {})
    if "prefixRewrite" in redirect:
        redirect["uriRegexRewrite"] = _prefix_regex(prefix, redirect.pop("prefixRewrite"))
        out["redirect"] = redirect
    return out


def _prefix_regex(prefix: str, replacement: str) -> dict[str, str]:
    keep = replacement.rstrip("/")
    base = "" if prefix == "/" else re.escape(prefix.rstrip("/"))
    if not keep:  # to "/": /foo/bar → /bar, /foo → /
        return {"match": f"^{base}/*(.*)$", "rewrite": "/\\1"}
    if not base:  # from "/": /bar → /keep/bar
        return {"match": "^/(.*)$", "rewrite": f"{keep}/\\1"}
    return {"match": f"^{base}(/.*)?$", "rewrite": f"{keep}\\1"}


def http_match(match: Mapping[str, Any] | None) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """An HTTPRouteMatch → (VirtualService match, precedence key)."""
    match = match or {}
    path = match.get("path") or {"type": "PathPrefix", "value": "/"}
    kind, value = str(path.get("type") or "PathPrefix"), str(path.get("value") or "/")
    out: dict[str, Any] = {}
    if kind == "Exact":
        out["uri"] = {"exact": value}
    elif kind == "RegularExpression":
        out["uri"] = {"regex": value}
    else:
        trimmed = value.rstrip("/") or "/"
        out["uri"] = {"prefix": "/"} if trimmed == "/" else {"pathSeparatedPrefix": trimmed}
        value = trimmed
    headers = {str(h["name"]).lower(): _string_match(h) for h in match.get("headers") or ()}
    if headers:
        out["headers"] = headers
    params = {str(q["name"]): _string_match(q) for q in match.get("queryParams") or ()}
    if params:
        out["queryParams"] = params
    if match.get("method"):
        out["method"] = {"exact": str(match["method"])}
    key = (_PATH_RANK.get(kind, 1), -len(value), 0 if match.get("method") else 1,
           -len(headers), -len(params))
    return out, key


def grpc_match(match: Mapping[str, Any] | None) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """A GRPCRouteMatch → (VirtualService match, precedence key): the method becomes the
    path ``/service/method``."""
    match = match or {}
    method = match.get("method") or {}
    service, name = str(method.get("service") or ""), str(method.get("method") or "")
    out: dict[str, Any] = {}
    if str(method.get("type") or "Exact") == "RegularExpression":
        out["uri"] = {"regex": f"/{service or '[^/]+'}/{name or '[^/]+'}"}
    elif service and name:
        out["uri"] = {"exact": f"/{service}/{name}"}
    elif service:
        out["uri"] = {"prefix": f"/{service}/"}
    elif name:
        out["uri"] = {"regex": f"/[^/]+/{re.escape(name)}"}
    headers = {str(h["name"]).lower(): _string_match(h) for h in match.get("headers") or ()}
    if headers:
        out["headers"] = headers
    key = (0 if service and name else 1, -len(service), -len(name), -len(headers), 0)
    return out, key


def _string_match(spec: Mapping[str, Any]) -> dict[str, str]:
    value = str(spec.get("value") or "")
    if str(spec.get("type") or "Exact") == "RegularExpression":
        return {"regex": value}
    return {"exact": value}


def _seconds(value: str) -> float:
    """A Gateway API duration (``1h2m3s4ms``) in seconds; 0 means no timeout."""
    seconds = 0.0
    for amount, unit in re.findall(r"([0-9]+)(h|ms|m|s)", value):
        seconds += int(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return seconds


def _duration(value: str) -> str:
    """A Gateway API duration as Istio writes one (``1h2m3s4ms`` → ``3723.004s``)."""
    return f"{_seconds(value):g}s"


def _headers(spec: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in ("set", "add"):
        if spec.get(field):
            out[field] = {str(h["name"]): str(h.get("value") or "") for h in spec[field]}
    if spec.get("remove"):
        out["remove"] = [str(h) for h in spec["remove"]]
    return out


def _filter(out: dict[str, Any], spec: Mapping[str, Any], route: ConfigObject,
            inputs: _Inputs, problems: list[tuple[str, str]]) -> None:
    kind = str(spec.get("type") or "")
    if kind == "RequestHeaderModifier":
        out.setdefault("headers", {})["request"] = _headers(
            spec.get("requestHeaderModifier") or {})
    elif kind == "ResponseHeaderModifier":
        out.setdefault("headers", {})["response"] = _headers(
            spec.get("responseHeaderModifier") or {})
    elif kind == "RequestRedirect":
        out["redirect"] = _redirect(spec.get("requestRedirect") or {})
    elif kind == "URLRewrite":
        out["rewrite"] = _rewrite(spec.get("urlRewrite") or {}, route)
    elif kind == "RequestMirror":
        mirror = _mirror(spec.get("requestMirror") or {}, route, inputs, problems)
        if mirror is not None:
            out.setdefault("mirrors", []).append(mirror)
    elif kind == "CORS":
        out["corsPolicy"] = _cors(spec.get("cors") or {})
    else:
        problems.append(("UnsupportedValue", f"filter {kind} is not supported"))


def _redirect(spec: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"redirectCode": int(spec.get("statusCode") or 302)}
    if spec.get("scheme"):
        out["scheme"] = str(spec["scheme"])
    if spec.get("hostname"):
        out["authority"] = str(spec["hostname"])
    if spec.get("port"):
        out["port"] = int(spec["port"])
    elif not spec.get("scheme"):
        out["derivePort"] = "FROM_REQUEST_PORT"
    path = spec.get("path") or {}
    if path.get("type") == "ReplaceFullPath":
        out["uri"] = str(path.get("replaceFullPath") or "/")
    elif path.get("type") == "ReplacePrefixMatch":
        out["prefixRewrite"] = str(path.get("replacePrefixMatch") or "/")
    return out


def _rewrite(spec: Mapping[str, Any], route: ConfigObject) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if spec.get("hostname"):
        out["authority"] = str(spec["hostname"])
    path = spec.get("path") or {}
    if path.get("type") == "ReplaceFullPath":
        out["uriRegexRewrite"] = {"match": "^/.*$", "rewrite": str(path.get("replaceFullPath"))}
    elif path.get("type") == "ReplacePrefixMatch":
        out["prefixReplacement"] = str(path.get("replacePrefixMatch") or "/")
    return out


def _mirror(spec: Mapping[str, Any], route: ConfigObject, inputs: _Inputs,
            problems: list[tuple[str, str]]) -> dict[str, Any] | None:
    from pilotfish.core.gateway_api import service_host

    ref = spec.get("backendRef") or {}
    namespace = str(ref.get("namespace") or route.namespace)
    name = str(ref.get("name") or "")
    if not inputs.granted(route.kind, route.namespace, "", "Service", namespace, name):
        problems.append(("RefNotPermitted", f"mirror {namespace}/{name}: no ReferenceGrant"))
        return None
    if (namespace, name) not in inputs.services:
        problems.append(("BackendNotFound", f"mirror {namespace}/{name} not found"))
        return None
    destination: dict[str, Any] = {"host": service_host(inputs, namespace, name)}
    if ref.get("port"):
        destination["port"] = {"number": int(ref["port"])}
    out: dict[str, Any] = {"destination": destination}
    if spec.get("percent") is not None:
        out["percentage"] = {"value": float(spec["percent"])}
    elif spec.get("fraction"):
        fraction = spec["fraction"]
        out["percentage"] = {"value": 100.0 * float(fraction.get("numerator") or 0) / float(
            fraction.get("denominator") or 100)}
    return out


def _cors(spec: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    origins = [str(o) for o in spec.get("allowOrigins") or ()]
    if origins:
        out["allowOrigins"] = [{"exact": o} if "*" not in o or o == "*" else
                               {"regex": re.escape(o).replace(r"\*", ".*")} for o in origins]
    for field in ("allowMethods", "allowHeaders", "exposeHeaders"):
        if spec.get(field):
            out[field] = [str(v) for v in spec[field]]
    if spec.get("allowCredentials") is not None:
        out["allowCredentials"] = bool(spec["allowCredentials"])
    if spec.get("maxAge") is not None:
        out["maxAge"] = f"{int(spec['maxAge'])}s"
    # A preflight from an origin the policy does not allow is answered here, not passed on
    # to the backend (as Istio converts it).
    out["unmatchedPreflights"] = "IGNORE"
    return out
