"""Running a command inside a network namespace, with errors that name the namespace.

``Netns("pod-a")`` is the named namespace ``ip netns`` made (``/run/netns/pod-a``);
``Netns("/proc/42/ns/net")`` is any namespace by path, as a CNI runtime passes it;
``Netns(None)`` is the caller's own, as when istio-init runs inside the pod.
Commands enter the namespace with ``nsenter --net`` (only the network namespace: the
mount namespace, and so the host's binaries and files, stay the caller's).
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pilotfish.core.interceptor import InterceptorError

RUN_NETNS = Path("/run/netns")
# A runtime may run a CNI plugin with a bare PATH; iptables and ip live in sbin.
_SBIN = ":/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"
TIMEOUT = 30.0  # one iptables or ip command; they take milliseconds unless a lock is held


class Netns:
    def __init__(self, netns: str | None) -> None:
        if not netns:
            self.path: str | None = None
            self.label = "the current network namespace"
            return
        self.path = netns if "/" in netns else str(RUN_NETNS / netns)
        self.label = f"netns {netns}"
        if not os.path.exists(self.path):
            raise InterceptorError(
                f"{self.label}: no such network namespace ({self.path} does not exist; "
                "`ip netns list` shows the named ones)"
            )

    def argv(self, argv: Sequence[str]) -> list[str]:
        if self.path is None:
            return list(argv)
        return ["nsenter", f"--net={self.path}", "--", *argv]

    def run(self, argv: Sequence[str], *, stdin: str | None = None, check: bool = True,
            what: str = "") -> subprocess.CompletedProcess[str]:
        """Run ``argv`` here; with ``check``, a non-zero exit raises ``InterceptorError``
        carrying the command's own error output."""
        try:
            result = subprocess.run(self.argv(argv), input=stdin, capture_output=True,
                                    text=True, timeout=TIMEOUT, check=False,
                                    env={**os.environ, "PATH": os.environ.get("PATH", "")
                                         + _SBIN})
        except FileNotFoundError as exc:
            raise InterceptorError(
                f"{self.label}: {exc.filename or argv[0]} is not installed "
                "(Debian: apt-get install iptables iproute2 util-linux)"
            ) from None
        except subprocess.TimeoutExpired:
            raise InterceptorError(f"{self.label}: {' '.join(argv)} did not finish in "
                                   f"{TIMEOUT:.0f} s") from None
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()
            raise InterceptorError(
                f"{self.label}: {what or ' '.join(argv)} failed ({result.returncode}): {detail}"
            )
        return result

    def addresses(self) -> list[str]:
        """The namespace's global addresses (loopback and link-local left out), in order."""
        out = self.run(["ip", "-o", "addr", "show"], what="listing addresses").stdout
        found = []
        for line in out.splitlines():
            words = line.split()
            if len(words) > 3 and words[2] in ("inet", "inet6"):
                address = ipaddress.ip_interface(words[3]).ip
                if not (address.is_loopback or address.is_link_local):
                    found.append(str(address))
        return found

    def resolv_conf(self) -> Path:
        """The resolv.conf a process in this namespace reads under ``ip netns exec``."""
        if self.path is not None and self.path.startswith(str(RUN_NETNS) + "/"):
            own = Path("/etc/netns") / Path(self.path).name / "resolv.conf"
            if own.exists():
                return own
        return Path("/etc/resolv.conf")

    def __str__(self) -> str:
        return self.label
