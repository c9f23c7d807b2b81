"""Is the proxy ready to take traffic? pilot-agent's rule, decided from what the proxy says.

Sans-IO. The status server asks the proxy backend for a ``ProxyStatus`` (full until the
first time the proxy is ready, cheap afterwards: ``Readiness.full``) and hands it to
``Readiness.decide``. How a proxy knows its state is the backend's business (Envoy's stats:
``plugins/envoy/readiness.py``); the rule is the agent's:

Ready means the proxy accepted a first full configuration from discovery, is serving, and
holds the SDS secrets the agent requires (the workload certificate and root, when xDS runs
over mTLS: before them, mesh mTLS in and out would fail). As in pilot-agent, once ready the
configuration part is not asked again: a proxy that keeps serving its last configuration
while discovery is away stays ready. Only serving is checked after that, so a draining
proxy turns unready; a drain the agent started does so at once.
"""

from __future__ import annotations

import attrs

from pilotfish.core.proxy_backend import ProxyStatus


@attrs.frozen
class Verdict:
    ready: bool
    reason: str  # what a probe's 503 body says; "ready" otherwise


READY = Verdict(True, "ready")


@attrs.define
class Readiness:
    """The readiness state machine of one proxy: not yet initialized → initialized."""

    # SDS secrets the proxy must hold before it is ready.
    secrets: tuple[str, ...] = ()
    initialized: bool = False
    draining: bool = False  # set when the agent starts a drain; never cleared

    @property
    def full(self) -> bool:
        """Whether to ask the proxy for its configuration and secrets, not only serving."""
        return not self.initialized

    def decide(self, status: ProxyStatus) -> Verdict:
        if self.draining:
            return Verdict(False, "the proxy is draining")
        if not self.initialized:
            problem = status.config or status.serving
            missing = [s for s in self.secrets if s not in status.secrets]
            if not problem and missing:
                problem = (f"the proxy has no {', '.join(missing)} secret yet (waiting for "
                           "the workload certificate from discovery's CA)")
            if problem:
                return Verdict(False, problem)
            self.initialized = True
            return READY
        return READY if not status.serving else Verdict(False, status.serving)

    def unreachable(self, error: str) -> Verdict:
        return Verdict(False, f"the proxy did not answer: {error}")
