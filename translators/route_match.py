"""VirtualService ``HTTPMatchRequest`` → Envoy ``RouteMatch``, and where a match applies.

A match entry mixes two kinds of condition. Request conditions (uri, headers, method, ...)
become Envoy matchers. Placement conditions (``port``, ``sourceLabels``,
``sourceNamespace``, ``gateways``) describe *which proxies and listeners* should carry the
route at all; Istio decides those in the control plane, so do we: the route is simply not
generated where they do not hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import wrappers_pb2

from pilotfish.core.proxy import Proxy

MESH_GATEWAY = "mesh"
# JWT-claim routing (``@request.auth.claims.*``) needs the jwt_authn filter's metadata,
# which pilotfish does not generate; such match entries are left out (see is_supported).
CLAIM_PREFIX = "@request.auth.claims"

_PSEUDO_HEADERS = {"method": ":method", "authority": ":authority", "scheme": ":scheme"}


def qualify_gateway(ref: str, namespace: str) -> str:
    """A ``gateways`` entry written in a VirtualService → ``ns/name`` (``mesh`` stays)."""
    if ref == MESH_GATEWAY or "/" in ref:
        return ref
    if "." in ref:  # legacy FQDN form: name.namespace.svc.cluster.local
        name, _, rest = ref.partition(".")
        return f"{rest.split('.')[0]}/{name}"
    return f"{namespace}/{ref}"


def is_presence(spec: Mapping[str, Any] | None) -> bool:
    """A StringMatch that only asks for the value to exist.

    Istio reads an empty match and the regex ``*`` (a glob, not RE2) as "present". An empty
    prefix or regex means the same thing, and Envoy rejects both as matchers, so they are
    read as "present" too.
    """
    if not spec:
        return True
    if "regex" in spec:
        return spec["regex"] in ("*", "", None)
    if "prefix" in spec:
        return not spec["prefix"]
    return "exact" not in spec


def string_matcher(spec: Mapping[str, Any]) -> string_pb2.StringMatcher:
    """An Istio StringMatch (exact / prefix / regex) as an Envoy StringMatcher."""
    if "exact" in spec:
        return string_pb2.StringMatcher(exact=str(spec["exact"]))
    if "prefix" in spec:
        return string_pb2.StringMatcher(prefix=str(spec["prefix"]))
    return string_pb2.StringMatcher(
        safe_regex=regex_pb2.RegexMatcher(regex=str(spec.get("regex") or ""))
    )


def header_matcher(
    name: str, spec: Mapping[str, Any] | None, *, invert: bool = False
) -> rc.HeaderMatcher:
    if is_presence(spec):
        # "Without header X" is "X absent": present_match false, not an inverted present.
        return rc.HeaderMatcher(name=name, present_match=not invert)
    assert spec is not None
    out = rc.HeaderMatcher(name=name, string_match=string_matcher(spec), invert_match=invert)
    if invert:
        # A request without the header must pass a withoutHeaders condition.
        out.treat_missing_header_as_empty = True
    return out


def query_matcher(name: str, spec: Mapping[str, Any] | None) -> rc.QueryParameterMatcher:
    if is_presence(spec):
        return rc.QueryParameterMatcher(name=name, present_match=True)
    assert spec is not None
    return rc.QueryParameterMatcher(name=name, string_match=string_matcher(spec))


def route_match(match: Mapping[str, Any] | None) -> rc.RouteMatch:
    """The Envoy matcher for one match entry (``None``: the route has no match list)."""
    out = rc.RouteMatch(prefix="/")
    if match is None:
        return out
    headers = [header_matcher(n, s) for n, s in (match.get("headers") or {}).items()]
    headers += [
        header_matcher(n, s, invert=True) for n, s in (match.get("withoutHeaders") or {}).items()
    ]
    # Istio orders user headers by name (map order is not stable), pseudo-headers after.
    headers.sort(key=lambda h: h.name)
    for field, pseudo in _PSEUDO_HEADERS.items():
        if match.get(field) is not None:
            headers.append(header_matcher(pseudo, match[field]))
    out.headers.extend(headers)

    uri = match.get("uri")
    if uri:
        if "exact" in uri:
            out.path = str(uri["exact"])
        elif "prefix" in uri:
            out.prefix = str(uri["prefix"])
        elif "pathSeparatedPrefix" in uri:  # Gateway API PathPrefix (core/gateway_api)
            out.path_separated_prefix = str(uri["pathSeparatedPrefix"])
        elif "regex" in uri:
            out.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=str(uri["regex"])))
    out.case_sensitive.CopyFrom(wrappers_pb2.BoolValue(value=not match.get("ignoreUriCase")))

    for name, spec in sorted((match.get("queryParams") or {}).items()):
        out.query_parameters.append(query_matcher(name, spec))
    return out


def is_supported(match: Mapping[str, Any] | None) -> bool:
    """False for match entries pilotfish cannot express (JWT-claim routing)."""
    if match is None:
        return True
    names = [*(match.get("headers") or {}), *(match.get("withoutHeaders") or {})]
    return not any(str(n).startswith(CLAIM_PREFIX) for n in names)


def applies(
    match: Mapping[str, Any] | None,
    *,
    port: int,
    gateways: frozenset[str],
    proxy: Proxy,
    namespace: str,
) -> bool:
    """Should a route for this match entry exist on this proxy, for this port and gateway?

    ``namespace`` is the VirtualService's, against which short gateway names resolve.
    Like Istio, an entry that names gateways is decided by them alone; otherwise the
    source labels and namespace must describe the proxy.
    """
    if match is None:
        return True
    wanted_port = int(match.get("port") or 0)
    if wanted_port and wanted_port != port:
        return False
    named = match.get("gateways") or []
    if named:
        return any(qualify_gateway(str(g), namespace) in gateways for g in named)
    labels = match.get("sourceLabels") or {}
    if any(proxy.labels.get(str(k)) != str(v) for k, v in labels.items()):
        return False
    source_ns = match.get("sourceNamespace")
    return not source_ns or source_ns == proxy.namespace


def is_catch_all(route: rc.Route) -> bool:
    """Matches every request: nothing after it in the same virtual host can be reached."""
    match = route.match
    which = match.WhichOneof("path_specifier")
    if which == "prefix":
        every_path = match.prefix == "/"
    elif which == "safe_regex":
        every_path = match.safe_regex.regex == ".*"
    else:
        every_path = False
    return every_path and not match.headers and not match.query_parameters and (
        not match.dynamic_metadata
    )
