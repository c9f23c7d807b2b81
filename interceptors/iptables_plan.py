"""The capture rules for one pod: ``CaptureSettings`` in, istio-iptables's exact rules out.

Sans-IO: ``plan(settings)`` returns a ``CapturePlan`` holding the IPv4 and IPv6 rule lists
and the routing commands TPROXY needs; nothing here runs a command. The rules come out in
the order istio-iptables generates them, so ``plan.restore_v4()`` is byte for byte the text
Istio feeds ``iptables-restore`` (its dry-run goldens are the proof, see tests).

Order, and why it matters — iptables evaluates top to bottom, and ``-I`` lines land above
earlier ``-A`` lines of the same chain:
 1. excluded interfaces return first (``-c``), 2. reroute-virtual interfaces (``-k``) are
    short-circuited, 3. conntrack-INVALID drop, 4. the three fixed chains (tunnel port
    return, outbound REDIRECT, inbound REDIRECT), 5. inbound capture (``-b``/``-d``),
 6. outbound: port exclusions, the proxy's own inbound-passthrough source, per uid then
    per gid (loop back to inbound, app-to-self over lo, proxy's own traffic), owner
    groups, DNS, localhost, CIDR exclusions, port inclusions, CIDR inclusions,
 7. TPROXY marks and the ``ISTIO_INBOUND`` guards inserted at its top.
"""

from __future__ import annotations

import ipaddress

import attrs

from pilotfish.interceptors.capture_settings import ALL, CaptureSettings
from pilotfish.interceptors.iptables_rules import (
    FAMILY,
    Rule,
    RuleBuilder,
    restore_text,
)

INBOUND = "ISTIO_INBOUND"
OUTPUT = "ISTIO_OUTPUT"
REDIRECT = "ISTIO_REDIRECT"
IN_REDIRECT = "ISTIO_IN_REDIRECT"
DIVERT = "ISTIO_DIVERT"
TPROXY = "ISTIO_TPROXY"
DROP = "ISTIO_DROP"
OUTPUT_DNS = "ISTIO_OUTPUT_DNS"
DNS_PORT = "15053"  # the agent's DNS proxy
OUTBOUND_MARK = "1338"  # TPROXY: the proxy's own connections back to the pod
PASSTHROUGH_V4, PASSTHROUGH_V6 = "127.0.0.6/32", "::6/128"  # the proxy's inbound source
LOOPBACK_V6 = "::1/128"


@attrs.frozen
class CapturePlan:
    settings: CaptureSettings
    v4: tuple[Rule, ...]
    v6: tuple[Rule, ...]  # empty unless settings.enable_ipv6
    routes: tuple[tuple[str, ...], ...]  # `ip` argument lists, run after the rules

    @property
    def enable_ipv6(self) -> bool:
        return self.settings.enable_ipv6

    def restore_v4(self) -> str:
        return restore_text(self.v4)

    def restore_v6(self) -> str | None:
        return restore_text(self.v6) if self.enable_ipv6 else None

    def dry_run_text(self) -> str:
        """What a run does, in istio-iptables's dry-run form: the state dumps taken before
        (to decide whether anything changes) and after (to verify), and the restore input."""
        v6 = self.settings.enable_ipv6
        return "".join([
            "iptables-save\n", "ip6tables-save\n", self.restore_v4(),
            self.restore_v6() or "", "iptables-save\n", "ip6tables-save\n" if v6 else "",
        ])


def plan(settings: CaptureSettings) -> CapturePlan:
    """The rules and routes that capture a pod's traffic as ``settings`` say."""
    s = settings
    b = RuleBuilder()
    lo4 = s.host_ipv4_loopback_cidr
    include4, include6 = (None, None) if s.outbound_ip_ranges_include == ALL else \
        _split_families(s.outbound_ip_ranges_include)
    exclude4, exclude6 = _split_families(s.outbound_ip_ranges_exclude)
    dns = s.dns_capture
    tunnel = str(s.inbound_tunnel_port)

    for nic in s.exclude_interfaces:
        b.append("nat", "PREROUTING", "-i", nic, "-j", "RETURN")
        b.append("nat", "OUTPUT", "-o", nic, "-j", "RETURN")
    if s.tproxy:
        for nic in s.exclude_interfaces:
            b.append("mangle", "PREROUTING", "-i", nic, "-j", "RETURN")
            b.append("mangle", "OUTPUT", "-o", nic, "-j", "RETURN")
    for nic in s.reroute_virtual_interfaces:
        b.insert("nat", "PREROUTING", 1, "-i", nic, "-j", "RETURN")
    if s.drop_invalid:
        b.append("mangle", "PREROUTING", "-m", "conntrack", "--ctstate", "INVALID", "-j", DROP)
        b.append("mangle", DROP, "-j", "DROP")

    b.append("nat", INBOUND, "-p", "tcp", "--dport", tunnel, "-j", "RETURN")
    b.append("nat", REDIRECT, "-p", "tcp", "-j", "REDIRECT", "--to-ports", str(s.proxy_port))
    b.append("nat", IN_REDIRECT, "-p", "tcp", "-j", "REDIRECT", "--to-ports",
             str(s.inbound_capture_port))
    _inbound(b, s)

    b.append("nat", "OUTPUT", "-j", OUTPUT)
    for port in s.outbound_ports_exclude:
        b.append("nat", OUTPUT, "-p", "tcp", "--dport", str(port), "-j", "RETURN")
        b.append("nat", OUTPUT, "-p", "udp", "--dport", str(port), "-j", "RETURN")
    b.append_versioned("nat", OUTPUT, PASSTHROUGH_V4, PASSTHROUGH_V6,
                       "-o", "lo", "-s", FAMILY, "-j", "RETURN")
    # An include range on loopback means the app's own loopback traffic is wanted too.
    app_to_self = not (_has_loopback(include4) or _has_loopback(include6))
    for owner, ids in (("--uid-owner", s.proxy_uid), ("--gid-owner", s.proxy_gid)):
        for id_ in ids:
            # Istio skips port 53 in the loop-back rule for uids only, not for gids.
            not_ports: tuple[str, ...]
            if dns and owner == "--uid-owner":
                not_ports = ("-m", "multiport", "!", "--dports", f"53,{tunnel}")
            else:
                not_ports = ("!", "--dport", tunnel)
            # The proxy calling its own pod through a service VIP leaves over lo: send it
            # back in through inbound capture, so inbound policy applies to it too.
            b.append_versioned("nat", OUTPUT, lo4, LOOPBACK_V6, "-o", "lo", "!", "-d", FAMILY,
                               "-p", "tcp", *not_ports, "-m", "owner", owner, id_,
                               "-j", IN_REDIRECT)
            if app_to_self:  # the app calling its own pod IP over lo is left alone
                # (with DNS capture, except TCP to port 53: a local resolver is captured)
                not_dns = ("-p", "tcp", "!", "--dport", "53") if dns else ()
                b.append("nat", OUTPUT, "-o", "lo", *not_dns, "-m", "owner", "!", owner, id_,
                         "-j", "RETURN")
            # The proxy's own traffic, TCP and UDP, is never captured: it would loop.
            b.append("nat", OUTPUT, "-m", "owner", owner, id_, "-j", "RETURN")
    _owner_groups(b, s)
    if dns:
        _dns(b, s)
    b.append_versioned("nat", OUTPUT, lo4, LOOPBACK_V6, "-d", FAMILY, "-j", "RETURN")
    for cidr in exclude4:
        b.append("nat", OUTPUT, "-d", cidr, "-j", "RETURN", v6=False)
    for cidr in exclude6:
        b.append("nat", OUTPUT, "-d", cidr, "-j", "RETURN", v4=False)
    for port in s.outbound_ports_include:
        b.append("nat", OUTPUT, "-p", "tcp", "--dport", str(port), "-j", REDIRECT)
    _outbound_include(b, s, include4, v4=True)
    _outbound_include(b, s, include6, v4=False)
    if s.tproxy:
        _tproxy_marks(b, s)
    return CapturePlan(settings=s, v4=tuple(b.v4),
                       v6=tuple(b.v6) if s.enable_ipv6 else (), routes=_routes(s))


def _inbound(b: RuleBuilder, s: CaptureSettings) -> None:
    if not s.inbound_ports_include:
        return
    table = "mangle" if s.tproxy else "nat"
    if s.tproxy:
        b.append("mangle", DIVERT, "-j", "MARK", "--set-mark", s.inbound_tproxy_mark)
        b.append("mangle", DIVERT, "-j", "ACCEPT")
        b.append_versioned("mangle", TPROXY, s.host_ipv4_loopback_cidr, LOOPBACK_V6,
                           "!", "-d", FAMILY, "-p", "tcp", "-j", "TPROXY", "--tproxy-mark",
                           f"{s.inbound_tproxy_mark}/0xffffffff", "--on-port",
                           str(s.inbound_capture_port))
    b.append(table, "PREROUTING", "-p", "tcp", "-j", INBOUND)
    if s.inbound_ports_include == ALL:
        for port in s.inbound_ports_exclude:
            b.append(table, INBOUND, "-p", "tcp", "--dport", str(port), "-j", "RETURN")
        ports: list[tuple[str, ...]] = [()]
    else:
        ports = [("--dport", str(port)) for port in s.inbound_ports_include]
    for dport in ports:
        if s.tproxy:
            # Packets of established connections already have a socket: route them to lo.
            b.append("mangle", INBOUND, "-p", "tcp", *dport, "-m", "conntrack", "--ctstate",
                     "RELATED,ESTABLISHED", "-j", DIVERT)
            b.append("mangle", INBOUND, "-p", "tcp", *dport, "-j", TPROXY)
        else:
            b.append("nat", INBOUND, "-p", "tcp", *dport, "-j", IN_REDIRECT)


def _owner_groups(b: RuleBuilder, s: CaptureSettings) -> None:
    if s.owner_groups_include == ALL:
        for group in s.owner_groups_exclude:
            b.append("nat", OUTPUT, "-m", "owner", "--gid-owner", group, "-j", "RETURN")
        return
    # Capture only these groups: one rule returns whatever belongs to none of them
    # (and with an empty list, everything: nobody is captured).
    matches = [m for group in s.owner_groups_include
               for m in ("-m", "owner", "!", "--gid-owner", group)]
    b.append("nat", OUTPUT, *matches, "-j", "RETURN")


def _dns(b: RuleBuilder, s: CaptureSettings) -> None:
    # nat: send port 53 to the agent's DNS proxy; raw: conntrack zones keep the proxy's
    # upstream queries (zone 1) apart from the app's queries it answers (zone 2), so the
    # two UDP flows on the same 5-tuple cannot be confused (istio/istio#33469).
    all_dns = s.capture_all_dns
    b.append("raw", "OUTPUT", "-j", OUTPUT_DNS)
    if all_dns or s.dns_servers_v4:
        b.append("nat", OUTPUT, "-j", OUTPUT_DNS, v6=False)
    if all_dns or s.dns_servers_v6:
        b.append("nat", OUTPUT, "-j", OUTPUT_DNS, v4=False)
    for proto, to_ports in (("tcp", "--to-ports"), ("udp", "--to-port")):
        if all_dns:
            b.append("nat", OUTPUT_DNS, "-p", proto, "--dport", "53", "-j", "REDIRECT",
                     to_ports, DNS_PORT)
            continue
        for server, v4 in _servers(s):
            b.append("nat", OUTPUT_DNS, "-p", proto, "--dport", "53", "-d", server,
                     "-j", "REDIRECT", to_ports, DNS_PORT, v4=v4, v6=not v4)
    for owner, ids in (("--uid-owner", s.proxy_uid), ("--gid-owner", s.proxy_gid)):
        for id_ in ids:
            b.append("raw", OUTPUT_DNS, "-p", "udp", "--dport", "53", "-m", "owner", owner, id_,
                     "-j", "CT", "--zone", "1")
            b.append("raw", OUTPUT_DNS, "-p", "udp", "--sport", DNS_PORT, "-m", "owner", owner,
                     id_, "-j", "CT", "--zone", "2")
    if all_dns:
        b.append("raw", "PREROUTING", "-j", INBOUND)
        b.append("raw", OUTPUT_DNS, "-p", "udp", "--dport", "53", "-j", "CT", "--zone", "2")
        b.append("raw", INBOUND, "-p", "udp", "--sport", "53", "-j", "CT", "--zone", "1")
        return
    for family_v4 in (True, False):
        servers = [server for server, v4 in _servers(s) if v4 == family_v4]
        if servers:
            b.append("raw", "PREROUTING", "-j", INBOUND, v4=family_v4, v6=not family_v4)
        for server in servers:
            b.append("raw", OUTPUT_DNS, "-p", "udp", "--dport", "53", "-d", server, "-j", "CT",
                     "--zone", "2", v4=family_v4, v6=not family_v4)
            b.append("raw", INBOUND, "-p", "udp", "--sport", "53", "-s", server, "-j", "CT",
                     "--zone", "1", v4=family_v4, v6=not family_v4)


def _servers(s: CaptureSettings) -> list[tuple[str, bool]]:
    return [(f"{a}/32", True) for a in s.dns_servers_v4] + \
        [(f"{a}/128", False) for a in s.dns_servers_v6]


def _outbound_include(b: RuleBuilder, s: CaptureSettings, cidrs: list[str] | None,
                      v4: bool) -> None:
    if cidrs is None:  # "*": everything left goes to the proxy
        b.append("nat", OUTPUT, "-j", REDIRECT, v4=v4, v6=not v4)
        for nic in s.reroute_virtual_interfaces:
            b.insert("nat", "PREROUTING", 1, "-i", nic, "-j", REDIRECT, v4=v4, v6=not v4)
        return
    for cidr in cidrs:
        for nic in s.reroute_virtual_interfaces:
            b.insert("nat", "PREROUTING", 1, "-i", nic, "-d", cidr, "-j", REDIRECT,
                     v4=v4, v6=not v4)
        b.append("nat", OUTPUT, "-d", cidr, "-j", REDIRECT, v4=v4, v6=not v4)


def _tproxy_marks(b: RuleBuilder, s: CaptureSettings) -> None:
    mark = s.inbound_tproxy_mark
    # The proxy's original_src filter marks its connections to the app; keep the mark on
    # the connection so replies are routed back through lo to the proxy.
    b.append("mangle", "PREROUTING", "-p", "tcp", "-m", "mark", "--mark", mark,
             "-j", "CONNMARK", "--save-mark")
    b.append("mangle", "OUTPUT", "-p", "tcp", "-o", "lo", "-m", "mark", "--mark", mark,
             "-j", "RETURN")
    for owner, ids in (("--uid-owner", s.proxy_uid), ("--gid-owner", s.proxy_gid)):
        for id_ in ids:
            b.append_versioned("mangle", "OUTPUT", s.host_ipv4_loopback_cidr, LOOPBACK_V6,
                               "!", "-d", FAMILY, "-p", "tcp", "-o", "lo", "-m", "owner",
                               owner, id_, "-j", "MARK", "--set-mark", OUTBOUND_MARK)
    b.append("mangle", "OUTPUT", "-p", "tcp", "-m", "connmark", "--mark", mark,
             "-j", "CONNMARK", "--restore-mark")
    b.insert("mangle", INBOUND, 1, "-p", "tcp", "-m", "mark", "--mark", mark, "-j", "RETURN")
    b.insert("mangle", INBOUND, 2, "-p", "tcp", "-s", PASSTHROUGH_V4, "-i", "lo",
             "-j", "RETURN", v6=False)
    b.insert("mangle", INBOUND, 2, "-p", "tcp", "-s", PASSTHROUGH_V6, "-i", "lo",
             "-j", "RETURN", v4=False)
    b.insert("mangle", INBOUND, 3, "-p", "tcp", "-i", "lo", "-m", "mark", "!", "--mark",
             OUTBOUND_MARK, "-j", "RETURN")


def _routes(s: CaptureSettings) -> tuple[tuple[str, ...], ...]:
    routes: list[tuple[str, ...]] = []
    if s.enable_ipv6:
        # IPv6 loopback is ::1/128 only; the proxy needs ::6 bound on lo as its source.
        routes.append(("-6", "addr", "add", "::6/128", "dev", "lo"))
    if s.tproxy and s.inbound_ports_include:
        table, mark = s.inbound_tproxy_route_table, s.inbound_tproxy_mark
        for family, default in (("-4", "0.0.0.0/0"), ("-6", "::/0")):
            if family == "-6" and not s.enable_ipv6:
                continue
            routes.append((family, "rule", "add", "fwmark", mark, "lookup", table))
            routes.append((family, "route", "add", "local", default, "dev", "lo",
                           "table", table))
    return tuple(routes)


def _split_families(cidrs: tuple[str, ...]) -> tuple[list[str], list[str]]:
    v4 = [c for c in cidrs if ipaddress.ip_interface(c).version == 4]
    v6 = [c for c in cidrs if ipaddress.ip_interface(c).version == 6]
    return v4, v6


def _has_loopback(cidrs: list[str] | None) -> bool:
    return any(ipaddress.ip_interface(c).ip.is_loopback for c in cidrs or ())

