"""``pilotfish iptables``: istio-iptables's flags; ``--dry-run`` prints the golden form."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from pilotfish.cli import iptables as iptables_cli

ISTIO_INIT = ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*",
              "-b", "*", "-d", "15090,15021,15020"]


def run(*argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="pilotfish iptables")
    iptables_cli.add_arguments(parser)
    args = parser.parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    code = iptables_cli.main(args, out=out, err=err, environ=environ or {})
    return code, out.getvalue(), err.getvalue()


@pytest.mark.corpus
@pytest.mark.parametrize(("golden", "argv"), [
    ("inbound-ports-include", ["-u", "1337", "-b", "32000,31000", "--ipv6", "off"]),
    ("tproxy", ["-m", "TPROXY", "-b", "*", "-x", "1.1.0.0/16", "-i", "9.9.0.0/16",
                "--redirect-dns", "--dns-servers", "127.0.0.53", "-u", "1337", "-g", "1337",
                "-c", "not-istio-nic", "--ipv6", "on", "--dry-run"]),
    ("dns-uid-gid", ["--redirect-dns", "--dns-servers", "127.0.0.53,::127.0.0.53",
                     "-g", "1,2", "-u", "3,4", "--ipv6", "on"]),
    ("ipv6-virt-interfaces", ["-u", "1337", "-b", "4000,5000", "-k", "eth0,eth1",
                              "--ipv6", "on"]),
    ("outbound-owner-groups", ["-u", "1337", "--include-outbound-owner-groups", "java,202",
                               "--ipv6", "off"]),
    ("drop-invalid", ["-u", "1337", "--drop-invalid", "--ipv6", "off"]),
])
def test_dry_run_prints_the_istio_iptables_golden(corpus: Path, golden: str, argv: list[str]):
    code, out, err = run("-n", *argv)
    assert (code, err) == (0, "")
    assert out == (corpus / "iptables-golden" / f"{golden}.golden").read_text()


@pytest.mark.corpus
def test_flags_fall_back_to_istio_iptables_environment_variables(corpus: Path):
    environ = {"ISTIO_INBOUND_PORTS": "32000,31000", "PROXY_UID": "1337",
               "ENABLE_INBOUND_IPV6": "false", "DRY_RUN": "true"}
    code, out, _ = run(environ=environ)
    assert code == 0
    assert out == (corpus / "iptables-golden" / "inbound-ports-include.golden").read_text()
    environ = {"ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE": "888,ftp", "PROXY_UID": "1337",
               "ENABLE_INBOUND_IPV6": "false", "INVALID_DROP": "false"}
    code, out, _ = run("-n", environ=environ)
    assert out == (corpus / "iptables-golden" / "outbound-owner-groups-exclude.golden").read_text()


def test_the_default_sidecar_capture_is_expressible():
    code, out, _ = run("-n", *ISTIO_INIT, "--ipv6", "off")
    assert code == 0
    assert "-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN\n" in out
    assert out.endswith("-A ISTIO_OUTPUT -j ISTIO_REDIRECT\nCOMMIT\niptables-save\n")


def test_the_command_line_beats_the_environment():
    code, out, _ = run("-n", "-b", "", "-u", "7", "--ipv6", "off",
                       environ={"ISTIO_INBOUND_PORTS": "*", "PROXY_UID": "9"})
    assert code == 0
    assert "PREROUTING" not in out and "--uid-owner 7" in out and "--uid-owner 9" not in out


def test_dns_capture_uses_the_given_servers_per_family():
    code, out, _ = run("-n", "-u", "1337", "--redirect-dns", "--dns-servers",
                       "10.96.0.10,fd00::10", "--ipv6", "on")
    assert code == 0
    assert "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 10.96.0.10/32 -j REDIRECT --to-port 15053" \
        in out
    assert "-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -d fd00::10/128 -j REDIRECT --to-ports 15053" \
        in out


@pytest.mark.parametrize(("argv", "message"), [
    (["-b", "80,http"], "-b/--istio-inbound-ports: 'http' is not a port"),
    (["-x", "*"], "-x/--istio-service-exclude-cidr: '*' is not allowed"),
    (["-m", "NAT"], "-m/--istio-inbound-interception-mode: expected REDIRECT or TPROXY"),
    (["--netns", "pilotfish-no-such-netns"], "netns pilotfish-no-such-netns: no such network"),
])
def test_bad_arguments_exit_2_naming_the_flag(argv: list[str], message: str):
    code, out, err = run("-n", "--ipv6", "off", *argv)
    assert (code, out) == (2, "")
    assert err.startswith(f"pilotfish iptables: {message}")
