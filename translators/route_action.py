"""The forwarding half of an HTTP route: destinations and weights, header edits, rewrites,
mirrors, timeout and retries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import regex_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from pilotfish.translators.common import istio_duration
from pilotfish.translators.destinations import (
    RouteContext,
    resolve_target,
    target_hash_policy,
)
from pilotfish.translators.retry import retry_policy
from pilotfish.translators.route_filters import int_percent, percent

_AUTHORITY_HEADERS = frozenset({":authority", "host"})


@attrs.define
class HeaderOps:
    """``headers`` of a route or destination, in Envoy's terms."""

    request_add: list[base_pb2.HeaderValueOption] = attrs.Factory(list)
    request_remove: list[str] = attrs.Factory(list)
    response_add: list[base_pb2.HeaderValueOption] = attrs.Factory(list)
    response_remove: list[str] = attrs.Factory(list)
    authority: str = ""  # setting :authority / host is a host rewrite, not a header edit


def _internal(name: str) -> bool:
    # Envoy refuses to edit pseudo-headers and Host through header lists.
    return name.startswith(":") or name.lower() == "host"


def _additions(values: Mapping[str, Any] | None, append: bool) -> list[base_pb2.HeaderValueOption]:
    action = (
        base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD if append
        else base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    )
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=str(key), value=str(value)), append_action=action
        )
        for key, value in sorted((values or {}).items())
        if not _internal(str(key))
    ]


def _authority(values: Mapping[str, Any] | None) -> str:
    for key, value in (values or {}).items():
        if str(key).lower() in _AUTHORITY_HEADERS:
            return str(value)
    return ""


def header_ops(spec: Mapping[str, Any] | None) -> HeaderOps:
    """Istio ``Headers{request, response}{set, add, remove}``: set overwrites, add appends."""
    request = (spec or {}).get("request") or {}
    response = (spec or {}).get("response") or {}
    return HeaderOps(
        request_add=_additions(request.get("set"), False) + _additions(request.get("add"), True),
        request_remove=[str(h) for h in request.get("remove") or () if not _internal(str(h))],
        response_add=(
            _additions(response.get("set"), False) + _additions(response.get("add"), True)
        ),
        response_remove=[str(h) for h in response.get("remove") or () if not _internal(str(h))],
        # A value under "set" wins over one under "add".
        authority=_authority(request.get("set")) or _authority(request.get("add")),
    )


def apply_header_ops(out: rc.Route | rc.WeightedCluster.ClusterWeight, ops: HeaderOps) -> None:
    out.request_headers_to_add.extend(ops.request_add)
    out.request_headers_to_remove.extend(ops.request_remove)
    out.response_headers_to_add.extend(ops.response_add)
    out.response_headers_to_remove.extend(ops.response_remove)


def _mirror_fraction(spec: Mapping[str, Any], key: str, legacy: str | None) -> (
    base_pb2.RuntimeFractionalPercent | None
):
    """The share of requests to mirror: 100% unless given; an explicit 0 means none."""
    if isinstance(spec.get(key), Mapping):
        value = float(spec[key].get("value") or 0)
        share = percent(value) if value > 0 else None
    elif legacy and spec.get(legacy) is not None:
        raw = spec[legacy]
        value = float(raw.get("value") or 0) if isinstance(raw, Mapping) else float(raw)
        share = int_percent(int(value)) if value > 0 else None
    else:
        share = int_percent(100)
    return base_pb2.RuntimeFractionalPercent(default_value=share) if share else None


def mirror_policies(
    ctx: RouteContext, http: Mapping[str, Any], namespace: str
) -> list[rc.RouteAction.RequestMirrorPolicy]:
    pairs: list[tuple[Mapping[str, Any], base_pb2.RuntimeFractionalPercent | None]] = []
    if isinstance(http.get("mirror"), Mapping):
        pairs.append((http["mirror"], _mirror_fraction(http, "mirrorPercentage", "mirrorPercent")))
    for mirror in http.get("mirrors") or ():
        if isinstance(mirror.get("destination"), Mapping):
            pairs.append((mirror["destination"], _mirror_fraction(mirror, "percentage", None)))
    return [
        rc.RouteAction.RequestMirrorPolicy(
            cluster=resolve_target(ctx, destination, namespace).cluster,
            runtime_fraction=fraction,
            # Mirrored requests must not create traces of their own.
            trace_sampled=wrappers_pb2.BoolValue(value=False),
        )
        for destination, fraction in pairs
        if fraction is not None
    ]


def _set_clusters(
    ctx: RouteContext,
    out: rc.Route,
    action: rc.RouteAction,
    destinations: Sequence[Mapping[str, Any]],
    namespace: str,
) -> bool:
    """Point the action at its cluster(s); return whether a consistent hash applies."""
    if len(destinations) == 1:
        only = destinations[0]
        target = resolve_target(ctx, only.get("destination") or {}, namespace)
        action.cluster = target.cluster
        ops = header_ops(only.get("headers"))
        apply_header_ops(out, ops)
        if ops.authority and not action.host_rewrite_literal:
            action.host_rewrite_literal = ops.authority
        policy = target_hash_policy(ctx, target)
        if policy is not None:
            action.hash_policy.append(policy)
        return policy is not None
    # Weight 0 entries are dropped; if no weights were written at all, split evenly rather
    # than sending nothing (Envoy rejects a total weight of 0).
    weighted = [d for d in destinations if int(d.get("weight") or 0) > 0] or [
        {**d, "weight": 1} for d in destinations
    ]
    for dest in weighted:
        target = resolve_target(ctx, dest.get("destination") or {}, namespace)
        weight = action.weighted_clusters.clusters.add(
            name=target.cluster, weight=wrappers_pb2.UInt32Value(value=int(dest["weight"]))
        )
        ops = header_ops(dest.get("headers"))
        apply_header_ops(weight, ops)
        if ops.authority:
            weight.host_rewrite_literal = ops.authority
        policy = target_hash_policy(ctx, target)
        if policy is not None and policy not in action.hash_policy:
            action.hash_policy.append(policy)
    # Like Istio, a split keeps the default retry host predicate even with hashing.
    return False


def set_timeout(action: rc.RouteAction, timeout: duration_pb2.Duration) -> None:
    """The route timeout; gRPC clients' grpc-timeout is honoured up to it (0s: unbounded).

    Envoy marks ``max_grpc_timeout`` deprecated (and logs so), but its replacement,
    ``max_stream_duration.grpc_timeout_header_max``, makes Envoy 1.40 ignore the route
    ``timeout`` for plain HTTP requests; Istio keeps the deprecated field for that reason.
    """
    action.timeout.CopyFrom(timeout)
    action.max_grpc_timeout.CopyFrom(timeout)


def forward(
    ctx: RouteContext, out: rc.Route, http: Mapping[str, Any], namespace: str, authority: str
) -> None:
    """Fill ``out.route`` for an HTTP route that forwards (no redirect / direct response)."""
    action = out.route
    timeout = (
        istio_duration(http["timeout"]) if http.get("timeout") else duration_pb2.Duration()
    )
    set_timeout(action, timeout)

    rewrite = http.get("rewrite") or {}
    regex_rewrite = rewrite.get("uriRegexRewrite")
    if isinstance(regex_rewrite, Mapping):
        action.regex_rewrite.CopyFrom(regex_pb2.RegexMatchAndSubstitute(
            pattern=regex_pb2.RegexMatcher(regex=str(regex_rewrite.get("match") or "")),
            substitution=str(regex_rewrite.get("rewrite") or ""),
        ))
    elif rewrite.get("uri"):
        action.prefix_rewrite = str(rewrite["uri"])
    authority = str(rewrite.get("authority") or "") or authority
    if authority:
        action.host_rewrite_literal = authority

    action.request_mirror_policies.extend(mirror_policies(ctx, http, namespace))
    hashed = _set_clusters(ctx, out, action, list(http.get("route") or ()), namespace)
    retries = http.get("retries")
    policy = retry_policy(
        retries if isinstance(retries, Mapping) else ctx.push.mesh.default_http_retry_policy,
        consistent_hash=hashed,
    )
    if policy is not None:
        action.retry_policy.CopyFrom(policy)
