"""The iptables interceptor in a real network namespace: apply, re-apply, repair, remove.

Runs as root (CI does): it creates a network namespace per test and deletes it afterwards,
even when the test fails. The same IO installs ambient's in-pod rules (``ambient_rules``);
nothing listens on ztunnel's ports here, so those tests prove the kernel takes Istio's rules
and routing as generated, not traffic. The node rule (``host_plan``) needs the agent's
ipset, which these machines lack.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotfish.core.interceptor import InterceptorError
from pilotfish.interceptors import iptables
from pilotfish.interceptors.ambient_rules import inpod_plan
from pilotfish.interceptors.ambient_settings import AmbientSettings, PodOverrides
from pilotfish.interceptors.capture_settings import CaptureSettings
from pilotfish.interceptors.iptables_plan import plan
from pilotfish.interceptors.netns_exec import Netns

PILOTFISH = str(Path(sys.executable).parent / "pilotfish")
ISTIO_INIT = ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*",
              "-b", "*", "-d", "15090,15021,15020"]


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"pf-cap-{uuid.uuid4().hex[:8]}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)
        shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)


def saved(name: str, tool: str = "iptables-save", *args: str) -> str:
    """iptables-save without its timestamps and counters, so two dumps compare equal."""
    text = sh("ip", "netns", "exec", name, tool, *args)
    lines = [re.sub(r"\[\d+:\d+\]", "[0:0]", line) for line in text.splitlines()
             if not line.startswith("#")]
    return "\n".join(lines)


def pilotfish_iptables(name: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PILOTFISH, "iptables", "--netns", name, *argv], capture_output=True,
                          text=True, check=False, timeout=60)


def test_default_sidecar_capture_applies_once_and_cleans_up(netns: str):
    first = pilotfish_iptables(netns, *ISTIO_INIT)
    assert first.returncode == 0, first.stderr
    assert f"capture rules installed in netns {netns}" in first.stderr
    nat = saved(netns, "iptables-save", "-t", "nat")
    for chain in ("ISTIO_INBOUND", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT", "ISTIO_REDIRECT"):
        assert f":{chain} - [0:0]" in nat
    assert "-A PREROUTING -p tcp -j ISTIO_INBOUND" in nat
    assert "-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN" in nat
    assert "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" in nat

    before = saved(netns)
    again = pilotfish_iptables(netns, *ISTIO_INIT)
    assert again.returncode == 0, again.stderr
    assert "already in place" in again.stderr
    assert saved(netns) == before

    removed = pilotfish_iptables(netns, *ISTIO_INIT, "--cleanup")
    assert removed.returncode == 0, removed.stderr
    assert "ISTIO" not in saved(netns)
    assert "ISTIO" not in saved(netns, "ip6tables-save")


def test_changed_settings_replace_the_old_rules_and_remove_takes_everything(netns: str):
    where = Netns(netns)
    assert iptables.apply(plan(CaptureSettings.sidecar()), where)
    rich = plan(CaptureSettings.sidecar(
        inbound_interception_mode="TPROXY", enable_ipv6=True, redirect_dns=True,
        capture_all_dns=True, drop_invalid=True, exclude_interfaces="eth7"))
    assert iptables.apply(rich, where)
    assert iptables.differences(rich, where) == []
    assert not iptables.apply(rich, where)
    assert "ISTIO_TPROXY" in saved(netns, "ip6tables-save", "-t", "mangle")
    assert "fwmark 0x539 lookup 133" in sh("ip", "-n", netns, "rule")
    assert "-j DROP" not in saved(netns, "iptables-save", "-t", "filter")  # guardrails gone

    assert iptables.remove(where, rich)
    assert "ISTIO" not in saved(netns) and "ISTIO" not in saved(netns, "ip6tables-save")
    assert "eth7" not in saved(netns)
    assert "lookup 133" not in sh("ip", "-n", netns, "rule")
    assert not iptables.remove(where, rich)  # nothing left is not an error


def test_a_duplicated_jump_is_found_and_repaired(netns: str):
    where = Netns(netns)
    capture = plan(CaptureSettings.sidecar())
    iptables.apply(capture, where)
    sh("ip", "netns", "exec", netns, "iptables", "-t", "nat", "-A", "OUTPUT", "-j", "ISTIO_OUTPUT")
    sh("ip", "netns", "exec", netns, "iptables", "-t", "nat", "-D", "ISTIO_OUTPUT",
       "-j", "ISTIO_REDIRECT")
    problems = iptables.differences(capture, where)
    assert "IPv4 nat: jumps into ISTIO chains: 3 rules, planned 2" in problems
    assert "IPv4 nat ISTIO_OUTPUT: 8 rules, planned 9" in problems
    assert iptables.apply(capture, where)
    assert iptables.differences(capture, where) == []
    assert saved(netns, "iptables-save", "-t", "nat").count("-j ISTIO_OUTPUT") == 1


def test_a_rejected_rule_is_reported_with_the_netns_and_the_line(netns: str):
    capture = plan(CaptureSettings.sidecar(proxy_uid="pilotfish-no-such-user"))
    with pytest.raises(InterceptorError) as caught:
        iptables.apply(capture, Netns(netns))
    message = str(caught.value)
    assert message.startswith(f"netns {netns}: installing capture rules: iptables-restore "
                              "failed at line ")
    assert "--uid-owner pilotfish-no-such-user" in message
    assert "ISTIO" not in saved(netns)  # restore is atomic: nothing half-installed


def test_ipv6_and_dns_servers_are_found_in_the_namespace(netns: str):
    sh("ip", "-n", netns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    sh("ip", "-n", netns, "addr", "add", "fd00:250::5/64", "dev", "v0")
    folder = Path("/etc/netns") / netns
    folder.mkdir(parents=True)
    (folder / "resolv.conf").write_text("nameserver 10.96.0.10\nsearch svc.cluster.local\n")
    done = pilotfish_iptables(netns, *ISTIO_INIT, "--redirect-dns")
    assert done.returncode == 0, done.stderr
    v6 = saved(netns, "ip6tables-save", "-t", "nat")
    assert "-A ISTIO_OUTPUT -s ::6/128 -o lo -j RETURN" in v6
    assert "-d 10.96.0.10/32" in saved(netns, "iptables-save", "-t", "nat")
    assert "inet6 ::6/128" in sh("ip", "-n", netns, "addr", "show", "dev", "lo")


def test_default_in_pod_rules_install_once_with_their_routing_and_come_out(netns: str):
    where = Netns(netns)
    capture = inpod_plan(AmbientSettings())
    assert iptables.apply(capture, where)
    nat = saved(netns, "iptables-save", "-t", "nat")
    assert "-j REDIRECT --to-ports 15006" in nat and "-j REDIRECT --to-ports 15001" in nat
    assert "--dport 53 -j REDIRECT --to-ports 15053" in nat
    assert "-j CT --zone 1" in saved(netns, "iptables-save", "-t", "raw")
    assert "-d ::1/128" in saved(netns, "ip6tables-save", "-t", "nat")
    assert "32764:\tfrom all fwmark 0x111/0xfff lookup 100" in sh("ip", "-n", netns, "rule")
    assert "local default dev lo" in sh("ip", "-n", netns, "route", "show", "table", "100")

    before = saved(netns)
    assert not iptables.apply(capture, where)  # in place: nothing is run
    assert saved(netns) == before
    assert sh("ip", "-n", netns, "rule").count("lookup 100") == 1

    assert iptables.remove(where, capture)
    assert "ISTIO" not in saved(netns) and "ISTIO" not in saved(netns, "ip6tables-save")
    assert "lookup 100" not in sh("ip", "-n", netns, "rule")
    routes = subprocess.run(["ip", "-n", netns, "route", "show", "table", "100"],
                            capture_output=True, text=True, check=False).stdout
    assert routes.strip() == ""


def test_a_pod_turned_to_ingress_mode_with_virtual_interfaces_gets_its_rules_replaced(netns: str):
    where = Netns(netns)
    assert iptables.apply(inpod_plan(AmbientSettings(enable_ipv6=False)), where)
    ingress = inpod_plan(AmbientSettings(enable_ipv6=False),
                         PodOverrides(ingress_mode=True, dns_capture=False,
                                      virtual_interfaces="veth9"))
    assert iptables.differences(ingress, where)
    assert iptables.apply(ingress, where)
    assert iptables.differences(ingress, where) == []
    nat = saved(netns, "iptables-save", "-t", "nat")
    assert "15006" not in nat and ":ISTIO_PRERT - [0:0]" in nat
    assert "-A ISTIO_PRERT -i veth9 -p tcp -j REDIRECT --to-ports 15001" in nat
    assert "ISTIO" not in saved(netns, "iptables-save", "-t", "raw")
    assert "-j DROP" not in saved(netns, "iptables-save", "-t", "filter")  # guardrails gone
    assert iptables.remove(where, ingress)
    assert "ISTIO" not in saved(netns)
