"""Per-route filter config: VirtualService ``fault`` and ``corsPolicy``.

The listener's HTTP connection manager always carries the fault and CORS filters, inert
until a route switches them on through ``typed_per_filter_config`` under the filter's name.
Those names are a contract with the LDS translator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, wrappers_pb2

from pilotfish.core.meshconfig import parse_duration
from pilotfish.translators.common import istio_duration, pack
from pilotfish.translators.route_match import string_matcher

FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"

# gRPC status names as VirtualServices write them (fault.abort.grpcStatus).
GRPC_STATUS = {
    name: code for code, name in enumerate((
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
        "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
        "UNAUTHENTICATED",
    ))
}


def percent(value: Any) -> percent_pb2.FractionalPercent:
    """An Istio ``Percent`` (0-100, fractional) in millionths, Envoy's finest denominator."""
    return percent_pb2.FractionalPercent(
        numerator=round(float(value) * 10000), denominator=percent_pb2.FractionalPercent.MILLION
    )


def int_percent(value: Any) -> percent_pb2.FractionalPercent:
    """The deprecated integer percent fields (``percent``, ``mirrorPercent``)."""
    return percent_pb2.FractionalPercent(
        numerator=int(value), denominator=percent_pb2.FractionalPercent.HUNDRED
    )


def _percentage(spec: Mapping[str, Any]) -> percent_pb2.FractionalPercent | None:
    if isinstance(spec.get("percentage"), Mapping):
        return percent(spec["percentage"].get("value") or 0)
    if spec.get("percent") is not None:
        return int_percent(spec["percent"])
    return None


def _grpc_status(value: Any) -> int | None:
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    return GRPC_STATUS.get(str(value).upper())


def fault(spec: Mapping[str, Any]) -> fault_pb2.HTTPFault | None:
    """``HTTPFaultInjection`` → ``HTTPFault``; ``None`` when nothing Envoy can inject is left.

    Only fixed delays and HTTP/gRPC aborts exist in Envoy's fault filter: an exponential
    delay or an HTTP/2 error abort is dropped (Istio does the same).
    """
    out = fault_pb2.HTTPFault()
    delay = spec.get("delay")
    if isinstance(delay, Mapping) and delay.get("fixedDelay"):
        fixed = common_fault_pb2.FaultDelay(fixed_delay=istio_duration(delay["fixedDelay"]))
        # Without a percentage, a delay applies to no request (Istio's reading of the API).
        fixed.percentage.CopyFrom(_percentage(delay) or int_percent(0))
        out.delay.CopyFrom(fixed)
    abort = spec.get("abort")
    if isinstance(abort, Mapping):
        aborting = fault_pb2.FaultAbort()
        grpc = _grpc_status(abort["grpcStatus"]) if abort.get("grpcStatus") else None
        if abort.get("httpStatus"):
            aborting.http_status = int(abort["httpStatus"])
        elif grpc is not None:
            aborting.grpc_status = grpc
        share = _percentage(abort)
        if share is not None:
            aborting.percentage.CopyFrom(share)
        if aborting.WhichOneof("error_type"):
            out.abort.CopyFrom(aborting)
    if not out.HasField("delay") and not out.HasField("abort"):
        return None
    return out


def cors(spec: Mapping[str, Any]) -> cors_pb2.CorsPolicy:
    """``CorsPolicy`` → Envoy's per-route ``CorsPolicy`` (the filter itself is inert)."""
    out = cors_pb2.CorsPolicy(
        allow_methods=",".join(str(m) for m in spec.get("allowMethods") or ()),
        allow_headers=",".join(str(h) for h in spec.get("allowHeaders") or ()),
        expose_headers=",".join(str(h) for h in spec.get("exposeHeaders") or ()),
        filter_enabled=base_pb2.RuntimeFractionalPercent(
            default_value=percent_pb2.FractionalPercent(
                numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED
            )
        ),
        # Preflights from origins the policy does not allow reach the app unless the user
        # asked to IGNORE them (Envoy's pre-1.30 default, which Istio keeps).
        forward_not_matching_preflights=wrappers_pb2.BoolValue(
            value=str(spec.get("unmatchedPreflights") or "").upper() != "IGNORE"
        ),
    )
    origins = spec.get("allowOrigins")
    if origins:
        out.allow_origin_string_match.extend(string_matcher(o) for o in origins)
    elif spec.get("allowOrigin"):  # deprecated: plain strings, matched exactly
        out.allow_origin_string_match.extend(
            string_matcher({"exact": o}) for o in spec["allowOrigin"]
        )
    if spec.get("allowCredentials") is not None:
        out.allow_credentials.CopyFrom(wrappers_pb2.BoolValue(value=bool(spec["allowCredentials"])))
    if spec.get("maxAge"):
        out.max_age = str(int(parse_duration(spec["maxAge"], "corsPolicy.maxAge")))
    return out


def per_filter_config(http: Mapping[str, Any]) -> dict[str, any_pb2.Any]:
    """The ``typed_per_filter_config`` entries an HTTP route asks for."""
    out: dict[str, any_pb2.Any] = {}
    if isinstance(http.get("fault"), Mapping):
        injected = fault(http["fault"])
        if injected is not None:
            out[FAULT_FILTER] = pack(injected)
    if isinstance(http.get("corsPolicy"), Mapping):
        out[CORS_FILTER] = pack(cors(http["corsPolicy"]))
    return out

