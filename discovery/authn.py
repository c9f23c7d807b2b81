"""Who is calling on 15012: a workload certificate, else a pod token.

Istio's order: the client certificate first (a workload renewing with the cert it has;
the TLS layer has already checked that it chains to the root and has not expired), then
the bearer token (a workload's first request, before it has any certificate). The first
proof that holds wins; when none does, the refusal says what each one lacked.

A bearer token is the local node's (signed with its key, checked here with ``--token-key``)
or, on a cluster, a projected service-account token the API server vouches for through a
TokenReview (``reviewer``, which blocks: ``authenticate_async`` runs it in a worker thread).
Without a reviewer all of this is sans-IO.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio.to_thread
import attrs
from cryptography import x509

from pilotfish.core.security import tokens
from pilotfish.core.security.identity import Identity, IdentityError, parse_spiffe_id
from pilotfish.core.security.provider import CertError, Refusal

BEARER = "bearer "


@attrs.frozen
class Credentials:
    """What a caller presented: bearer tokens and the DER leaf of its TLS client cert."""

    tokens: tuple[str, ...] = ()
    certificate: bytes | None = None

    @classmethod
    def from_metadata(cls, metadata: Iterable[tuple[str, str | bytes]] | None,
                      certificate: bytes | None) -> Credentials:
        found = []
        for key, value in metadata or ():
            if key.lower() != "authorization" or not isinstance(value, str):
                continue
            if value[:len(BEARER)].lower() == BEARER:
                found.append(value[len(BEARER):].strip())
        return cls(tuple(found), certificate)


def _unauthenticated(message: str) -> CertError:
    return CertError(Refusal.UNAUTHENTICATED, message)


# (token, now) → the identity the cluster vouches for, or CertError; blocks.
Reviewer = Callable[[str, float], Identity]


class Authenticator:
    def __init__(self, trust_domain: str, token_key_pem: bytes | None,
                 audience: str = tokens.AUDIENCE, reviewer: Reviewer | None = None) -> None:
        self.trust_domain = trust_domain
        self.token_key_pem = token_key_pem
        self.audience = audience
        self.reviewer = reviewer

    async def authenticate_async(self, credentials: Credentials, now: float) -> Identity:
        """``authenticate``, off the event loop when a token may need a TokenReview."""
        if self.reviewer is None or not credentials.tokens:
            return self.authenticate(credentials, now)
        return await anyio.to_thread.run_sync(self.authenticate, credentials, now)

    def authenticate(self, credentials: Credentials, now: float) -> Identity:
        problems = []
        if credentials.certificate is not None:
            try:
                return self.from_certificate(credentials.certificate)
            except CertError as exc:
                problems.append(f"client certificate: {exc}")
        for token in credentials.tokens:
            try:
                return self.from_token(token, now)
            except CertError as exc:
                problems.append(f"bearer token: {exc}")
        if not problems:
            raise _unauthenticated(
                "request authenticate failure: no credentials (send 'authorization: Bearer "
                "<pod token>' or present a workload certificate issued by this mesh's CA)")
        raise _unauthenticated("request authenticate failure: " + "; ".join(problems))

    def from_certificate(self, der: bytes) -> Identity:
        try:
            cert = x509.load_der_x509_certificate(der)
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound as exc:
            raise _unauthenticated("it has no SPIFFE URI SAN") from exc
        except ValueError as exc:
            raise _unauthenticated(f"it cannot be parsed ({exc})") from exc
        uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)
                if u.startswith("spiffe://")]
        if len(uris) != 1:
            raise _unauthenticated(f"it carries {len(uris)} SPIFFE IDs; exactly one is needed")
        try:
            trust_domain, identity = parse_spiffe_id(uris[0])
        except IdentityError as exc:
            raise _unauthenticated(str(exc)) from exc
        if trust_domain != self.trust_domain:
            raise _unauthenticated(f"{uris[0]} is in trust domain {trust_domain!r}, "
                                   f"not this mesh's {self.trust_domain!r}")
        return identity

    def from_token(self, token: str, now: float) -> Identity:
        if self.token_key_pem is None and self.reviewer is None:
            raise _unauthenticated("discovery was started without --token-key, so it cannot "
                                   "verify pod tokens")
        node_problem = ""
        if self.token_key_pem is not None:
            try:
                return tokens.verify(self.token_key_pem, token, self.audience, now=now)
            except tokens.TokenError as exc:
                if self.reviewer is None:
                    raise _unauthenticated(str(exc)) from exc
                node_problem = f"not the node's ({exc}); "
        assert self.reviewer is not None
        try:
            return self.reviewer(token, now)
        except CertError as exc:
            raise CertError(exc.refusal, f"{node_problem}{exc}") from exc


def check_proxy_identity(identity: Identity, namespace: str,
                         metadata: Mapping[str, Any]) -> None:
    """ADS: a caller may only connect as a proxy of its own namespace and service account
    (istiod's PILOT_ENABLE_XDS_IDENTITY_CHECK), so one workload cannot read another's
    config by claiming its node id."""
    if identity.namespace != namespace:
        raise CertError(Refusal.PERMISSION_DENIED,
                        f"caller {identity.namespace}/{identity.service_account} may not "
                        f"connect as a proxy in namespace {namespace!r}")
    account = metadata.get("SERVICE_ACCOUNT")
    if account and account != identity.service_account:
        raise CertError(Refusal.PERMISSION_DENIED,
                        f"caller {identity.namespace}/{identity.service_account} may not "
                        f"connect as a proxy with SERVICE_ACCOUNT {account!r}")
