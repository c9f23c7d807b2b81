"""The ``iptables`` interceptor: istio-iptables's rules, installed in a pod's netns.

Registered through the entry point ``iptables`` in group ``pilotfish.interceptors``. The
functions below are the thin IO around the sans-IO planner (``iptables_plan``) and state
reader (``iptables_state``):

- ``differences(plan, netns)``: why what is installed is not the plan ([] = in place).
- ``apply(plan, netns)``: install the plan with ``iptables-restore --noflush`` (and
  ``ip6tables-restore`` for IPv6) unless it is already in place, then verify. Stale rules
  of ours are removed first, behind Istio's "guardrails" (filter-table DROPs for TCP and
  UDP) so no connection slips past half-installed capture. Returns whether it changed
  anything; a second call changes nothing.
- ``remove(netns, plan)``: take out every ``ISTIO*`` chain and every jump into one, plus
  the plan's own rules in built-in chains and its routes.
- ``restore(netns, family, text, what)``: one ``iptables-restore --noflush`` run, its
  failure named by line (the node's host rule, ``host_probes``, uses it alone).

They take any ``RulePlan``: the sidecar's ``CapturePlan`` and ambient's in-pod
``AmbientPlan`` (``ambient_rules``) alike.

Errors are ``InterceptorError``s naming the namespace and, for restore, the failing line.
"""

from __future__ import annotations

import os
import re
from typing import Protocol

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.interceptor import InterceptorError, InterceptorSettings, PodFacts
from pilotfish.interceptors.iptables_plan import CapturePlan, plan
from pilotfish.interceptors.iptables_rules import Rule, check_text
from pilotfish.interceptors.iptables_state import (
    SavedTable,
    cleanup_text,
    foreign_rules,
    has_residue,
    mismatches,
    parse_save,
)
from pilotfish.interceptors.netns_exec import Netns
from pilotfish.interceptors.pod_capture import PodError, settings_for, skip_reason

TOOLS = {4: ("iptables", "iptables-save", "iptables-restore"),
         6: ("ip6tables", "ip6tables-save", "ip6tables-restore")}
WAIT = "5"  # seconds to wait for the xtables lock (legacy backend; nft ignores it)
GUARDRAILS = [(chain, proto) for chain in ("INPUT", "FORWARD", "OUTPUT")
              for proto in ("tcp", "udp")]
# nft's "line 3 failed" and legacy's/the parser's "Error occurred at line: 3".
_FAILED_LINE = re.compile(r"line (\d+) failed|at line: (\d+)")


class RulePlan(Protocol):
    """What installing, checking and removing need of a plan."""

    @property
    def enable_ipv6(self) -> bool: ...
    @property
    def v4(self) -> tuple[Rule, ...]: ...
    @property
    def v6(self) -> tuple[Rule, ...]: ...
    @property
    def routes(self) -> tuple[tuple[str, ...], ...]: ...  # `ip` argument lists
    def restore_v4(self) -> str: ...
    def restore_v6(self) -> str | None: ...


def families(capture: RulePlan) -> list[int]:
    return [4, 6] if capture.enable_ipv6 else [4]


def rules_of(capture: RulePlan, family: int) -> tuple[Rule, ...]:
    return capture.v4 if family == 4 else capture.v6


def saved(netns: Netns, family: int) -> dict[str, SavedTable]:
    tool = TOOLS[family][1]
    return parse_save(netns.run([tool], what=tool).stdout)


def differences(capture: RulePlan, netns: Netns) -> list[str]:
    """Why the installed rules are not exactly ``capture``'s; empty when they are."""
    problems = []
    for family in families(capture):
        rules = rules_of(capture, family)
        problems += [f"IPv{family} {m}" for m in mismatches(rules, saved(netns, family))]
        text = check_text(rules)
        result = netns.run([TOOLS[family][2], f"--wait={WAIT}", "--noflush"], stdin=text,
                           check=False)
        if result.returncode != 0:
            problems.append(f"IPv{family} rule missing: {_failed_line(text, result.stderr)}")
    return problems


def apply(capture: RulePlan, netns: Netns) -> bool:
    """Install ``capture`` unless it is in place; verify; return whether anything changed."""
    if not differences(capture, netns):
        _add_routes(capture, netns)
        return False
    stale = any(has_residue(saved(netns, family)) for family in families(capture))
    try:
        if stale:
            _guardrails(netns, families(capture), "-I")
            _remove_rules(netns, capture, families(capture))
        for family in families(capture):
            text = capture.restore_v4() if family == 4 else capture.restore_v6() or ""
            restore(netns, family, text, "installing capture rules")
        _add_routes(capture, netns)
    finally:
        if stale:
            _guardrails(netns, families(capture), "-D")
    left = differences(capture, netns)
    if left:
        raise InterceptorError(f"{netns.label}: capture rules are not as planned after "
                               f"applying them: {'; '.join(left)}")
    return True


def remove(netns: Netns, capture: RulePlan | None = None) -> bool:
    """Remove all capture of ours from ``netns``; return whether anything was there."""
    present = [4] + ([6] if _ipv6_tables_work(netns) else [])
    found = any(has_residue(saved(netns, family)) for family in present)
    _remove_rules(netns, capture, present)
    if capture is not None:
        _remove_routes(capture, netns)
    return found


def _remove_rules(netns: Netns, capture: RulePlan | None, fams: list[int]) -> None:
    for family in fams:
        text = cleanup_text(saved(netns, family))
        if text:
            restore(netns, family, text, "removing capture rules")
        if capture is None or (family == 6 and not capture.enable_ipv6):
            continue
        for rule in foreign_rules(rules_of(capture, family)):
            # Delete until absent: a rule added twice by an older run goes too.
            for _ in range(16):
                if netns.run([TOOLS[family][0], "-w", WAIT, *rule.command("-D")],
                             check=False).returncode != 0:
                    break


def restore(netns: Netns, family: int, text: str, what: str) -> None:
    tool = TOOLS[family][2]
    result = netns.run([tool, f"--wait={WAIT}", "--noflush"], stdin=text, check=False)
    if result.returncode != 0:
        raise InterceptorError(f"{netns.label}: {what}: {tool} failed at "
                               f"{_failed_line(text, result.stderr)}")


def _failed_line(text: str, stderr: str) -> str:
    """"line N: <the line>: <the tool's message>" from restore's "line N failed"."""
    message = " ".join(" ".join(line.split()) for line in stderr.splitlines()
                       if line.strip() and not line.startswith("Try `"))
    match = _FAILED_LINE.search(stderr)
    lines = text.splitlines()
    number = int(match.group(1) or match.group(2)) if match else 0
    if 0 < number <= len(lines):
        return f"line {number} {lines[number - 1]!r}: {message}"
    return message or "no error message"


def _guardrails(netns: Netns, fams: list[int], op: str) -> None:
    at = " 1" if op == "-I" else ""
    text = "*filter\n" + "".join(f"{op} {chain}{at} -p {proto} -j DROP\n"
                                 for chain, proto in GUARDRAILS) + "COMMIT\n"
    for family in fams:
        if op == "-I":
            restore(netns, family, text, "installing guardrails")
        else:  # best effort: never leave the pod cut off because one delete failed
            netns.run([TOOLS[family][2], f"--wait={WAIT}", "--noflush"], stdin=text,
                      check=False)


def _add_routes(capture: RulePlan, netns: Netns) -> None:
    ipv6_lo: bool | None = None
    for argv in capture.routes:
        if argv[:2] == ("-6", "route"):
            if ipv6_lo is None:
                ipv6_lo = _lo_has_ipv6(netns)
            if not ipv6_lo:
                continue  # IPv6 is off on the pod's lo: Istio leaves the route out too
        if argv[1:3] == ("rule", "add"):
            listed = netns.run(["ip", argv[0], "rule", "list", *argv[3:]], check=False)
            if listed.returncode == 0 and listed.stdout.strip():
                continue  # `ip rule add` would add a duplicate
        result = netns.run(["ip", *argv], check=False)
        # EEXIST reads "File exists" for routes, "address already assigned" for addresses.
        if result.returncode != 0 and not re.search(r"File exists|already assigned",
                                                    result.stderr):
            raise InterceptorError(f"{netns.label}: ip {' '.join(argv)} failed: "
                                   f"{result.stderr.strip()}")


def _lo_has_ipv6(netns: Netns) -> bool:
    listed = netns.run(["ip", "-6", "-o", "addr", "show", "dev", "lo"], check=False)
    return listed.returncode == 0 and bool(listed.stdout.strip())


def _remove_routes(capture: RulePlan, netns: Netns) -> None:
    for argv in capture.routes:
        if argv[1:3] == ("rule", "add"):
            for _ in range(16):
                if netns.run(["ip", argv[0], "rule", "del", *argv[3:]],
                             check=False).returncode:
                    break
        elif argv[1:3] in (("route", "add"), ("route", "replace")):
            netns.run(["ip", argv[0], "route", "flush", "table", argv[-1]], check=False)


def _ipv6_tables_work(netns: Netns) -> bool:
    return netns.run([TOOLS[6][1]], check=False).returncode == 0


class IptablesInterceptor:
    """The plugin object: a pod's capture from its annotations, as Istio installs it —
    with Istio CNI's defaults when ``pilotfish-cni`` asks, istio-init's otherwise."""

    name = "iptables"

    def __init__(self, settings: InterceptorSettings | None = None) -> None:
        self.settings = settings or InterceptorSettings(environ=os.environ)

    def capture_plan(self, pod: PodFacts) -> CapturePlan | None:
        try:
            settings = settings_for(pod, self.settings.environ, flavour=self.settings.runtime)
        except PodError as exc:
            raise InterceptorError(str(exc)) from None
        return None if settings is None else plan(settings)

    def plan(self, pod: PodFacts) -> str | None:
        capture = self.capture_plan(pod)
        if capture is None:
            return None
        return capture.restore_v4() + (capture.restore_v6() or "")

    def skip_reason(self, pod: PodFacts) -> str:
        return skip_reason(pod) or ""

    async def apply(self, pod: PodFacts, netns: str) -> None:
        import anyio  # here: the CNI plugin imports this module and starts faster without

        capture = self.capture_plan(pod)
        if capture is not None:
            await anyio.to_thread.run_sync(apply, capture, Netns(netns))

    async def remove(self, pod: PodFacts, netns: str) -> None:
        import anyio

        try:
            capture = self.capture_plan(pod)
        except InterceptorError:
            capture = None  # facts it cannot read: remove every chain of ours all the same
        await anyio.to_thread.run_sync(remove, Netns(netns), capture)

    async def check(self, pod: PodFacts, netns: str) -> list[str]:
        import anyio

        capture = self.capture_plan(pod)
        if capture is None:
            return []
        return await anyio.to_thread.run_sync(differences, capture, Netns(netns))


@hookimpl
def pilotfish_interceptor(settings: InterceptorSettings) -> IptablesInterceptor:
    return IptablesInterceptor(settings)
