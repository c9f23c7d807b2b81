"""The certificates a node proxy (ztunnel) holds for its pods, read with libcrypto (sans-IO).

The same answer and the same checks as the agent's `workload_cert.WorkloadSecret`, with the
certificates kept as PEM and read through `libcrypto` so that ztunnel's process does not
load ``cryptography`` (see that module for why). ztunnel serves what it holds over TLS
itself, never over SDS, so PEM text is all it needs besides the fields it shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from pilotfish.core.security import libcrypto
from pilotfish.core.security.cert_info import CertificateError, CertInfo, check_issued
from pilotfish.core.security.libcrypto import Certificate, KeyAndCsr


@attrs.frozen
class NodeSecret:
    """A pod identity's key, chain (leaf first, intermediates; no root) and roots."""

    key_pem: str = attrs.field(repr=False)
    chain: tuple[Certificate, ...]
    roots: tuple[Certificate, ...]
    received_at: float  # when the CA's answer arrived: where Istio measures the lifetime from

    @property
    def leaf(self) -> CertInfo:
        return self.chain[0].info

    @property
    def chain_pem(self) -> str:
        return "".join(c.pem for c in self.chain)

    @property
    def roots_pem(self) -> str:
        return "".join(c.pem for c in self.roots)


def _load(text: str, where: str) -> list[Certificate]:
    try:
        return libcrypto.load_certificates(text, where)
    except libcrypto.LibcryptoError as exc:
        raise CertificateError(str(exc)) from exc


def from_response(cert_chain: Sequence[str], key: KeyAndCsr, expected_id: str,
                  now: float) -> NodeSecret:
    """Check a ``CreateCertificate`` answer to ``key``'s request and keep it."""
    if not cert_chain:
        raise CertificateError("the CA returned an empty certificate chain")
    leaf_and_middle = [c for i, element in enumerate(cert_chain[:-1] or cert_chain)
                       for c in _load(element, f"cert_chain[{i}]")]
    # A one-element answer is a bare leaf; otherwise the last element is the root bundle.
    roots = _load(cert_chain[-1], "the chain's root") if len(cert_chain) > 1 else []
    leaf = leaf_and_middle[0]
    check_issued(leaf.info, leaf.public_key_der == key.public_key_der, expected_id, now)
    if not roots:
        raise CertificateError("no root: the CA sent none")
    unique = tuple({root.der: root for root in roots}.values())
    return NodeSecret(key.key_pem, tuple(leaf_and_middle), unique, now)
