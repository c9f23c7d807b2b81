"""A Telemetry's metric overrides and access-log filter as a proxy applies them, sans-IO:
which of Istio's metrics are off, which tags are removed or set from a CEL expression, and
whether an access-log entry passes a CEL filter.

The translators send the overrides in the metrics logger's name
(``pilotfish-metrics;{json}``, `Overrides.from_log_name`); the expressions read Envoy's
attributes (`http_attributes`). The Envoy agent applies them to access-log entries
(``plugins/envoy/request_metrics.py``), the native proxy to the requests it counts.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from typing import Any

import attrs

from pilotfish.core.istio_metrics import UNKNOWN
from pilotfish.core.istio_requests import REMOVED, Extras

log = logging.getLogger("pilotfish.metrics")

# Telemetry's metric names → the families they are.
FAMILIES = {
    "REQUEST_COUNT": "istio_requests_total",
    "REQUEST_DURATION": "istio_request_duration_milliseconds",
    "REQUEST_SIZE": "istio_request_bytes",
    "RESPONSE_SIZE": "istio_response_bytes",
    "TCP_OPENED_CONNECTIONS": "istio_tcp_connections_opened_total",
    "TCP_CLOSED_CONNECTIONS": "istio_tcp_connections_closed_total",
    "TCP_SENT_BYTES": "istio_tcp_sent_bytes_total",
    "TCP_RECEIVED_BYTES": "istio_tcp_received_bytes_total",
}


@attrs.frozen
class Overrides:
    """A Telemetry's metric overrides for one logger's requests or connections."""

    disabled: frozenset[str] = frozenset()  # family names
    tags: Mapping[str, Mapping[str, str | None]] = attrs.field(factory=dict)  # family → tag

    @classmethod
    def from_log_name(cls, log_name: str) -> Overrides:
        _, sep, text = log_name.partition(";")
        if not sep:
            return NO_OVERRIDES
        try:
            raw = json.loads(text)
            return cls(
                frozenset(FAMILIES[m] for m, o in raw.items() if m in FAMILIES
                          and o.get("disabled")),
                {FAMILIES[m]: {str(t): (None if v is None else str(v))
                               for t, v in (o.get("tags") or {}).items()}
                 for m, o in raw.items() if m in FAMILIES and o.get("tags")})
        except (ValueError, AttributeError, TypeError):
            log.warning("access log stream %r: metric overrides that do not parse; ignored",
                        log_name[:200])
            return NO_OVERRIDES

    def extras(self, family: str, extras: Mapping[str, str], attributes: Mapping[str, Any]
               ) -> Extras:
        """The labels of one request (or connection) for one family, its tag overrides
        applied."""
        out = dict(extras)
        for tag, value in (self.tags.get(family) or {}).items():
            out[tag] = REMOVED if value is None else evaluate(value, attributes)
        return tuple(sorted(out.items()))


NO_OVERRIDES = Overrides()
ALL_OFF = Overrides(frozenset(FAMILIES.values()))  # no metrics logger: nothing counted


@functools.lru_cache(maxsize=256)
def _program(expression: str) -> Any:
    # celpy (and lark under it) is ~16 MiB: loaded by the first expression, not by every
    # proxy that might meet one
    import celpy

    env = celpy.Environment()
    return env.program(env.compile(expression))


def _value(expression: str, attributes: Mapping[str, Any]) -> Any:
    import celpy

    return _program(expression).evaluate(celpy.json_to_cel(dict(attributes)))


def evaluate(expression: str, attributes: Mapping[str, Any]) -> str:
    """A tag's CEL value; ``unknown`` when it cannot be had."""
    try:
        value = _value(expression, attributes)
    except Exception:  # any CEL failure (a missing header, a bad expression) is one value
        return UNKNOWN
    return str(value)


def passes(expression: str, attributes: Mapping[str, Any]) -> bool:
    """Whether an access-log entry passes a CEL filter (one that fails to evaluate does
    not, as Envoy's filter drops the entry)."""
    try:
        return bool(_value(expression, attributes))
    except Exception:
        return False


def http_attributes(method: str, authority: str, path: str, scheme: str, user_agent: str,
                    headers: Mapping[str, str], code: int) -> dict[str, Any]:
    """Envoy's attributes of a request, as Telemetry's expressions name them."""
    return {"request": {"host": authority, "method": method, "path": path,
                        "url_path": path.partition("?")[0], "scheme": scheme,
                        "useragent": user_agent,
                        "headers": {k.lower(): v for k, v in headers.items()}},
            "response": {"code": code}}
