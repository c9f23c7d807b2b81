"""What a cert provider is (group ``pilotfish.certs``), and the refusals it may give.

Core authenticates the caller, parses and checks the CSR and settles the lifetime; a
provider then only signs (``sign``), says which roots to trust (``trust_bundle``) and gives
discovery its own serving certificate (``serving_certificate``). ``pilotfish.testing.certs``
checks a provider against this contract.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs
from cryptography import x509

from pilotfish.core.security.identity import Identity

DAY = 86400.0
DEFAULT_WORKLOAD_TTL = DAY  # Istio's DEFAULT_WORKLOAD_CERT_TTL
MAX_WORKLOAD_TTL = 90 * DAY  # Istio's MAX_WORKLOAD_CERT_TTL


class Refusal(enum.Enum):
    """Why a request was refused; the gRPC layer maps each to a status code."""

    UNAUTHENTICATED = "UNAUTHENTICATED"  # no proof of identity, or a bad one
    INVALID_ARGUMENT = "INVALID_ARGUMENT"  # malformed CSR, TTL above the maximum
    PERMISSION_DENIED = "PERMISSION_DENIED"  # proven identity asks for someone else's
    FAILED_PRECONDITION = "FAILED_PRECONDITION"  # this provider does not sign
    INTERNAL = "INTERNAL"  # the CA cannot sign right now


class CertError(Exception):
    """A refused request; ``str()`` is the message the caller sees."""

    def __init__(self, refusal: Refusal, message: str) -> None:
        super().__init__(message)
        self.refusal = refusal


class CaSetupError(Exception):
    """Discovery cannot set up its CA (bad plugged-in files, unwritable state directory)."""


@runtime_checkable
class RootStore(Protocol):
    """Where every replica finds the one root on a cluster (discovery's Secrets)."""

    def load_or_create(self, make: Callable[[], Mapping[str, str]]
                       ) -> tuple[Mapping[str, str], str]:
        """The CA's files (Istio's ``cacerts`` names → PEM text) and where they came from;
        ``make`` gives a new self-signed root's files when none is stored yet, and what is
        stored first wins."""
        ...


@attrs.frozen
class CertSettings:
    """What discovery tells cert providers (``pilotfish_cert_provider``)."""

    state_dir: Path
    ca_dir: Path | None = None  # plugged-in CA files, when not in the state directory
    trust_domain: str = "cluster.local"
    workload_ttl: float = DEFAULT_WORKLOAD_TTL
    max_workload_ttl: float = MAX_WORKLOAD_TTL
    # On a cluster: the root shared through Secrets (used when no ca_dir is given).
    root_store: RootStore | None = attrs.field(default=None, eq=False)


@attrs.frozen
class SigningRequest:
    """A checked request: the CSR is well formed and the identity is the caller's own."""

    csr: x509.CertificateSigningRequest
    identity: Identity
    spiffe_id: str  # the only SAN the certificate may carry
    ttl: float  # seconds, already within the maximum
    metadata: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ServingCert:
    """A certificate chain (leaf first, PEM) and its private key (PEM)."""

    chain_pem: str
    key_pem: str
    not_after: float  # epoch seconds: when to get a new one


@runtime_checkable
class CertProvider(Protocol):
    """The object ``pilotfish_cert_provider`` returns."""

    name: str

    def trust_bundle(self) -> str:
        """PEM root certificate(s) workloads and discovery trust."""
        ...

    def sign(self, request: SigningRequest, now: float) -> list[str]:
        """The chain for the request: one PEM certificate per element, each ending in a
        newline, the leaf first and the root bundle last. Raise ``CertError`` to refuse."""
        ...

    def serving_certificate(self, dns_names: Sequence[str], ip_addresses: Sequence[str],
                            now: float) -> ServingCert:
        """Discovery's own TLS certificate for 15012, trusted through ``trust_bundle``."""
        ...
