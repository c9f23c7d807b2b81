"""The rule planner: istio-iptables's exact restore text from capture settings (sans-IO)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pilotfish.interceptors.capture_settings import CaptureSettings, SettingsError
from pilotfish.interceptors.iptables_plan import plan
from pilotfish.interceptors.iptables_rules import Rule, check_text, restore_text

GOLDEN = "iptables-golden"


def golden_cases(corpus: Path) -> dict[str, dict[str, Any]]:
    cases = yaml.safe_load((corpus / GOLDEN / "CASES.yaml").read_text())
    out = {}
    for name, changes in cases["cases"].items():
        settings = {**cases["defaults"], **(changes or {})}
        settings.pop("dry_run", None)  # how the tool ran, not what it plans
        out[name] = settings
    return out


@pytest.mark.corpus
def test_every_istio_iptables_golden_is_reproduced_byte_for_byte(corpus: Path):
    cases = golden_cases(corpus)
    assert len(cases) == 27
    failed = [name for name, settings in cases.items()
              if plan(CaptureSettings(**settings)).dry_run_text()
              != (corpus / GOLDEN / f"{name}.golden").read_text()]
    assert failed == []


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["tproxy", "dns-uid-gid", "ipv6-ipnets", "kube-virt-interfaces"])
def test_golden_case_in_detail(corpus: Path, name: str):
    settings = golden_cases(corpus)[name]
    got = plan(CaptureSettings(**settings)).dry_run_text()
    assert got.splitlines() == (corpus / GOLDEN / f"{name}.golden").read_text().splitlines()


def test_plan_is_deterministic_and_settings_compare_by_value():
    first = plan(CaptureSettings.sidecar(redirect_dns=True, capture_all_dns=True))
    second = plan(CaptureSettings.sidecar(redirect_dns=True, capture_all_dns=True))
    assert first == second
    assert first.restore_v4() == second.restore_v4()


def test_default_sidecar_capture_matches_istio_init():
    text = plan(CaptureSettings.sidecar()).restore_v4()
    lines = text.splitlines()
    assert lines[:5] == ["* nat", "-N ISTIO_INBOUND", "-N ISTIO_REDIRECT", "-N ISTIO_IN_REDIRECT",
                         "-N ISTIO_OUTPUT"]
    assert lines[8:13] == [
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
        "-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN",
        "-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN",
        "-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN",
        "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
    ]
    assert lines[-2:] == ["-A ISTIO_OUTPUT -j ISTIO_REDIRECT", "COMMIT"]
    assert text.endswith("COMMIT\n")


def test_ipv6_rules_substitute_the_family_addresses():
    capture = plan(CaptureSettings.sidecar(enable_ipv6=True))
    v6 = capture.restore_v6()
    assert v6 is not None
    assert "-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN" in v6
    assert "-A ISTIO_OUTPUT -d ::1/128 -j RETURN" in v6
    assert "127.0.0" not in v6
    assert ("-6", "addr", "add", "::6/128", "dev", "lo") in capture.routes
    assert plan(CaptureSettings.sidecar()).restore_v6() is None


def test_cidrs_go_to_their_own_family():
    capture = plan(CaptureSettings.sidecar(
        outbound_ip_ranges_include="10.0.0.0/8,2001:db8::/32", enable_ipv6=True))
    assert "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT" in capture.restore_v4()
    assert "2001:db8" not in capture.restore_v4()
    assert "-A ISTIO_OUTPUT -d 2001:db8::/32 -j ISTIO_REDIRECT" in (capture.restore_v6() or "")


def test_tproxy_needs_policy_routing_for_marked_packets():
    capture = plan(CaptureSettings.sidecar(inbound_interception_mode="tproxy"))
    assert capture.routes == (
        ("-4", "rule", "add", "fwmark", "1337", "lookup", "133"),
        ("-4", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "133"),
    )
    assert "* mangle" in capture.restore_v4()


def test_an_empty_owner_group_include_list_captures_nobody():
    text = plan(CaptureSettings(owner_groups_include="")).restore_v4()
    assert "-A ISTIO_OUTPUT -j RETURN" in text


def test_restore_declares_only_chains_holding_rules_in_order_of_first_rule():
    rules = [Rule("nat", "OUTPUT", ("-j", "ISTIO_B")), Rule("nat", "ISTIO_A", ("-j", "RETURN")),
             Rule("nat", "ISTIO_B", ("-j", "ISTIO_A"), position=1),
             Rule("mangle", "ISTIO_C", ("-j", "ACCEPT"))]
    assert restore_text(rules) == (
        "* mangle\n-N ISTIO_C\n-A ISTIO_C -j ACCEPT\nCOMMIT\n"
        "* nat\n-N ISTIO_A\n-N ISTIO_B\n-A OUTPUT -j ISTIO_B\n-A ISTIO_A -j RETURN\n"
        "-I ISTIO_B 1 -j ISTIO_A\nCOMMIT\n"
    )
    assert check_text(rules[2:3]) == "*nat\n-C ISTIO_B -j ISTIO_A\nCOMMIT\n"


def test_restore_declares_a_chain_of_ours_that_is_only_jumped_to_after_those_holding_rules():
    rules = [Rule("nat", "OUTPUT", ("-j", "ISTIO_OUT")),
             Rule("nat", "PREROUTING", ("-j", "ISTIO_PRE")),
             Rule("nat", "ISTIO_OUT", ("-j", "ACCEPT")), Rule("nat", "OUTPUT", ("-j", "ACCEPT"))]
    assert restore_text(rules).splitlines()[:3] == ["* nat", "-N ISTIO_OUT", "-N ISTIO_PRE"]


@pytest.mark.parametrize(("changes", "message"), [
    ({"inbound_ports_include": "80,http"}, "inbound_ports_include: 'http' is not a port"),
    ({"outbound_ports_exclude": "70000"}, "outbound_ports_exclude: '70000' is not a port"),
    ({"outbound_ip_ranges_exclude": "*"}, "outbound_ip_ranges_exclude: '*' is not allowed"),
    ({"outbound_ip_ranges_include": "10.0.0.0/33"}, "'10.0.0.0/33' is not an IP range"),
    ({"inbound_interception_mode": "NAT"}, "expected REDIRECT or TPROXY, got 'NAT'"),
    ({"host_ipv4_loopback_cidr": "10.0.0.1/32"}, "must be an IPv4 loopback CIDR"),
    ({"dns_servers_v4": ["fd00::1"]}, "dns_servers_v4: 'fd00::1' is not an IPv4 address"),
    ({"exclude_interfaces": "eth0,bad name"}, "'bad name' is not a network interface name"),
    ({"owner_groups_include": ",".join(map(str, range(65)))}, "at most 64 groups"),
])
def test_bad_settings_name_the_setting_and_the_value(changes: dict[str, Any], message: str):
    with pytest.raises(SettingsError, match=message.replace("*", r"\*").replace("(", r"\(")):
        CaptureSettings(**changes)


def test_lists_are_split_the_way_istio_splits_them():
    settings = CaptureSettings(inbound_ports_include="4000, 5000,", proxy_uid="3,4")
    assert settings.inbound_ports_include == (4000, 5000)
    assert settings.proxy_gid == ("3", "4")  # defaults to the uids
    assert CaptureSettings(inbound_ports_include=" * ").inbound_ports_include == "*"
