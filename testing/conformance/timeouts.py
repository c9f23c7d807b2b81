"""The suite's timeouts: ``config.DefaultTimeoutConfig()`` (``utils/config/timeout.go``), in
seconds, and which one each Go helper waits with."""

from __future__ import annotations

import attrs


@attrs.frozen
class TimeoutConfig:
    create: float = 60
    delete: float = 30
    get: float = 10
    gateway_must_have_address: float = 180
    gateway_must_have_condition: float = 180
    gateway_status_must_have_listeners: float = 60
    gateway_listeners_must_have_conditions: float = 60
    listener_set_must_have_condition: float = 180
    listener_set_listeners_must_have_conditions: float = 60
    gwc_must_be_accepted: float = 180
    http_route_must_not_have_parents: float = 60
    http_route_must_have_condition: float = 60
    tls_route_must_have_condition: float = 60
    tcp_route_must_have_condition: float = 60
    udp_route_must_have_condition: float = 60
    route_must_have_parents: float = 60
    max_time_to_consistency: float = 30
    namespaces_must_be_ready: float = 300
    request_timeout: float = 10
    latest_observed_generation_set: float = 60
    default_test_timeout: float = 60
    default_poll_interval: float = 0.1
    required_consecutive_successes: int = 3

    def route_condition(self, kind: str) -> float:
        """``<Kind>RouteMustHaveCondition``'s timeout (GRPCRoute's helpers use HTTPRoute's)."""
        return {"TLSRoute": self.tls_route_must_have_condition,
                "TCPRoute": self.tcp_route_must_have_condition,
                "UDPRoute": self.udp_route_must_have_condition,
                }.get(kind, self.http_route_must_have_condition)


DEFAULT = TimeoutConfig()
