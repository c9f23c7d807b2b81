"""The ztunnel-sockets interceptor's pure side: which pods it takes, the plan it shows, and the
pod-event bodies it and the CNI node agent exchange."""

from __future__ import annotations

import json

import pytest

from pilotfish.core.interceptor import (
    InterceptorError,
    InterceptorSettings,
    PodFacts,
    first_capturing,
)
from pilotfish.interceptors.ambient_events import (
    EventError,
    add_body,
    delete_body,
    parse_add,
    parse_delete,
)
from pilotfish.interceptors.ambient_rules import inpod_plan
from pilotfish.interceptors.ambient_settings import AmbientSettings
from pilotfish.interceptors.iptables import IptablesInterceptor
from pilotfish.interceptors.ztunnel_sockets import ZtunnelSocketsInterceptor

AMBIENT = {"istio.io/dataplane-mode": "ambient"}
POD = PodFacts(name="web", namespace="shop", uid="u-1", service_account="web", labels=AMBIENT,
               annotations={"ambient.istio.io/dns-capture": "false"}, ips=("10.0.0.5/24",))


def interceptor(**environ: str) -> ZtunnelSocketsInterceptor:
    return ZtunnelSocketsInterceptor(InterceptorSettings(environ=environ))


def test_the_plan_is_the_pods_inpod_rules_with_its_overrides():
    plan = inpod_plan(AmbientSettings())
    assert interceptor().plan(PodFacts(name="web", namespace="shop", labels=AMBIENT)) == \
        plan.restore_v4() + (plan.restore_v6() or "")
    without_dns = interceptor().plan(POD)
    assert without_dns is not None and "15053" not in without_dns
    v4_only = interceptor(AMBIENT_IPV6="false").plan(POD)
    assert v4_only is not None and "::1/128" not in v4_only


@pytest.mark.parametrize(("pod", "reason"), [
    (PodFacts(name="a", namespace="shop"), "not in ambient mode"),
    (PodFacts(name="a", namespace="shop", labels={"istio.io/dataplane-mode": "none"},
              namespace_labels=AMBIENT), "not in ambient mode"),
    (PodFacts(name="a", namespace="shop", labels=AMBIENT, sidecar=True,
              annotations={"sidecar.istio.io/status": "{}"}), "has a sidecar"),
])
def test_pods_ambient_does_not_enroll_are_left_to_others(pod: PodFacts, reason: str):
    assert interceptor().plan(pod) is None
    assert reason in interceptor().skip_reason(pod)


def test_a_namespace_label_enrolls_the_pod():
    pod = PodFacts(name="a", namespace="shop", namespace_labels=AMBIENT)
    assert interceptor().plan(pod) and interceptor().skip_reason(pod) == ""


def test_in_a_combined_profile_each_pod_goes_to_its_interceptor():
    both = [IptablesInterceptor(InterceptorSettings()), interceptor()]
    sidecar = PodFacts(name="s", namespace="shop", sidecar=True,
                       annotations={"sidecar.istio.io/status": "{}"})
    assert first_capturing(both, sidecar) is both[0]
    assert first_capturing(both, POD) is both[1]
    assert first_capturing(both, PodFacts(name="p", namespace="shop")) is None


def test_a_bad_annotation_is_an_error_naming_it():
    pod = PodFacts(name="a", namespace="shop", labels=AMBIENT,
                   annotations={"istio.io/reroute-virtual-interfaces": "no such nic!"})
    with pytest.raises(InterceptorError, match=r"istio\.io/reroute-virtual-interfaces"):
        interceptor().plan(pod)


def test_event_bodies_round_trip():
    event = parse_add(add_body(POD, "/run/netns/web"))
    assert event.netns == "/run/netns/web" and event.pod == POD
    body = json.loads(add_body(POD, "/run/netns/web"))
    assert {"Netns", "PodName", "PodNamespace", "IPs"} <= set(body)  # Istio's names
    gone = parse_delete(delete_body(POD, ""))
    assert (gone.pod.uid, gone.pod.key, gone.netns) == ("u-1", "shop/web", "")


@pytest.mark.parametrize(("body", "message"), [
    (b"[]", "expected a JSON object, got list"),
    (b'{"Netns": "/n", "PodName": "a", "PodNamespace": "b"}', "PodUID: missing"),
    (b'{"Netns": "/n", "PodName": "a", "PodNamespace": "b", "PodUID": 3}',
     "PodUID: expected a non-empty string, got 3"),
    (b'{"Netns": "/n", "PodName": "a", "PodNamespace": "b", "PodUID": "u", "IPs": "x"}',
     "IPs: expected a list"),
    (b'{"Netns": "/n", "PodName": "a", "PodNamespace": "b", "PodUID": "u", "Labels": []}',
     "Labels: expected an object"),
])
def test_bad_event_bodies_name_the_field(body: bytes, message: str):
    with pytest.raises(EventError, match=message):
        parse_add(body)
