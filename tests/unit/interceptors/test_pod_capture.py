"""Pod facts and annotations → capture settings, with Istio CNI's and istio-init's defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pilotfish.core.interceptor import PodFacts
from pilotfish.interceptors.iptables_plan import plan
from pilotfish.interceptors.pod_capture import (
    PodError,
    settings_for,
    skip_reason,
)

STATUS = {"sidecar.istio.io/status": "{}"}


def pod(**changes: Any) -> PodFacts:
    base: dict[str, Any] = dict(name="web", namespace="shop", sidecar=True, annotations=STATUS,
                                ips=("10.0.0.2/24",))
    return PodFacts(**{**base, **changes})


@pytest.mark.corpus
def test_every_istio_cni_golden_is_reproduced_byte_for_byte(corpus: Path):
    folder = corpus / "cni-golden"
    cases = yaml.safe_load((folder / "CASES.yaml").read_text())["cases"]
    assert len(cases) == 9
    results = {}
    for name, case in cases.items():
        case = case or {}
        facts = pod(annotations={**STATUS, **case.get("annotations", {})},
                    proxy_env=case.get("proxy_env", {}), run_as_user=case.get("run_as_user"),
                    run_as_group=case.get("run_as_group"))
        settings = settings_for(facts)
        assert settings is not None
        golden = "basic" if name == "custom-uid-zero" else name  # uid 0 means "unset"
        results[name] = plan(settings).restore_v4() == (
            folder / f"{golden}.txt.golden").read_text()
    assert results == {name: True for name in cases}


def test_cni_defaults_exclude_the_agent_and_proxy_ports_after_the_pods_own():
    settings = settings_for(pod(annotations={
        **STATUS, "traffic.sidecar.istio.io/excludeInboundPorts": "3333,15021"}))
    assert settings is not None
    assert settings.inbound_ports_exclude == (3333, 15021, 15020, 15090)
    assert settings.outbound_ports_exclude == (15020,)
    assert settings.outbound_ip_ranges_include == "*"
    assert settings.inbound_ports_include == "*"


def test_init_flavour_follows_the_injected_istio_init_arguments():
    settings = settings_for(pod(annotations={
        **STATUS, "traffic.sidecar.istio.io/excludeInboundPorts": "3333"}), flavour="init")
    assert settings is not None
    assert settings.inbound_ports_exclude == (15090, 15021, 15020, 3333)
    assert settings.outbound_ports_exclude == ()


@pytest.mark.parametrize(("facts", "reason"), [
    (pod(sidecar=False), "no sidecar"),
    (pod(labels={"sidecar.istio.io/inject": "false"},
         annotations={**STATUS, "sidecar.istio.io/inject": "true"}),
     "sidecar.istio.io/inject=false"),
    (pod(proxy_env={"DISABLE_ENVOY": "true"}), "DISABLE_ENVOY"),
    (pod(annotations={**STATUS, "sidecar.istio.io/interceptionMode": "NONE"}), "NONE"),
])
def test_pods_without_capture_are_skipped_with_a_reason(facts: PodFacts, reason: str):
    assert reason in (skip_reason(facts) or "")
    assert settings_for(facts) is None


def test_the_inject_label_wins_over_the_annotation():
    facts = pod(labels={"sidecar.istio.io/inject": "true"},
                annotations={**STATUS, "sidecar.istio.io/inject": "false"})
    assert skip_reason(facts) is None


def test_proxy_config_annotation_acts_as_the_injector_would():
    config = "interceptionMode: TPROXY\nproxyMetadata:\n  ISTIO_META_DNS_CAPTURE: 'true'\n"
    settings = settings_for(pod(annotations={**STATUS, "proxy.istio.io/config": config}))
    assert settings is not None
    assert settings.tproxy and settings.redirect_dns and settings.capture_all_dns
    # The container's own environment beats the annotation's metadata.
    settings = settings_for(pod(annotations={**STATUS, "proxy.istio.io/config": config},
                                proxy_env={"ISTIO_META_DNS_CAPTURE": "false"}))
    assert settings is not None and not settings.redirect_dns


def test_reroute_annotation_is_preferred_over_the_deprecated_kubevirt_one():
    settings = settings_for(pod(annotations={
        **STATUS, "istio.io/reroute-virtual-interfaces": "net1",
        "traffic.sidecar.istio.io/kubevirtInterfaces": "net2"}))
    assert settings is not None and settings.reroute_virtual_interfaces == ("net1",)


def test_ipv6_follows_the_pods_first_address_or_any_with_dual_stack():
    assert settings_for(pod(ips=("fd00::2/64", "10.0.0.2/24"))).enable_ipv6  # type: ignore
    assert not settings_for(pod(ips=("10.0.0.2/24", "fd00::2/64"))).enable_ipv6  # type: ignore
    dual = pod(ips=("10.0.0.2/24", "fd00::2/64"), proxy_env={"ISTIO_DUAL_STACK": "true"})
    assert settings_for(dual).enable_ipv6  # type: ignore[union-attr]


@pytest.mark.parametrize(("annotation", "value", "message"), [
    ("traffic.sidecar.istio.io/excludeOutboundPorts", "5432,pg",
     "annotation traffic.sidecar.istio.io/excludeOutboundPorts: 'pg' is not a port"),
    ("traffic.sidecar.istio.io/includeOutboundIPRanges", "10.0.0.0/8,bogus",
     "annotation traffic.sidecar.istio.io/includeOutboundIPRanges: 'bogus' is not an IP"),
    ("sidecar.istio.io/interceptionMode", "SOCKS",
     "annotation sidecar.istio.io/interceptionMode: 'SOCKS' is not REDIRECT, TPROXY or NONE"),
    ("status.sidecar.istio.io/port", "x", "annotation status.sidecar.istio.io/port"),
    ("proxy.istio.io/config", "proxyMetadata: [1, 2]", "annotation proxy.istio.io/config"),
])
def test_invalid_annotations_fail_naming_the_pod_and_annotation(annotation: str, value: str,
                                                                 message: str):
    with pytest.raises(PodError, match="pod shop/web: " + message.replace("(", r"\(")):
        settings_for(pod(annotations={**STATUS, annotation: value}))
