"""The Event a refused object gets: on the object's version, in its namespace (``default``
for a cluster-scoped one), within Kubernetes' size limit, once per version."""

from __future__ import annotations

from pilotfish.core.objects import ConfigKey
from pilotfish.core.store import ConfigError
from pilotfish.plugins.kube.events import MAX_MESSAGE, Reported, event_for
from pilotfish.plugins.kube.resources import Resource

ROUTES = Resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes", custom=True)
CLASSES = Resource("gateway.networking.k8s.io", "v1", "GatewayClass", "gatewayclasses",
                   namespaced=False, custom=True)


def problem(message: str, field: str = "spec.rules[0]", severity: str = "error"
            ) -> ConfigError:
    return ConfigError("kubernetes:httproutes", 0, message, ConfigKey("HTTPRoute", "shop", "r"),
                       field, severity)


def test_the_event_names_the_objects_version_and_the_errors_not_the_warnings():
    raw = {"metadata": {"name": "r", "namespace": "shop", "uid": "u1",
                        "resourceVersion": "42"}}
    event = event_for(ROUTES, raw, [problem("bad"), problem("odd", severity="warning")],
                      now="2026-01-01T00:00:00Z", instance="discovery-0")
    assert event["metadata"] == {"generateName": "r.", "namespace": "shop"}
    assert event["involvedObject"] == {"apiVersion": "gateway.networking.k8s.io/v1",
                                       "kind": "HTTPRoute", "name": "r", "namespace": "shop",
                                       "uid": "u1", "resourceVersion": "42"}
    assert (event["type"], event["reason"], event["reportingInstance"]) == (
        "Warning", "InvalidConfig", "discovery-0")
    assert event["message"] == ("not applied, the last valid version stays in force: "
                                "spec.rules[0]: bad")


def test_a_cluster_scoped_objects_event_goes_to_default_and_long_messages_are_cut():
    event = event_for(CLASSES, {"metadata": {"name": "istio"}}, [problem("x" * 2000)])
    assert event["metadata"]["namespace"] == "default"
    assert event["involvedObject"]["namespace"] == ""
    assert len(event["message"]) == MAX_MESSAGE and event["message"].endswith("...")


def test_each_refused_version_is_reported_once():
    reported = Reported()
    v1 = {"metadata": {"name": "r", "uid": "u1", "resourceVersion": "1"}}
    v2 = {"metadata": {"name": "r", "uid": "u1", "resourceVersion": "2"}}
    assert reported.first_time(v1) and not reported.first_time(v1)
    assert reported.first_time(v2)
