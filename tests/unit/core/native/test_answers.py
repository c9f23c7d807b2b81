"""The head of an answer from upstream as the native proxy sends it downstream."""

from __future__ import annotations

import time

from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format

from pilotfish.core.native import proxy, routing
from pilotfish.core.native.rbac import Facts


def test_a_sidecar_pair_answers_with_one_server_and_one_service_time_header():
    # The server sidecar set both; the client sidecar replaced them rather than adding its
    # own (an Envoy pair answers so).
    config = {"virtual_hosts": [{"name": "any", "domains": ["*"], "routes": [{
        "match": {"prefix": "/"}, "route": {"cluster": "web"},
        "response_headers_to_add": [{"header": {"key": "x-route", "value": "1"}}]}]}]}
    decision = routing.compile_routes(json_format.ParseDict(
        config, route_pb2.RouteConfiguration())).route("web", "/", {})
    assert decision is not None
    upstream = [("content-type", "text/plain"), ("server", "istio-envoy"),
                ("x-envoy-upstream-service-time", "7")]
    head = proxy._answer_head(upstream, decision, Facts(), [("x-cors", "a")], time.monotonic())
    names = [name for name, _ in head]
    assert names.count("server") == 1 and names.count("x-envoy-upstream-service-time") == 1
    assert dict(head)["x-envoy-upstream-service-time"] == "0"
    assert dict(head)["x-route"] == "1" and dict(head)["x-cors"] == "a"
