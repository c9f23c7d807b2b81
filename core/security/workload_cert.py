"""The agent's workload certificate as data: key, CSR, and what the CA sent back (sans-IO).

The private key is made here, in the agent, for every request and never leaves the
process: it goes into the CSR only as a public key, into Envoy only over the SDS socket,
and to the CA's TLS handshake only in memory. Istio's agent does the same (a new key per
CSR), so a renewal is also a key rotation.

A CA answers ``CreateCertificate`` with ``[leaf, intermediates..., root bundle]``. What the
agent serves from that:

* ``default``: the leaf and intermediates (the root is left out: peers hold it already, so
  sending it would only lengthen every handshake) with the key;
* ``ROOTCA``: the roots of the response's last element together with those in the
  ``--root-cert`` file, each once. Trusting both is what lets a mesh move to a new root:
  the node adds the new root to the file, discovery switches, and no proxy is ever left
  trusting only one of the two.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

# CertInfo and CertificateError live with the checks ztunnel shares; the agent's modules
# name them from here.
from pilotfish.core.security.cert_info import CertificateError as CertificateError
from pilotfish.core.security.cert_info import CertInfo as CertInfo
from pilotfish.core.security.cert_info import check_issued

KEY_TYPES = ("ec", "rsa")  # ECDSA P-256 (the default here), RSA 2048 (Istio's default)
RSA_BITS = 2048


def generate_key(kind: str = "ec") -> CertificateIssuerPrivateKeyTypes:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    raise ValueError(f"key type {kind!r}: expected one of {', '.join(KEY_TYPES)}")


def key_pem(key: CertificateIssuerPrivateKeyTypes) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def make_csr(key: CertificateIssuerPrivateKeyTypes, spiffe_id: str) -> str:
    """A PEM PKCS#10 request for ``spiffe_id``. The CA takes the identity from the caller's
    credentials, not from here; the SAN only says what the agent expects to get."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
                       critical=True)  # critical because the subject is empty (RFC 5280)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def describe(cert: x509.Certificate) -> CertInfo:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
    except x509.ExtensionNotFound:
        uris = ()
    return CertInfo(
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
        subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(),
        uris=uris)


def load_pems(text: str | bytes, where: str) -> list[x509.Certificate]:
    data = text.encode() if isinstance(text, str) else text
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertificateError(f"{where}: no PEM certificate could be read ({exc})") from exc


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def merge_roots(*bundles: Sequence[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    """Every root once, in the order first seen."""
    seen: dict[bytes, x509.Certificate] = {}
    for bundle in bundles:
        for cert in bundle:
            seen.setdefault(cert.public_bytes(serialization.Encoding.DER), cert)
    return tuple(seen.values())


@attrs.frozen
class WorkloadSecret:
    """What the agent serves over SDS: ``default`` (chain + key) and ``ROOTCA`` (roots)."""

    key_pem: str = attrs.field(repr=False)
    chain: tuple[x509.Certificate, ...]  # leaf first, intermediates; no root
    roots: tuple[x509.Certificate, ...]
    received_at: float  # when the CA's answer arrived: where Istio measures the lifetime from

    @property
    def leaf(self) -> CertInfo:
        return describe(self.chain[0])

    @property
    def chain_pem(self) -> str:
        return "".join(pem(c) for c in self.chain)

    @property
    def roots_pem(self) -> str:
        return "".join(pem(c) for c in self.roots)

    def with_roots(self, roots: Sequence[x509.Certificate]) -> WorkloadSecret:
        return attrs.evolve(self, roots=tuple(roots))


def from_response(cert_chain: Sequence[str], key: CertificateIssuerPrivateKeyTypes,
                  expected_id: str, file_roots: Sequence[x509.Certificate],
                  now: float) -> WorkloadSecret:
    """Check a ``CreateCertificate`` answer against the request and make it servable."""
    if not cert_chain:
        raise CertificateError("the CA returned an empty certificate chain")
    leaf_and_middle = [c for i, element in enumerate(cert_chain[:-1] or cert_chain)
                       for c in load_pems(element, f"cert_chain[{i}]")]
    # A one-element answer is a bare leaf; otherwise the last element is the root bundle.
    response_roots = load_pems(cert_chain[-1], "the chain's root") if len(cert_chain) > 1 \
        else []
    leaf = leaf_and_middle[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    same_key = (leaf.public_key().public_bytes(der, spki)
                == key.public_key().public_bytes(der, spki))
    check_issued(describe(leaf), same_key, expected_id, now)
    roots = merge_roots(response_roots, file_roots)
    if not roots:
        raise CertificateError("no root: the CA sent none and --root-cert holds none")
    return WorkloadSecret(key_pem(key), tuple(leaf_and_middle), roots, now)
