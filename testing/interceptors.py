"""Contract checks for interceptor plugins (group ``pilotfish.interceptors``).

``check_interceptor`` runs what core expects of any interceptor against a real network
namespace (so it needs root): a captured pod has a plan and ``apply`` installs it, which
``check`` then finds exactly in place; applying again changes nothing; ``remove`` takes it
all out (``check`` now says so) and may be repeated; a pod the interceptor does not capture
(by default: the same pod without a sidecar; an ambient interceptor passes ``AMBIENT_POD``
and a ``plain`` pod without the ambient label) is neither planned nor touched, and
``skip_reason`` says why. ``dump`` says what "changes" means: by
default the namespace's iptables-save output, which suits any interceptor built on
netfilter.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import attrs

from pilotfish.core.interceptor import Interceptor, PodFacts

SIDECAR_POD = PodFacts(name="contract", namespace="testing", sidecar=True,
                       annotations={"sidecar.istio.io/status": "{}"}, ips=("10.0.0.2/24",))
AMBIENT_POD = PodFacts(name="contract", namespace="testing", uid="contract-uid",
                       labels={"istio.io/dataplane-mode": "ambient"}, ips=("10.0.0.2/24",))


def netfilter_state(netns: str) -> str:
    """The rules and user chains of ``netns`` for IPv4 and IPv6, one per line with their
    table (an empty table that merely exists, as nf_tables leaves them, shows nothing)."""
    out = []
    for tool in ("iptables-save", "ip6tables-save"):
        text = subprocess.run(["ip", "netns", "exec", netns, tool], capture_output=True,
                              text=True, check=True).stdout
        table = ""
        for line in text.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith("-A") or (line.startswith(":") and line.split()[1] == "-"):
                out.append(f"{tool} {table} {line.split(' [')[0]}")
    return "\n".join(out)


async def check_interceptor(interceptor: Interceptor, netns: str,
                            pod: PodFacts = SIDECAR_POD,
                            dump: Callable[[str], str] = netfilter_state,
                            plain: PodFacts | None = None) -> None:
    """Raise ``AssertionError`` naming the broken promise; ``netns`` starts empty."""
    assert isinstance(interceptor, Interceptor), "not an Interceptor (name, plan, apply, remove)"
    empty = dump(netns)
    name = interceptor.name
    assert interceptor.plan(pod), f"{name}: no plan for a pod it should capture"
    assert interceptor.skip_reason(pod) == "", f"{name}: a skip reason for a captured pod"
    await interceptor.apply(pod, netns)
    applied = dump(netns)
    assert applied != empty, f"{name}: apply changed nothing in {netns}"
    problems = await interceptor.check(pod, netns)
    assert problems == [], f"{name}: check finds the capture it applied wrong: {problems}"
    await interceptor.apply(pod, netns)
    assert dump(netns) == applied, f"{name}: a second apply changed {netns}"
    await interceptor.remove(pod, netns)
    assert dump(netns) == empty, f"{name}: remove left capture in {netns}"
    assert await interceptor.check(pod, netns), f"{name}: check misses the removed capture"
    await interceptor.remove(pod, netns)

    plain = plain or attrs.evolve(pod, sidecar=False)
    assert interceptor.plan(plain) is None, f"{name}: planned a pod it should leave alone"
    assert interceptor.skip_reason(plain), f"{name}: no reason given for leaving a pod alone"
    await interceptor.apply(plain, netns)
    assert dump(netns) == empty, f"{name}: captured a pod it should leave alone"
