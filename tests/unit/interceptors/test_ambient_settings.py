"""Ambient node settings and a pod's overrides, read as Istio's CNI node agent reads them."""

from __future__ import annotations

import re

import pytest

from pilotfish.interceptors.ambient_settings import AmbientSettings, PodOverrides, pod_overrides
from pilotfish.interceptors.capture_settings import SettingsError


def test_defaults_are_istios_chart_defaults():
    settings = AmbientSettings()
    assert settings.enable_ipv6 and settings.redirect_dns
    assert settings.host_probe_snat_v4 == "169.254.7.127"
    assert settings.host_probe_snat_v6 == "fd16:9254:7127:1337:ffff:ffff:ffff:ffff"


def test_probe_addresses_are_written_as_istio_prints_them():
    settings = AmbientSettings(host_probe_snat_v6="FD16:0000::0001")
    assert settings.host_probe_snat_v6 == "fd16::1"


@pytest.mark.parametrize(("changes", "message"), [
    ({"host_probe_snat_v4": "fd16::1"}, "host_probe_snat_v4: 'fd16::1' is not an IPv4 address"),
    ({"host_probe_snat_v6": "probe"}, "host_probe_snat_v6: 'probe' is not an IPv6 address"),
])
def test_bad_probe_addresses_name_the_setting(changes: dict[str, str], message: str):
    with pytest.raises(SettingsError, match=message):
        AmbientSettings(**changes)


def test_annotations_become_overrides():
    overrides = pod_overrides({
        "ambient.istio.io/bypass-inbound-capture": "true",
        "ambient.istio.io/dns-capture": "false",
        "istio.io/reroute-virtual-interfaces": "eth1, eth2,",
    })
    assert overrides == PodOverrides(ingress_mode=True, dns_capture=False,
                                     virtual_interfaces=("eth1", "eth2"))
    assert pod_overrides({}) == PodOverrides()


def test_a_boolean_annotation_that_is_not_a_boolean_is_ignored_as_istio_does():
    overrides = pod_overrides({"ambient.istio.io/bypass-inbound-capture": "yes",
                               "ambient.istio.io/dns-capture": "on"})
    assert overrides == PodOverrides()
    assert overrides.redirect_dns(AmbientSettings(redirect_dns=False)) is False


def test_a_bad_interface_name_names_the_annotation():
    with pytest.raises(SettingsError, match=re.escape(
            "istio.io/reroute-virtual-interfaces: 'bad name'")):
        pod_overrides({"istio.io/reroute-virtual-interfaces": "eth0,bad name"})
