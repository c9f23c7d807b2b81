"""HBONE's headers as ztunnel writes them (reference §4.5), and the authority a server
reads a tunnel's target from."""

from __future__ import annotations

import re

import pytest

from pilotfish.core.native.hbone_headers import (
    baggage,
    forwarded,
    parse_authority,
    parse_baggage,
    traceparent,
)


def test_forwarded_names_the_client_and_through_a_waypoint_the_service() -> None:
    assert forwarded(("10.0.0.9", 41000)) == 'for="10.0.0.9:41000"'
    assert forwarded(("fd00::9", 41000)) == 'for="[fd00::9]:41000"'
    assert forwarded(("10.0.0.9", 41000), "reviews.shop.svc.cluster.local") == \
        'for="10.0.0.9:41000";host=reviews.shop.svc.cluster.local'


def test_baggage_has_the_present_facts_in_ztunnels_order() -> None:
    assert baggage(zone="z1", service_name="reviews", namespace="shop", cluster_id="Kubernetes",
                   workload_name="reviews-v1", revision="v1", region="r1") == (
        "k8s.cluster.name=Kubernetes,k8s.namespace.name=shop,k8s.deployment.name=reviews-v1,"
        "service.name=reviews,service.version=v1,cloud.region=r1,cloud.availability_zone=z1")
    assert baggage(namespace="shop", workload_name="backup", workload_type="cronjob",
                   service_name="") == "k8s.namespace.name=shop,k8s.cronjob.name=backup"
    assert baggage() == ""


def test_baggage_refuses_what_it_does_not_know_by_name() -> None:
    with pytest.raises(TypeError, match="'pod'"):
        baggage(pod="x")
    with pytest.raises(ValueError, match="'daemonset'"):
        baggage(workload_name="x", workload_type="daemonset")


def test_parse_baggage_reads_what_baggage_writes_across_values() -> None:
    facts = {"cluster_id": "Kubernetes", "namespace": "shop", "workload_name": "job-1",
             "workload_type": "job", "service_name": "reviews", "revision": "v2"}
    assert parse_baggage([baggage(**facts)]) == facts
    assert parse_baggage(["k8s.namespace.name=shop", "service.name=,other=1,k8s.pod.name=p"]) \
        == {"namespace": "shop", "workload_name": "p", "workload_type": "pod"}


def test_traceparent_is_random_per_tunnel_and_not_sampled() -> None:
    first, second = traceparent(), traceparent()
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", first)
    assert first != second


@pytest.mark.parametrize(("authority", "expected"), [
    ("10.0.0.5:8080", ("10.0.0.5", 8080)),
    ("reviews.shop.svc.cluster.local:9080", ("reviews.shop.svc.cluster.local", 9080)),
    ("[fd00::5]:8080", ("fd00::5", 8080)),
])
def test_authorities_read(authority: str, expected: tuple[str, int]) -> None:
    assert parse_authority(authority) == expected


@pytest.mark.parametrize(("authority", "message"), [
    ("10.0.0.5", "expected host:port"),
    (":80", "expected host:port"),
    ("10.0.0.5:0", "is not 1-65535"),
    ("10.0.0.5:http", "is not 1-65535"),
    ("fd00::5:8080", "in brackets"),
    ("[nope]:80", "not an IPv6 address"),
])
def test_bad_authorities_say_what_is_wrong(authority: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_authority(authority)
