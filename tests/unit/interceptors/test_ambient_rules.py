"""Ambient in-pod rules: Istio CNI's exact restore text from node settings and pod overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pilotfish.interceptors.ambient_rules import AmbientPlan, host_plan, inpod_plan
from pilotfish.interceptors.ambient_settings import AmbientSettings, PodOverrides
from pilotfish.interceptors.iptables_state import cleanup_text, mismatches, parse_save

GOLDEN = Path("ambient") / "iptables-golden"
NICS = ("fake1s0f0", "fake1s0f1")
# Istio's test config: the in-pod cases use this IPv6 probe address, the host case its default.
TEST_PROBE_V6 = "e9ac:1e77:90ca:399f:4d6d:ece2:2f9b:3164"

# Istio's in-pod cases (cni/pkg/iptables, GetCommonInPodTestCases): node DNS capture, then
# the pod's overrides. Each runs for IPv4 and, with "_ipv6" appended, for IPv6.
INPOD_CASES: dict[str, tuple[bool, dict[str, Any]]] = {
    "default": (True, {}),
    "ingress": (False, {"ingress_mode": True}),
    "virtual_interfaces": (False, {"virtual_interfaces": NICS}),
    "ingress_and_virtual_interfaces": (False, {"ingress_mode": True, "virtual_interfaces": NICS}),
    "dns_pod_enabled_and_off_globally": (False, {"dns_capture": True}),
    "dns_pod_disabled_and_on_globally": (True, {"dns_capture": False}),
}


def golden_plans() -> dict[str, AmbientPlan]:
    plans = {}
    for ipv6 in (False, True):
        suffix = "_ipv6" if ipv6 else ""
        for name, (dns, overrides) in INPOD_CASES.items():
            settings = AmbientSettings(enable_ipv6=ipv6, redirect_dns=dns,
                                       host_probe_snat_v6=TEST_PROBE_V6)
            plans[name + suffix] = inpod_plan(settings, PodOverrides(**overrides))
        plans["hostprobe" + suffix] = host_plan(AmbientSettings(enable_ipv6=ipv6))
    return plans


@pytest.mark.corpus
def test_every_ambient_golden_is_reproduced_byte_for_byte(corpus: Path):
    folder = corpus / GOLDEN
    plans = golden_plans()
    assert sorted(plans) == sorted(path.stem for path in folder.glob("*.golden"))
    assert len(plans) == 14
    failed = [name for name, plan in plans.items()
              if plan.dry_run_text() != (folder / f"{name}.golden").read_text()]
    assert failed == []


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["default_ipv6", "ingress", "virtual_interfaces",
                                  "hostprobe_ipv6"])
def test_ambient_golden_in_detail(corpus: Path, name: str):
    got = golden_plans()[name].dry_run_text()
    assert got.splitlines() == (corpus / GOLDEN / f"{name}.golden").read_text().splitlines()


def nat(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index("* nat")
    return lines[start + 1:lines.index("COMMIT", start)]


def test_default_sends_the_pods_traffic_to_ztunnels_in_pod_listeners():
    text = inpod_plan(AmbientSettings(enable_ipv6=False)).restore_v4()
    rules = nat(text)
    assert rules[-1] == ("-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff"
                         " -j REDIRECT --to-ports 15001")
    assert ("-A ISTIO_PRERT ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m mark ! --mark "
            "0x539/0xfff -j REDIRECT --to-ports 15006") in rules
    assert any("--to-port 15053" in rule for rule in rules)
    assert text.index("* mangle") < text.index("* nat") < text.index("* raw")


def test_ingress_mode_captures_no_inbound_but_keeps_the_chain_and_the_connmark():
    plan = inpod_plan(AmbientSettings(), PodOverrides(ingress_mode=True))
    text = plan.restore_v4()
    assert "15006" not in text
    assert "-s 169.254.7.127" not in text
    assert "-N ISTIO_PRERT" in nat(text)  # jumped to from PREROUTING, so it must exist
    assert "--set-xmark 0x111/0xfff" in text
    assert "-A ISTIO_OUTPUT -d 169.254.7.127 -p tcp -m tcp -j ACCEPT" in text


@pytest.mark.parametrize(("node", "pod", "captured"), [
    (True, None, True), (False, None, False), (True, False, False), (False, True, True),
])
def test_the_pods_dns_annotation_wins_over_the_nodes_setting(node: bool, pod: bool | None,
                                                             captured: bool):
    text = inpod_plan(AmbientSettings(redirect_dns=node),
                      PodOverrides(dns_capture=pod)).restore_v4()
    assert ("15053" in text) is captured
    assert ("* raw" in text) is captured


def test_virtual_interfaces_are_short_circuited_first_in_prerouting():
    rules = nat(inpod_plan(AmbientSettings(redirect_dns=False),
                           PodOverrides(virtual_interfaces="veth9")).restore_v4())
    prerouting = [rule for rule in rules if rule.startswith("-A ISTIO_PRERT")]
    assert prerouting[:2] == ["-A ISTIO_PRERT -i veth9 -p tcp -j REDIRECT --to-ports 15001",
                              "-A ISTIO_PRERT -i veth9 -p tcp -j RETURN"]


def test_ipv6_rules_use_the_ipv6_localhost_and_probe_address():
    plan = inpod_plan(AmbientSettings(enable_ipv6=True))
    v6 = plan.restore_v6()
    assert v6 is not None
    assert "-A ISTIO_PRERT -s fd16:9254:7127:1337:ffff:ffff:ffff:ffff -p tcp -m tcp -j ACCEPT" \
        in v6
    assert "! -d ::1/128" in v6
    assert "127.0.0.1" not in v6 and "169.254" not in v6
    assert inpod_plan(AmbientSettings(enable_ipv6=False)).restore_v6() is None


def test_replies_to_ztunnel_are_routed_back_through_lo_by_mark():
    assert inpod_plan(AmbientSettings(enable_ipv6=False)).routes == (
        ("-4", "route", "replace", "local", "0.0.0.0/0", "dev", "lo", "table", "100"),
        ("-4", "rule", "add", "fwmark", "0x111/0xfff", "pref", "32764", "lookup", "100"),
    )
    families = {route[0] for route in inpod_plan(AmbientSettings(enable_ipv6=True)).routes}
    assert families == {"-4", "-6"}


def test_host_rule_snats_node_local_sockets_to_enrolled_pods_per_family():
    plan = host_plan(AmbientSettings(enable_ipv6=True, host_probe_snat_v4="169.254.7.1"))
    assert plan.restore_v4() == (
        "* nat\n-N ISTIO_POSTRT\n-I POSTROUTING 1 -j ISTIO_POSTRT\n"
        "-A ISTIO_POSTRT -m owner --socket-exists -p tcp -m set --match-set "
        "istio-inpod-probes-v4 dst -j SNAT --to-source 169.254.7.1\nCOMMIT\n"
    )
    assert "istio-inpod-probes-v6 dst -j SNAT --to-source fd16:" in (plan.restore_v6() or "")
    assert plan.routes == ()


def saved_form(plan: AmbientPlan) -> str:
    """The plan as iptables-save would print it once installed (chains declared with ':')."""
    out = []
    for line in plan.restore_v4().splitlines():
        out.append(f":{line[3:]} - [0:0]" if line.startswith("-N ") else line)
    return "\n".join(out).replace("* ", "*")


def test_the_sidecar_state_checks_and_cleanup_serve_the_ambient_rules_too():
    plan = inpod_plan(AmbientSettings(enable_ipv6=False))
    state = parse_save(saved_form(plan))
    assert mismatches(plan.v4, state) == []
    # The pod's DNS annotation turned off since: the DNS rules are in the way.
    assert mismatches(inpod_plan(AmbientSettings(redirect_dns=False)).v4, state) == [
        "nat ISTIO_OUTPUT: 6 rules, planned 4", "raw: jumps into ISTIO chains: 2, none planned",
        "raw ISTIO_OUTPUT: not planned (1 rules)", "raw ISTIO_PRERT: not planned (1 rules)",
    ]
    cleanup = cleanup_text(state).splitlines()
    assert [line for line in cleanup if line.startswith("-D")] == [
        "-D PREROUTING -j ISTIO_PRERT", "-D OUTPUT -j ISTIO_OUTPUT",  # mangle
        "-D OUTPUT -j ISTIO_OUTPUT", "-D PREROUTING -j ISTIO_PRERT",  # nat
        "-D PREROUTING -j ISTIO_PRERT", "-D OUTPUT -j ISTIO_OUTPUT",  # raw
    ]
    assert cleanup.count("-X ISTIO_PRERT") == cleanup.count("-X ISTIO_OUTPUT") == 3


def test_an_empty_chain_jumped_to_in_ingress_mode_is_planned_not_a_mismatch():
    plan = inpod_plan(AmbientSettings(enable_ipv6=False, redirect_dns=False),
                      PodOverrides(ingress_mode=True))
    state = parse_save(saved_form(plan))
    assert state["nat"].chains == ("ISTIO_OUTPUT", "ISTIO_PRERT")
    assert mismatches(plan.v4, state) == []
