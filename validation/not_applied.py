"""What pilotfish accepts but does not apply, field by field: one table, three uses.

Validation warns for each such field an object sets (``pilotfish validate``, and discovery's
``/debug/config_errors``); ``scripts/gen_not_applied.py`` writes the same table into
docs/envoy.md ("Not applied"), and a test keeps the two equal. A feature that lands leaves
the table, and the docs follow.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from pilotfish.core.objects import NETWORKING, SECURITY, ConfigObject, FieldPath
from pilotfish.validation.issues import Issue, warning

TELEMETRY = "telemetry.istio.io"
GATEWAY_API = "gateway.networking.k8s.io"
ANY = "*"  # any list index or map key


@attrs.frozen
class Field:
    group: str
    kind: str
    path: tuple[str, ...]  # ``*`` for any list item or map key
    note: str

    @property
    def shown(self) -> str:
        return ".".join("[*]" if part == ANY else part for part in self.path).replace(
            ".[*]", "[*]")


_DR_POLICIES = (("spec", "trafficPolicy"), ("spec", "trafficPolicy", "portLevelSettings", ANY),
                ("spec", "subsets", ANY, "trafficPolicy"))

FIELDS: tuple[Field, ...] = (
    *(Field(NETWORKING, "DestinationRule", (*base, "loadBalancer", "zoneAwareLbSetting"),
            "Envoy's zone-aware routing is not generated") for base in _DR_POLICIES),
    *(Field(NETWORKING, "DestinationRule", (*base, "loadBalancer", "backendUtilization"),
            "client-side weighted round robin by backend utilization is not generated")
      for base in _DR_POLICIES),
    *(Field(NETWORKING, "DestinationRule", (*base, "connectionPool", "http",
                                            "http2KeepAlive"),
            "HTTP/2 keepalive pings to upstreams are not configured") for base in _DR_POLICIES),
    Field(NETWORKING, "Sidecar", ("spec", "egress", ANY, "port"),
          "egress listeners of their own per port are not generated; the hosts still scope "
          "what the sidecar sees"),
    Field(NETWORKING, "Sidecar", ("spec", "egress", ANY, "bind"),
          "egress listeners are not bound apart"),
    Field(NETWORKING, "Sidecar", ("spec", "egress", ANY, "captureMode"),
          "egress listeners are not bound apart"),
    Field(NETWORKING, "Sidecar", ("spec", "outboundTrafficPolicy", "egressProxy"),
          "unknown destinations go to PassthroughCluster, not to an egress proxy"),
    Field(TELEMETRY, "Telemetry", ("spec", "tracing"), "pilotfish generates no tracing"),
    Field(TELEMETRY, "Telemetry", ("spec", "targetRefs"),
          "Telemetry aimed at a Gateway or Service by reference is not applied yet"),
    Field(TELEMETRY, "Telemetry", ("spec", "metrics", ANY, "overrides", ANY, "match",
                                   "customMetric"),
          "only Istio's standard metrics are made"),
    Field(TELEMETRY, "Telemetry", ("spec", "metrics", ANY, "reportingInterval"),
          "the agent renders metrics when scraped"),
    Field(SECURITY, "AuthorizationPolicy", ("spec", "targetRefs"),
          "applied by waypoints only (a waypoint Gateway, a Service bound to one, the "
          "istio-waypoint GatewayClass); aimed at another gateway it is not applied yet"),
    Field(SECURITY, "RequestAuthentication", ("spec", "targetRefs"),
          "policies aimed at gateways or waypoints by reference are not applied yet"),
    Field(GATEWAY_API, "HTTPRoute", ("spec", "rules", ANY, "sessionPersistence"),
          "session persistence is not converted"),
    Field(GATEWAY_API, "HTTPRoute", ("spec", "rules", ANY, "retry"),
          "route retries are not converted"),
    Field(GATEWAY_API, "GRPCRoute", ("spec", "rules", ANY, "sessionPersistence"),
          "session persistence is not converted"),
)


def check(config: ConfigObject, body: Mapping[str, Any]) -> Iterator[Issue]:
    """A warning for each field of ``body`` the table lists for the object's kind."""
    for field in FIELDS:
        if field.group == config.group and field.kind == config.kind:
            for path in _present(body, field.path):
                yield warning(path, f"accepted but not applied by pilotfish: {field.note}")


def _present(value: Any, path: tuple[str, ...], at: FieldPath = ()) -> Iterator[FieldPath]:
    if not path:
        yield at
        return
    head, rest = path[0], path[1:]
    if head == ANY:
        items = (enumerate(value) if isinstance(value, list) else
                 value.items() if isinstance(value, Mapping) else ())
        for key, child in items:
            yield from _present(child, rest, (*at, key))
    elif isinstance(value, Mapping) and head in value:
        yield from _present(value[head], rest, (*at, head))


def markdown(kinds: Mapping[tuple[str, str], str]) -> str:
    """The docs table: kinds accepted and not applied, then fields."""
    lines = ["| what | why |", "|---|---|"]
    for (group, kind), advice in sorted(kinds.items(), key=lambda kv: kv[0][1]):
        note = advice.lstrip("; ") or "not applied"
        lines.append(f"| {kind} (`{group}`), the whole kind | {note} |")
    for field in sorted(FIELDS, key=lambda f: (f.kind, f.shown)):
        lines.append(f"| {field.kind} `{field.shown}` | {field.note} |")
    return "\n".join(dict.fromkeys(lines)) + "\n"
