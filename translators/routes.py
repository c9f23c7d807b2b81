"""VirtualService ``http[]`` → Envoy routes, and the default route of a service.

One Envoy route per match entry (one for a rule without matches), in the order written;
generation stops after a route that matches every request, since Envoy would never reach
the ones after it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from google.protobuf import duration_pb2

from pilotfish.core.push_context import VirtualService
from pilotfish.translators import route_match
from pilotfish.translators.common import OUTBOUND, cluster_name, parse_cluster_name, struct
from pilotfish.translators.delegates import HttpRule, http_rules
from pilotfish.translators.destinations import RouteContext
from pilotfish.translators.retry import retry_policy
from pilotfish.translators.route_action import apply_header_ops, forward, header_ops, set_timeout
from pilotfish.translators.route_filters import per_filter_config

DEFAULT_ROUTE_NAME = "default"
_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def vs_routes(ctx: RouteContext, vs: VirtualService, memo: dict[Any, Any]) -> list[rc.Route]:
    """The routes a VirtualService contributes on ``ctx``'s port, gateway and proxy."""
    out: list[rc.Route] = []
    for rule in http_rules(ctx.push, vs, memo):
        matches = rule.spec.get("match") or [None]
        for match in matches:
            built = translate(ctx, vs, rule, match)
            if built is None:
                continue
            out.append(built)
            if route_match.is_catch_all(built):
                return out
        if not rule.spec.get("match"):
            return out  # a rule without matches takes every request
    return out


def translate(
    ctx: RouteContext, vs: VirtualService, rule: HttpRule, match: Mapping[str, Any] | None
) -> rc.Route | None:
    """One Envoy route, or None when the match entry does not apply here."""
    if not route_match.applies(
        match, port=ctx.port, gateways=ctx.gateways, proxy=ctx.proxy, namespace=rule.namespace
    ) or not route_match.is_supported(match):
        return None
    http = rule.spec
    name = str(http.get("name") or "")
    if match is not None and match.get("name"):
        name = f"{name}.{match['name']}"
    out = rc.Route(name=name, match=route_match.route_match(match))
    out.metadata.filter_metadata["istio"].CopyFrom(struct({"config": vs.config_path}))
    if match is not None and match.get("statPrefix"):
        out.stat_prefix = str(match["statPrefix"])
    ops = header_ops(http.get("headers"))
    apply_header_ops(out, ops)

    if isinstance(http.get("redirect"), Mapping):
        if not _redirect(out, http["redirect"], ctx):
            return None
    elif isinstance(http.get("directResponse"), Mapping):
        _direct_response(out, http["directResponse"])
    elif http.get("route"):
        forward(ctx, out, http, rule.namespace, ops.authority)
    else:
        return None  # nowhere to send it: Envoy rejects a route without an action

    out.decorator.operation = _operation(out, vs.name, ctx.port)
    for filter_name, config in per_filter_config(http).items():
        out.typed_per_filter_config[filter_name].CopyFrom(config)
    return out


def _redirect(out: rc.Route, spec: Mapping[str, Any], ctx: RouteContext) -> bool:
    code = int(spec.get("redirectCode") or 301)
    if code not in _REDIRECT_CODES:
        return False  # Envoy cannot send it; Istio's validation rejects such a rule
    redirect = out.redirect
    redirect.response_code = _REDIRECT_CODES[code]
    if spec.get("uri"):
        redirect.path_redirect = str(spec["uri"])
    elif spec.get("prefixRewrite"):
        redirect.prefix_rewrite = str(spec["prefixRewrite"])
    elif isinstance(spec.get("uriRegexRewrite"), Mapping):  # Gateway API ReplacePrefixMatch
        regex = spec["uriRegexRewrite"]
        redirect.regex_rewrite.pattern.regex = str(regex.get("match") or "")
        redirect.regex_rewrite.substitution = str(regex.get("rewrite") or "")
    if spec.get("authority"):
        redirect.host_redirect = str(spec["authority"])
    if spec.get("scheme"):
        redirect.scheme_redirect = str(spec["scheme"])
    port = 0
    if spec.get("port"):
        port = int(spec["port"])
    elif str(spec.get("derivePort") or "") == "FROM_REQUEST_PORT":
        # Envoy cannot copy the request's port, but every route table here belongs to one
        # port, so that port is the request's port.
        port = ctx.port
    if port:
        scheme = str(spec.get("scheme") or ("https" if ctx.tls else "http")).lower()
        # No explicit :80 on http or :443 on https: browsers show the URL as written.
        if _DEFAULT_PORTS.get(scheme) != port:
            redirect.port_redirect = port
    return True


def _direct_response(out: rc.Route, spec: Mapping[str, Any]) -> None:
    response = out.direct_response
    response.status = int(spec.get("status") or 200)
    body = spec.get("body") or {}
    if body.get("string") is not None:
        response.body.CopyFrom(base_pb2.DataSource(inline_string=str(body["string"])))
    elif body.get("bytes") is not None:
        # The CRD carries bytes base64-encoded, as protobuf JSON does.
        response.body.CopyFrom(
            base_pb2.DataSource(inline_bytes=base64.b64decode(str(body["bytes"])))
        )


def _operation(route: rc.Route, vs_name: str, port: int) -> str:
    """The tracing span name: ``host:port/path*`` for one destination, else the VS name."""
    match = route.match
    which = match.WhichOneof("path_specifier")
    path = {
        "prefix": match.prefix + "*",
        "path": match.path,
        "safe_regex": match.safe_regex.regex,
    }.get(which or "", "/*")
    parsed = parse_cluster_name(route.route.cluster) if route.HasField("route") else None
    if parsed is not None:
        _, cluster_port, _, host = parsed
        return f"{host}:{cluster_port}{path}"
    return f"{vs_name}:{port}{path}"


def default_route(
    ctx: RouteContext, hostname: str, port: int, hash_policy: rc.RouteAction.HashPolicy | None
) -> rc.Route:
    """The route of a service no VirtualService takes over: everything to its cluster."""
    action = rc.RouteAction(cluster=cluster_name(OUTBOUND, port, "", hostname))
    set_timeout(action, duration_pb2.Duration())
    if hash_policy is not None:
        action.hash_policy.append(hash_policy)
    policy = retry_policy(
        ctx.push.mesh.default_http_retry_policy, consistent_hash=hash_policy is not None
    )
    if policy is not None:
        action.retry_policy.CopyFrom(policy)
    return rc.Route(
        name=DEFAULT_ROUTE_NAME,
        match=rc.RouteMatch(prefix="/"),
        route=action,
        decorator=rc.Decorator(operation=f"{hostname}:{port}/*"),
    )
