"""What a workload certificate says, whether an issued one can be used and when to renew it
(sans-IO; `cert_rotation` explains the renewal).

Kept free of any X.509 library so that both readers share it: the agent's
(``workload_cert``, on ``cryptography``) and ztunnel's (``node_secret``, on libcrypto).
"""

from __future__ import annotations

import attrs


class CertificateError(ValueError):
    """What a CA sent back cannot be used; the message says what is wrong with it."""


@attrs.frozen
class CertInfo:
    """What ``proxy-config secret`` and the agent's logs say about one certificate."""

    serial: str  # lower-case hex without leading zeros, as istioctl prints it
    not_before: float  # epoch seconds
    not_after: float
    subject: str
    issuer: str
    uris: tuple[str, ...] = ()

    @property
    def spiffe_id(self) -> str:
        return next((u for u in self.uris if u.startswith("spiffe://")), "")

    def valid_at(self, now: float) -> bool:
        return self.not_before <= now < self.not_after


def check_issued(info: CertInfo, same_key: bool, expected_id: str, now: float) -> None:
    """Refuse a leaf the CA issued that is not for the requester's key, not for its
    identity, or not valid now."""
    if not same_key:
        raise CertificateError("the certificate the CA returned is not for the key in the "
                               "CSR (a CA or proxy answering someone else's request?)")
    # The CA decides the trust domain; the workload's namespace and account must be ours,
    # or discovery would refuse this proxy's xDS connection made with it anyway.
    suffix = expected_id.split("/ns/", 1)[-1]
    if not info.spiffe_id.endswith(f"/ns/{suffix}"):
        raise CertificateError(f"the CA issued {info.spiffe_id or 'no SPIFFE ID'}, but this "
                               f"agent runs as {expected_id}")
    if not info.valid_at(now):
        raise CertificateError(f"the certificate (serial {info.serial}) is not valid now: "
                               f"valid from {info.not_before:.0f} to {info.not_after:.0f} "
                               f"(epoch seconds), now {now:.0f}; check the clocks")


GRACE_RATIO = 0.5
GRACE_JITTER = 0.01


def renew_time(received_at: float, not_after: float, draw: float, sign: int,
               ratio: float = GRACE_RATIO, jitter: float = GRACE_JITTER) -> float:
    """When to renew a certificate received at ``received_at`` (``draw`` in [0, 1),
    ``sign`` ±1: the jitter's size and direction)."""
    grace = min(1.0, max(0.0, ratio + draw * jitter * sign))
    return max(received_at, not_after - grace * (not_after - received_at))
