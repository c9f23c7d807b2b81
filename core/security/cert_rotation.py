"""When the agent asks the CA for a certificate, and what changed when it got one (sans-IO).

Istio's agent (``secretcache.go``), with its defaults:

* **Renewal** at ``not_after - ratio' * lifetime``, ``ratio' = 0.5 ± U(0, 0.01)`` (the sign
  drawn at random too; ``SECRET_GRACE_PERIOD_RATIO`` and ``..._JITTER``), clamped to
  [0, 1]. The lifetime runs from when the answer *arrived*, not from the certificate's
  NotBefore: CAs backdate that by minutes for clock skew (Istio's and pilotfish's by two),
  which for a 20-second test certificate would put the renewal after the expiry. A 24 h
  certificate is renewed 11 h 45.6 m to 12 h 14.4 m after it arrived.
* **Retries** after a failed request with exponential backoff (``pkg/backoff``'s defaults
  on top of cenkalti/backoff): 0.5 s, growing by 1.5 times up to 60 s, each wait randomized by
  ±50 % so that a fleet cut off from its CA does not come back in lockstep (never above
  60 s here). A success resets it. The held certificate is served until it expires and,
  expired, still is: a proxy with no certificate at all is worse off than with an old one
  that peers may still accept within their clock skew.
* **Roots**: a new root bundle in an answer, or a changed ``--root-cert`` file, changes
  ``ROOTCA``; a changed file also renews the certificate at once (Istio's
  ``UpdateConfigTrustBundle``), since the CA that signed the old one may be on its way out.

Time and randomness are arguments: ``random`` gives floats in [0, 1).
"""

from __future__ import annotations

import enum
import random as _random
from collections.abc import Callable, Sequence

import attrs
from cryptography import x509

from pilotfish.core.backoff import Backoff
from pilotfish.core.security.cert_info import GRACE_JITTER, GRACE_RATIO, renew_time
from pilotfish.core.security.workload_cert import WorkloadSecret, merge_roots


class Phase(enum.Enum):
    STARTING = "starting"  # no certificate yet, none asked for
    REQUESTING = "requesting"  # a CSR is with the CA
    HOLDING = "holding"  # a certificate; the next request is its renewal
    RETRYING = "retrying"  # the last request failed; waiting out the backoff


@attrs.frozen
class Update:
    """What a step changed, i.e. which SDS resources to push."""

    default: bool = False
    roots: bool = False

    def __bool__(self) -> bool:
        return self.default or self.roots


class Rotation:
    def __init__(self, *, file_roots: Sequence[x509.Certificate] = (),
                 ratio: float = GRACE_RATIO, jitter: float = GRACE_JITTER,
                 backoff: Backoff | None = None,
                 random: Callable[[], float] = _random.random) -> None:
        self.ratio, self.jitter = ratio, jitter
        self.backoff = backoff or Backoff()
        self.random = random
        self.phase = Phase.STARTING
        self.secret: WorkloadSecret | None = None
        self.file_roots: tuple[x509.Certificate, ...] = tuple(file_roots)
        self.response_roots: tuple[x509.Certificate, ...] = ()
        self.next_attempt = 0.0  # epoch seconds; the first request is due at once
        self.renew_at: float | None = None
        self.failures = 0  # consecutive
        self.last_error = ""
        self.issued = 0
        self._again = False  # the roots changed while a request was out: renew once more

    # -- deciding ------------------------------------------------------------------------

    def due(self, now: float) -> bool:
        return self.phase is not Phase.REQUESTING and now >= self.next_attempt

    def wake_at(self) -> float | None:
        """When ``due`` turns true (None while a request is out)."""
        return None if self.phase is Phase.REQUESTING else self.next_attempt

    def expired(self, now: float) -> bool:
        return self.secret is not None and now >= self.secret.leaf.not_after

    # -- events --------------------------------------------------------------------------

    def begin(self, now: float) -> None:
        if not self.due(now):
            raise RuntimeError(f"no request is due (phase {self.phase.value})")
        self.phase = Phase.REQUESTING

    def succeeded(self, secret: WorkloadSecret, response_roots: Sequence[x509.Certificate],
                  now: float) -> Update:
        """A new certificate arrived; ``response_roots`` came in the CA's answer."""
        old = self.secret
        self.response_roots = tuple(response_roots)
        secret = secret.with_roots(merge_roots(self.response_roots, self.file_roots))
        self.secret = secret
        self.phase = Phase.HOLDING
        self.failures, self.last_error = 0, ""
        self.backoff.reset()
        self.issued += 1
        sign = 1 if self.random() < 0.5 else -1
        self.renew_at = renew_time(secret.received_at, secret.leaf.not_after, self.random(),
                                   sign, self.ratio, self.jitter)
        self.next_attempt = now if self._again else self.renew_at
        self._again = False
        return Update(default=True, roots=old is None or old.roots != secret.roots)

    def failed(self, error: str, now: float) -> float:
        """A request failed; returns the wait before the next attempt."""
        self.failures += 1
        self.last_error = error
        delay = self.backoff.next(self.random())
        self.next_attempt = now + delay
        self.phase = Phase.RETRYING
        return delay

    def roots_changed(self, file_roots: Sequence[x509.Certificate], now: float) -> Update:
        """The ``--root-cert`` file now holds ``file_roots``."""
        if tuple(file_roots) == self.file_roots:
            return Update()
        self.file_roots = tuple(file_roots)
        if self.phase is Phase.REQUESTING:
            self._again = True
        else:
            self.next_attempt = now  # renew now: the old issuer may be leaving
        if self.secret is None:
            return Update()
        roots = merge_roots(self.response_roots, self.file_roots)
        if roots == self.secret.roots:
            return Update()
        self.secret = self.secret.with_roots(roots)
        return Update(roots=True)
