"""The node side of ambient capture: the kubelet's probes reach ambient pods past ztunnel.

A probe comes from a process of the node (a local socket) to the pod's IP. The in-pod rules
send every other connection arriving at the pod to ztunnel, which would refuse a plaintext
probe in a STRICT namespace; so, as Istio's CNI node agent does, the node's own namespace
gets one nat rule (``ambient_rules.host_plan``, Istio's ``hostprobe.golden``): TCP from a
local socket to an address in the ipset ``istio-inpod-probes-v4`` (``-v6``) leaves SNATed to
the link-local probe address, which the in-pod rules let through to the app. The agent keeps
that ipset to the IPs of the ambient pods it holds, each entry commented with the pod's UID.
Traffic forwarded through the node (other pods', kube-proxy's) has no local socket and is
captured as usual.

This module is the IO: ``ipset`` and ``iptables-restore`` in a given namespace (the node's
own when ``Netns(None)``). ``HostProbes(settings, netns)``:

- ``install()``: make both sets (``-exist``: an agent restarted keeps them) and put the rule
  in place unless it already is; nothing is guarded or dropped meanwhile, the node's traffic
  does not depend on it.
- ``hold(uid, ips)`` / ``release(ips)``: a pod's addresses in or out of the sets.
- ``sync(pods)``: the sets hold exactly these pods' addresses (after a restart).
- ``uninstall()``: the rule and the sets gone.

Errors are ``InterceptorError``s naming the namespace and the command's own message.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from pilotfish.interceptors import iptables
from pilotfish.interceptors.ambient_rules import POSTRT, PROBE_IPSET, AmbientPlan, host_plan
from pilotfish.interceptors.ambient_settings import AmbientSettings
from pilotfish.interceptors.netns_exec import Netns

IPSET = "ipset"


def set_name(version: int) -> str:
    return f"{PROBE_IPSET}-v{version}"


class HostProbes:
    def __init__(self, settings: AmbientSettings, netns: Netns | None = None) -> None:
        self.settings = settings
        self.netns = netns or Netns(None)
        self.plan: AmbientPlan = host_plan(settings)

    @property
    def versions(self) -> tuple[int, ...]:
        return (4, 6) if self.settings.enable_ipv6 else (4,)

    def install(self) -> bool:
        """The sets and the rule in place; whether the rule had to be (re)written."""
        for version in self.versions:
            kind = "inet" if version == 4 else "inet6"
            self._ipset("create", set_name(version), "hash:ip", "family", kind,
                        "comment", "-exist")
        if not iptables.differences(self.plan, self.netns):
            return False
        self._remove_rule()
        for family in iptables.families(self.plan):
            text = self.plan.restore_v4() if family == 4 else self.plan.restore_v6() or ""
            iptables.restore(self.netns, family, text, "installing the host probe rule")
        return True

    def hold(self, uid: str, ips: Iterable[str]) -> None:
        for version, ip in self._ours(ips):
            self._ipset("add", set_name(version), ip, "comment", uid, "-exist")

    def release(self, ips: Iterable[str]) -> None:
        for version, ip in self._ours(ips):
            self._ipset("del", set_name(version), ip, "-exist")

    def sync(self, pods: Mapping[str, Iterable[str]]) -> None:
        """The sets hold the addresses of ``pods`` (UID → IPs) and nothing else."""
        for version in self.versions:
            self._ipset("flush", set_name(version))
        for uid, ips in pods.items():
            self.hold(uid, ips)

    def members(self) -> dict[str, str]:
        """IP → the comment (pod UID) of every entry, both families."""
        found: dict[str, str] = {}
        for version in self.versions:
            listed = self._ipset("list", set_name(version), "-output", "save")
            for line in listed.splitlines():
                words = line.split()
                if len(words) >= 3 and words[0] == "add":
                    comment = words[4].strip('"') if len(words) >= 5 else ""
                    found[words[2]] = comment
        return found

    def uninstall(self) -> None:
        self._remove_rule()
        for version in self.versions:
            self.netns.run([IPSET, "destroy", set_name(version)], check=False)

    # --- the commands --------------------------------------------------------------------

    def _ours(self, ips: Iterable[str]) -> list[tuple[int, str]]:
        """(family, address) of each of ``ips`` (``10.0.0.5`` or, as CNI results give them,
        ``10.0.0.5/24``) in a family the node captures."""
        out: list[tuple[int, str]] = []
        for ip in ips:
            try:
                address = ipaddress.ip_interface(ip).ip
            except ValueError:
                continue  # not an address: nothing a probe could reach
            if address.version in self.versions:
                out.append((address.version, str(address)))
        return out

    def _remove_rule(self) -> None:
        # Only our chain and the jump into it: the node's namespace holds others' rules.
        for family in (4, 6):
            tool = iptables.TOOLS[family][0]
            if family == 6 and not self.settings.enable_ipv6:
                continue
            for _ in range(16):  # a jump added twice by an older run goes too
                if self.netns.run([tool, "-w", iptables.WAIT, "-t", "nat", "-D", "POSTROUTING",
                                   "-j", POSTRT], check=False).returncode != 0:
                    break
            self.netns.run([tool, "-w", iptables.WAIT, "-t", "nat", "-F", POSTRT], check=False)
            self.netns.run([tool, "-w", iptables.WAIT, "-t", "nat", "-X", POSTRT], check=False)

    def _ipset(self, *argv: str) -> str:
        return self.netns.run([IPSET, *argv], what=f"ipset {argv[0]} {argv[1]}").stdout
