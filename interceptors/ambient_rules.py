"""Ambient mode's capture: the rules Istio's CNI node agent writes for ztunnel (sans-IO).

In ambient mode no proxy runs in the pod. ztunnel, one per node, opens listening sockets
*inside* each ambient pod's network namespace — 15001 (outbound), 15006 (inbound
plaintext), 15008 (inbound HBONE), 15053 (DNS) — and the node agent writes rules in that
namespace sending the pod's traffic to them. ``inpod_plan(settings, overrides)`` gives
those rules; ``host_plan(settings)`` gives the one rule the agent writes in the node's own
namespace. Both come out in the order Istio generates them, so their restore text is byte
for byte Istio's (its CNI goldens are the proof, see tests). Nothing here runs a command;
the texts are built by ``iptables_rules``, as the sidecar planner's are.

How the in-pod rules work. Every socket ztunnel opens in the pod carries the packet mark
1337 (``0x539``), so its own traffic is never captured again:

- nat ``ISTIO_OUTPUT``: TCP leaving the app → 15001; DNS (UDP off ``lo``, TCP not to
  localhost) → 15053 when DNS capture is on; the app talking to itself over ``lo`` and
  replies marked ``0x111`` (below) are let through.
- nat ``ISTIO_PRERT``: TCP arriving for the app → 15006, except to 15008, which ztunnel
  already listens on (HBONE). Virtual interfaces come first: what arrives on one is treated
  as outbound (→ 15001) and leaves the chain.
- mangle: a packet ztunnel sends to the app (mark ``0x539``) marks its connection
  ``0x111``; the app's replies get that mark back, and an ``ip rule`` sends mark ``0x111``
  to table 100, whose only route delivers everything locally via ``lo`` — back to
  ztunnel's transparent socket. That is what lets ztunnel connect to the app with the
  original client's address as source.
- raw (DNS capture): ztunnel's upstream DNS queries and their answers go to conntrack
  zone 1, so they cannot be mistaken for the app's queries on the same 5-tuple.
- Probes: the node's processes (the kubelet's probes) reach pod IPs SNATed to a
  link-local address by the host rule; the in-pod rules let that address bypass ztunnel.
  Ingress mode (a gateway's pod) skips inbound capture and that bypass.
"""

from __future__ import annotations

import attrs

from pilotfish.interceptors.ambient_settings import AmbientSettings, PodOverrides
from pilotfish.interceptors.iptables_rules import FAMILY, Rule, RuleBuilder, restore_text

PRERT = "ISTIO_PRERT"
OUTPUT = "ISTIO_OUTPUT"
POSTRT = "ISTIO_POSTRT"  # host namespace only

OUTBOUND_PORT = "15001"
INBOUND_PLAINTEXT_PORT = "15006"
INBOUND_HBONE_PORT = "15008"
DNS_PORT = "15053"

ZTUNNEL_MARK = "0x539/0xfff"  # 1337: every socket ztunnel opens in the pod
CONN_MARK = "0x111/0xfff"  # connections ztunnel opened to the app: replies go back to it
RESTORE_MASK = "0xffffffff"
ROUTE_TABLE = "100"
RULE_PRIORITY = "32764"
PROBE_IPSET = "istio-inpod-probes"  # pod IPs on this node, -v4 / -v6 (the agent fills it)
LOCALHOST_V4, LOCALHOST_V6 = "127.0.0.1/32", "::1/128"


@attrs.frozen
class AmbientPlan:
    """Rules for one network namespace, per family, and the routing they need."""

    enable_ipv6: bool
    v4: tuple[Rule, ...]
    v6: tuple[Rule, ...]  # empty unless enable_ipv6
    routes: tuple[tuple[str, ...], ...]  # `ip` argument lists: the routing the rules rely on

    def restore_v4(self) -> str:
        return restore_text(self.v4)

    def restore_v6(self) -> str | None:
        return restore_text(self.v6) if self.enable_ipv6 else None

    def dry_run_text(self) -> str:
        """What the agent runs, as Istio's CNI tests record it (one entry a line, no final
        newline): the state dumps of both families it starts from, then the restore input
        of each family it writes."""
        entries = ["iptables-save", "ip6tables-save", self.restore_v4()]
        entries += [self.restore_v6() or ""] if self.enable_ipv6 else []
        return "\n".join(entry.rstrip("\n") for entry in entries)


def inpod_plan(settings: AmbientSettings, overrides: PodOverrides | None = None) -> AmbientPlan:
    """The rules inside an ambient pod's network namespace, and their routing."""
    s, pod = settings, overrides or PodOverrides()
    dns = pod.redirect_dns(s)
    inbound = not pod.ingress_mode
    not_ztunnel = ("-m", "mark", "!", "--mark", ZTUNNEL_MARK)
    b = RuleBuilder()

    # Jumps from the built-in chains into ours (all that removal has to find).
    b.append("mangle", "PREROUTING", "-j", PRERT)
    b.append("mangle", "OUTPUT", "-j", OUTPUT)
    b.append("nat", "OUTPUT", "-j", OUTPUT)
    if dns:
        b.append("raw", "PREROUTING", "-j", PRERT)
        b.append("raw", "OUTPUT", "-j", OUTPUT)
    b.append("nat", "PREROUTING", "-j", PRERT)

    for nic in pod.virtual_interfaces:
        # UDP is left alone: ztunnel cannot proxy arbitrary UDP.
        b.append("nat", PRERT, "-i", nic, "-p", "tcp", "-j", "REDIRECT", "--to-ports",
                 OUTBOUND_PORT)
        b.append("nat", PRERT, "-i", nic, "-p", "tcp", "-j", "RETURN")
    b.append("mangle", PRERT, "-m", "mark", "--mark", ZTUNNEL_MARK, "-j", "CONNMARK",
             "--set-xmark", CONN_MARK)
    if inbound:
        b.append_versioned("nat", PRERT, s.host_probe_snat_v4, s.host_probe_snat_v6,
                           "-s", FAMILY, "-p", "tcp", "-m", "tcp", "-j", "ACCEPT")
    b.append_versioned("nat", OUTPUT, s.host_probe_snat_v4, s.host_probe_snat_v6,
                       "-d", FAMILY, "-p", "tcp", "-m", "tcp", "-j", "ACCEPT")
    if inbound:
        b.append_versioned("nat", PRERT, LOCALHOST_V4, LOCALHOST_V6, "!", "-d", FAMILY,
                           "-p", "tcp", "!", "--dport", INBOUND_HBONE_PORT, *not_ztunnel,
                           "-j", "REDIRECT", "--to-ports", INBOUND_PLAINTEXT_PORT)
    b.append("mangle", OUTPUT, "-m", "connmark", "--mark", CONN_MARK, "-j", "CONNMARK",
             "--restore-mark", "--nfmask", RESTORE_MASK, "--ctmask", RESTORE_MASK)
    if dns:
        b.append("nat", OUTPUT, "!", "-o", "lo", "-p", "udp", *not_ztunnel, "-m", "udp",
                 "--dport", "53", "-j", "REDIRECT", "--to-port", DNS_PORT)
        b.append_versioned("nat", OUTPUT, LOCALHOST_V4, LOCALHOST_V6, "!", "-d", FAMILY,
                           "-p", "tcp", "--dport", "53", *not_ztunnel, "-j", "REDIRECT",
                           "--to-ports", DNS_PORT)
        b.append("raw", OUTPUT, "-p", "udp", "-m", "mark", "--mark", ZTUNNEL_MARK, "-m", "udp",
                 "--dport", "53", "-j", "CT", "--zone", "1")
        b.append("raw", PRERT, "-p", "udp", *not_ztunnel, "-m", "udp", "--sport", "53",
                 "-j", "CT", "--zone", "1")
    b.append("nat", OUTPUT, "-p", "tcp", "-m", "mark", "--mark", CONN_MARK, "-j", "ACCEPT")
    b.append_versioned("nat", OUTPUT, LOCALHOST_V4, LOCALHOST_V6, "!", "-d", FAMILY,
                       "-o", "lo", "-j", "ACCEPT")
    b.append_versioned("nat", OUTPUT, LOCALHOST_V4, LOCALHOST_V6, "!", "-d", FAMILY,
                       "-p", "tcp", *not_ztunnel, "-j", "REDIRECT", "--to-ports", OUTBOUND_PORT)
    return AmbientPlan(enable_ipv6=s.enable_ipv6, v4=tuple(b.v4),
                       v6=tuple(b.v6) if s.enable_ipv6 else (), routes=_inpod_routes(s))


def host_plan(settings: AmbientSettings) -> AmbientPlan:
    """The node namespace's rule: node-local sockets reaching an ambient pod's IP (the
    kubelet's probes) leave SNATed to the probe address the in-pod rules let through.
    Forwarded traffic (kube-proxy's, say) has no local socket and is captured as usual."""
    s = settings
    b = RuleBuilder()
    b.insert("nat", "POSTROUTING", 1, "-j", POSTRT)
    for v4, address in ((True, s.host_probe_snat_v4), (False, s.host_probe_snat_v6)):
        ipset = f"{PROBE_IPSET}-v4" if v4 else f"{PROBE_IPSET}-v6"
        b.append("nat", POSTRT, "-m", "owner", "--socket-exists", "-p", "tcp", "-m", "set",
                 "--match-set", ipset, "dst", "-j", "SNAT", "--to-source", address,
                 v4=v4, v6=not v4)
    return AmbientPlan(enable_ipv6=s.enable_ipv6, v4=tuple(b.v4),
                       v6=tuple(b.v6) if s.enable_ipv6 else (), routes=())


def _inpod_routes(s: AmbientSettings) -> tuple[tuple[str, ...], ...]:
    # The local route first, then the rule that uses it. Istio leaves out IPv6's route when
    # the pod's lo has IPv6 disabled; that is a fact of the namespace, checked when applying.
    routes: list[tuple[str, ...]] = []
    families = (("-4", "0.0.0.0/0"), ("-6", "::/0")) if s.enable_ipv6 else (("-4", "0.0.0.0/0"),)
    for family, default in families:
        routes.append((family, "route", "replace", "local", default, "dev", "lo",
                       "table", ROUTE_TABLE))
    for family, _ in families:
        routes.append((family, "rule", "add", "fwmark", CONN_MARK, "pref", RULE_PRIORITY,
                       "lookup", ROUTE_TABLE))
    return tuple(routes)
