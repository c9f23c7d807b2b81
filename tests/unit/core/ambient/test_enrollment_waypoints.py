"""Istio's ambient enablement rule and waypoint binding, on labels alone."""

from __future__ import annotations

from pilotfish.core.ambient.enrollment import in_ambient
from pilotfish.core.ambient.waypoints import SERVICE, WORKLOAD, Waypoint, binding, index
from pilotfish.core.yamlload import load_text

AMBIENT = {"istio.io/dataplane-mode": "ambient"}


def test_a_pod_or_its_namespace_enrols_it() -> None:
    assert in_ambient({}, {}, AMBIENT)
    assert in_ambient(AMBIENT, {}, {})
    assert not in_ambient({}, {}, {})


def test_opting_out_a_sidecar_and_host_network_keep_a_pod_out() -> None:
    assert not in_ambient({"istio.io/dataplane-mode": "none"}, {}, AMBIENT)
    assert not in_ambient({}, {"sidecar.istio.io/status": "{}"}, AMBIENT)
    assert not in_ambient(AMBIENT, {}, {}, {"hostNetwork": True})


WAYPOINTS = {
    ("ns", "svc-wp"): Waypoint("svc-wp", "ns", "service", address="10.96.0.9"),
    ("ns", "all-wp"): Waypoint("all-wp", "ns", "all", address="10.96.0.8"),
    ("other", "shared"): Waypoint("shared", "other", "workload", hostname="shared.other"),
}


def use(name: str, namespace: str = "") -> dict[str, str]:
    labels = {"istio.io/use-waypoint": name}
    if namespace:
        labels["istio.io/use-waypoint-namespace"] = namespace
    return labels


def test_the_objects_label_wins_over_its_namespaces() -> None:
    found = binding(use("all-wp"), "ns", use("svc-wp"), WAYPOINTS, SERVICE)
    assert found is not None and found.name == "all-wp"
    found = binding({}, "ns", use("svc-wp"), WAYPOINTS, SERVICE)
    assert found is not None and found.name == "svc-wp"


def test_none_on_the_object_overrides_the_namespace() -> None:
    assert binding(use("none"), "ns", use("svc-wp"), WAYPOINTS, SERVICE) is None


def test_a_waypoint_takes_only_the_traffic_it_is_for() -> None:
    assert binding(use("svc-wp"), "ns", {}, WAYPOINTS, WORKLOAD) is None
    assert binding(use("all-wp"), "ns", {}, WAYPOINTS, WORKLOAD) is not None
    assert binding(use("shared", "other"), "ns", {}, WAYPOINTS, WORKLOAD) is not None
    assert binding(use("shared", "other"), "ns", {}, WAYPOINTS, SERVICE) is None


def test_an_unknown_waypoint_binds_nothing() -> None:
    assert binding(use("missing"), "ns", {}, WAYPOINTS, SERVICE) is None


def test_a_gateway_class_label_is_its_gateways_default() -> None:
    objects, errors = load_text("""\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: istio-waypoint, labels: {istio.io/waypoint-for: workload}}
spec: {controllerName: istio.io/mesh-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: from-class, namespace: ns}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: own, namespace: ns, labels: {istio.io/waypoint-for: all}}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
""", "waypoints.yaml")
    assert not errors, errors
    gateways = [o for o in objects if o.kind == "Gateway"]
    classes = [o for o in objects if o.kind == "GatewayClass"]
    found = index(gateways, {}, classes=classes)
    assert found[("ns", "from-class")].traffic_type == WORKLOAD
    assert found[("ns", "own")].traffic_type == "all"  # the Gateway's own label wins
    assert index(gateways, {})[("ns", "from-class")].traffic_type == SERVICE  # Istio's default
