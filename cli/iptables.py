"""``pilotfish iptables``: istio-iptables's command line, for a pod's network namespace.

Same short and long flags as istio-iptables; a flag left out falls back to the environment
variable istio-iptables reads (the long name upper-cased, ``-`` → ``_``, e.g.
``ISTIO_INBOUND_PORTS``; plus Istio's aliases ``ISTIO_META_DNS_CAPTURE``, ``INVALID_DROP``,
``ISTIO_DUAL_STACK``, ``INBOUND_INTERCEPTION_MODE``). pilotfish additions: ``--netns``,
``--dns-servers``, ``--ipv6 auto|on|off``, and owner-group and loopback-CIDR flags for what
Istio only takes from the environment. The injected sidecar's capture is
``pilotfish iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -b '*' -d 15090,15021,15020``.
"""

from __future__ import annotations

import argparse
import os
import pwd
import sys
from typing import Any, TextIO

from pilotfish.core.interceptor import InterceptorError
from pilotfish.interceptors import iptables
from pilotfish.interceptors.capture_settings import CaptureSettings, SettingsError, split_list
from pilotfish.interceptors.iptables_plan import plan
from pilotfish.interceptors.netns_exec import Netns

# (short, long, help); the environment fallback is derived from the long name.
_VALUE_FLAGS = [
    ("-p", "--envoy-port", "port the outbound TCP traffic goes to (default 15001)"),
    ("-z", "--inbound-capture-port", "port the inbound TCP traffic goes to (default 15006)"),
    ("-e", "--inbound-tunnel-port", "HBONE port, never captured (default 15008)"),
    ("-u", "--proxy-uid", "uids whose traffic is not captured: the proxy's (default: the "
     "uid of $ENVOY_USER, istio-proxy, else 1337)"),
    ("-g", "--proxy-gid", "gids whose traffic is not captured (default: the uids)"),
    ("-m", "--istio-inbound-interception-mode", "REDIRECT (default) or TPROXY"),
    ("-b", "--istio-inbound-ports", "inbound ports to capture: '*' for all, empty for none"),
    ("-d", "--istio-local-exclude-ports", "inbound ports not captured (with -b '*')"),
    ("-c", "--istio-exclude-interfaces", "interfaces whose traffic is never captured"),
    ("-i", "--istio-service-cidr", "outbound CIDRs to capture: '*' for all, empty for none"),
    ("-x", "--istio-service-exclude-cidr", "outbound CIDRs not captured"),
    ("-q", "--istio-outbound-ports", "outbound ports always captured"),
    ("-o", "--istio-local-outbound-ports-exclude", "outbound ports never captured"),
    ("-k", "--kube-virt-interfaces", "interfaces whose inbound traffic counts as outbound"),
    ("-t", "--istio-inbound-tproxy-mark", "TPROXY packet mark (default 1337)"),
    ("-r", "--istio-inbound-tproxy-route-table", "TPROXY route table (default 133)"),
    (None, "--include-outbound-owner-groups", "capture only these groups' traffic "
     "(default '*', env ISTIO_OUTBOUND_OWNER_GROUPS)"),
    (None, "--exclude-outbound-owner-groups", "never capture these groups' traffic "
     "(env ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE)"),
    (None, "--host-ipv4-loopback-cidr", "the 'localhost' range (default 127.0.0.1/32, "
     "env ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR)"),
    (None, "--dns-servers", "DNS servers to capture with --redirect-dns (default: the "
     "nameservers in the namespace's resolv.conf)"),
]
_BOOL_FLAGS = [
    ("-n", "--dry-run", "print what would run, in istio-iptables's dry-run form; change "
     "nothing"),
    (None, "--redirect-dns", "capture DNS (port 53) to the agent on 15053"),
    (None, "--capture-all-dns", "with --redirect-dns: all port-53 traffic, not only to the "
     "resolv.conf servers"),
    (None, "--drop-invalid", "drop packets conntrack marks INVALID"),
    (None, "--dual-stack", "with --ipv6 auto: IPv6 rules if any address is IPv6"),
    (None, "--cleanup-only", "remove the capture rules instead of installing them"),
]
_ENV = {  # flag dest → environment variables, first found wins
    "envoy_port": [],  # istio-iptables reads no variable for -p
    "istio_inbound_interception_mode": ["ISTIO_INBOUND_INTERCEPTION_MODE",
                                        "INBOUND_INTERCEPTION_MODE"],
    "include_outbound_owner_groups": ["ISTIO_OUTBOUND_OWNER_GROUPS"],
    "exclude_outbound_owner_groups": ["ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE"],
    "host_ipv4_loopback_cidr": ["ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR"],
    "redirect_dns": ["REDIRECT_DNS", "ISTIO_META_DNS_CAPTURE"],
    "drop_invalid": ["DROP_INVALID", "INVALID_DROP"],
    "dual_stack": ["DUAL_STACK", "ISTIO_DUAL_STACK"],
    "ipv6": ["ENABLE_INBOUND_IPV6"],
}


# CaptureSettings field → the flag that sets it, so errors name what the user typed.
_FLAG_OF = {
    "proxy_port": "-p/--envoy-port", "inbound_capture_port": "-z/--inbound-capture-port",
    "inbound_tunnel_port": "-e/--inbound-tunnel-port", "proxy_uid": "-u/--proxy-uid",
    "proxy_gid": "-g/--proxy-gid",
    "inbound_interception_mode": "-m/--istio-inbound-interception-mode",
    "inbound_ports_include": "-b/--istio-inbound-ports",
    "inbound_ports_exclude": "-d/--istio-local-exclude-ports",
    "exclude_interfaces": "-c/--istio-exclude-interfaces",
    "outbound_ip_ranges_include": "-i/--istio-service-cidr",
    "outbound_ip_ranges_exclude": "-x/--istio-service-exclude-cidr",
    "outbound_ports_include": "-q/--istio-outbound-ports",
    "outbound_ports_exclude": "-o/--istio-local-outbound-ports-exclude",
    "reroute_virtual_interfaces": "-k/--kube-virt-interfaces",
    "inbound_tproxy_mark": "-t/--istio-inbound-tproxy-mark",
    "inbound_tproxy_route_table": "-r/--istio-inbound-tproxy-route-table",
    "owner_groups_include": "--include-outbound-owner-groups",
    "owner_groups_exclude": "--exclude-outbound-owner-groups",
    "host_ipv4_loopback_cidr": "--host-ipv4-loopback-cidr",
    "dns_servers_v4": "--dns-servers", "dns_servers_v6": "--dns-servers",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Capture a pod's traffic into its proxy with istio-iptables's "
                          "rules (iptables-restore inside the pod's network namespace).")
    for short, long, text in _VALUE_FLAGS:
        names = [n for n in (short, long) if n]
        parser.add_argument(*names, default=None, metavar="VALUE", help=text)
    for short, long, text in _BOOL_FLAGS:
        names = [n for n in (short, long) if n]
        parser.add_argument(*names, action="store_const", const=True, default=None, help=text)
    parser.add_argument("--cleanup", dest="cleanup_only", action="store_const", const=True,
                        help="same as --cleanup-only")
    parser.add_argument("--netns", "--network-namespace", dest="netns", default=None,
                        help="network namespace: a name from `ip netns` or a path "
                        "(default: this process's own)")
    parser.add_argument("--ipv6", choices=["auto", "on", "off"], default=None,
                        help="IPv6 rules too: auto (default) follows the namespace's first "
                        "address, as istio-iptables does (env ENABLE_INBOUND_IPV6)")


def _env_names(dest: str) -> list[str]:
    return _ENV.get(dest, [dest.upper()])


def _value(args: argparse.Namespace, dest: str, environ: dict[str, str]) -> Any:
    value = getattr(args, dest)
    if value is not None:
        return value
    for name in _env_names(dest):
        if name in environ:
            return environ[name]
    return None


def _flag(args: argparse.Namespace, dest: str, environ: dict[str, str]) -> bool:
    value = _value(args, dest, environ)
    return value is True or (isinstance(value, str) and value.strip().lower() in
                             ("1", "t", "true", "yes", "on"))


def settings_from(args: argparse.Namespace, environ: dict[str, str],
                  netns: Netns | None) -> CaptureSettings:
    """The capture settings the command line (and environment) asks for."""
    def v(dest: str, default: Any = "") -> Any:
        found = _value(args, dest, environ)
        return default if found is None else found

    uid = v("proxy_uid") or _default_uid(environ)
    redirect_dns, capture_all = _flag(args, "redirect_dns", environ), \
        _flag(args, "capture_all_dns", environ)
    servers: list[str] = []
    if redirect_dns and not capture_all:
        servers = split_list(v("dns_servers")) or _nameservers(netns)
    return CaptureSettings(
        proxy_port=v("envoy_port", 15001), inbound_capture_port=v("inbound_capture_port", 15006),
        inbound_tunnel_port=v("inbound_tunnel_port", 15008), proxy_uid=uid,
        proxy_gid=v("proxy_gid") or uid,
        inbound_interception_mode=v("istio_inbound_interception_mode"),
        inbound_tproxy_mark=v("istio_inbound_tproxy_mark", "1337"),
        inbound_tproxy_route_table=v("istio_inbound_tproxy_route_table", "133"),
        inbound_ports_include=v("istio_inbound_ports"),
        inbound_ports_exclude=v("istio_local_exclude_ports"),
        exclude_interfaces=v("istio_exclude_interfaces"),
        outbound_ip_ranges_include=v("istio_service_cidr"),
        outbound_ip_ranges_exclude=v("istio_service_exclude_cidr"),
        outbound_ports_include=v("istio_outbound_ports"),
        outbound_ports_exclude=v("istio_local_outbound_ports_exclude"),
        reroute_virtual_interfaces=v("kube_virt_interfaces"),
        owner_groups_include=v("include_outbound_owner_groups", "*"),
        owner_groups_exclude=v("exclude_outbound_owner_groups"),
        host_ipv4_loopback_cidr=v("host_ipv4_loopback_cidr", "127.0.0.1/32"),
        redirect_dns=redirect_dns, capture_all_dns=capture_all,
        dns_servers_v4=[s for s in servers if ":" not in s],
        dns_servers_v6=[s for s in servers if ":" in s],
        drop_invalid=_flag(args, "drop_invalid", environ),
        enable_ipv6=_ipv6(args, environ, netns),
    )


def _default_uid(environ: dict[str, str]) -> str:
    try:
        return str(pwd.getpwnam(environ.get("ENVOY_USER", "istio-proxy")).pw_uid)
    except KeyError:
        return "1337"


def _nameservers(netns: Netns | None) -> list[str]:
    path = (netns or Netns(None)).resolv_conf()
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise SettingsError(f"--redirect-dns: cannot read {path}: {exc.strerror}") from None
    return [line.split()[1] for line in lines
            if line.startswith("nameserver") and len(line.split()) > 1]


def _ipv6(args: argparse.Namespace, environ: dict[str, str], netns: Netns | None) -> bool:
    choice = _value(args, "ipv6", environ)
    if isinstance(choice, str) and choice.lower() in ("on", "true", "1"):
        return True
    if isinstance(choice, str) and choice.lower() in ("off", "false", "0"):
        return False
    addresses = (netns or Netns(None)).addresses()
    if _flag(args, "dual_stack", environ):
        return any(":" in a for a in addresses)
    return bool(addresses) and ":" in addresses[0]


def main(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
         environ: dict[str, str] | None = None) -> int:
    env = dict(os.environ if environ is None else environ)
    try:
        netns = Netns(args.netns) if args.netns else None
        capture = plan(settings_from(args, env, netns))
    except (SettingsError, InterceptorError) as exc:
        message = str(exc)
        field = message.split(":", 1)[0]
        if field in _FLAG_OF:
            message = _FLAG_OF[field] + message[len(field):]
        print(f"pilotfish iptables: {message}", file=err)
        return 2
    if _flag(args, "dry_run", env):
        out.write(capture.dry_run_text())
        return 0
    where = netns or Netns(None)
    try:
        if _flag(args, "cleanup_only", env):
            found = iptables.remove(where, capture)
            print(f"capture rules removed from {where}" if found
                  else f"no capture rules in {where}", file=err)
        elif iptables.apply(capture, where):
            print(f"capture rules installed in {where}", file=err)
        else:
            print(f"capture rules already in place in {where}; nothing changed", file=err)
    except InterceptorError as exc:
        print(f"pilotfish iptables: {exc}", file=err)
        return 1
    return 0
