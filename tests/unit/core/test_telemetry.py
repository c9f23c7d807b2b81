"""Telemetry composed per workload (mesh, namespace, workload), and the translators' and
agent's halves of it: access loggers per mode, metric overrides through the log name."""

from __future__ import annotations

from pilotfish.core import telemetry
from pilotfish.core.istio_requests import REMOVED
from pilotfish.core.metric_overrides import FAMILIES, Overrides
from pilotfish.core.yamlload import load_text
from pilotfish.translators.telemetry import encode


def telemetries(text: str) -> telemetry.Telemetries:
    objects, errors = load_text(text, "t.yaml")
    assert not errors
    return telemetry.build(objects, "istio-system")


MESH = """\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: envoy}], disabled: true}]
  metrics:
  - overrides:
    - {match: {metric: ALL_METRICS}, tagOverrides: {request_protocol: {operation: REMOVE}}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: shop, namespace: shop}
spec:
  accessLogging: [{match: {mode: SERVER}, filter: {expression: "response.code >= 500"}}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      disabled: true
      tagOverrides: {request_host: {value: request.host}}
  accessLogging: [{providers: [{name: otel}], disabled: false}]
"""


def test_the_most_specific_telemetry_wins_per_mode_and_overrides_stack():
    found = telemetries(MESH)
    web = found.for_workload("shop", {"app": "web"})
    # Logging: the namespace's SERVER filter; CLIENT falls back to the mesh's "disabled";
    # the workload's entry names another provider, so it says nothing here.
    assert web.logging("SERVER") == telemetry.AccessLogging(filter="response.code >= 500")
    assert web.logging("CLIENT").disabled
    count = web.overrides("CLIENT")["REQUEST_COUNT"]
    assert count.disabled and count.tags == {"request_protocol": None,
                                             "request_host": "request.host"}
    assert not web.overrides("SERVER")["REQUEST_COUNT"].disabled
    elsewhere = found.for_workload("other", {"app": "web"})
    assert elsewhere.logging("SERVER").disabled and elsewhere.logging("CLIENT").disabled


def test_overrides_cross_to_the_agent_in_the_log_name():
    web = telemetries(MESH).for_workload("shop", {"app": "web"})
    parsed = Overrides.from_log_name("pilotfish-metrics;" + encode(web.overrides("CLIENT")))
    assert FAMILIES["REQUEST_COUNT"] in parsed.disabled
    extras = parsed.extras(FAMILIES["REQUEST_COUNT"], {"request_protocol": "http"},
                           {"request": {"host": "web.example.com"}})
    assert dict(extras) == {"request_protocol": REMOVED, "request_host": "web.example.com"}
    assert Overrides.from_log_name("pilotfish-metrics;{not json") == Overrides()
    assert Overrides.from_log_name("pilotfish-metrics") == Overrides()


def test_an_access_log_filter_passes_what_its_expression_holds_for():
    from pilotfish.core.metric_overrides import http_attributes, passes

    failed = http_attributes("GET", "shop", "/a?b=1", "http", "curl", {"X-Team": "blue"}, 404)
    assert failed["request"]["url_path"] == "/a" and failed["request"]["headers"] == {
        "x-team": "blue"}
    assert passes("response.code >= 400", failed)
    assert not passes("response.code >= 400", {**failed, "response": {"code": 200}})
    assert not passes("request.headers['missing'] == 'x'", failed)  # an error drops it
