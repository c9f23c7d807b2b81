"""CA key material as data: PEM in and out, a self-signed root, and the signing bundle.

A ``SigningBundle`` is what Istio calls a KeyCertBundle: the signing certificate and key,
the certificates between it and the root (``cert-chain.pem``) and the root bundle
(``root-cert.pem``). For a self-signed CA the signing certificate is the root and the
chain is empty. Sans-IO: files are read and written by the cert providers.
"""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Sequence

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import NameOID

ROOT_TTL = 3650 * 86400.0  # CITADEL_SELF_SIGNED_CA_CERT_TTL: 10 years
ROOT_RSA_BITS = 2048  # CITADEL_SELF_SIGNED_CA_RSA_KEY_SIZE


class PkiError(ValueError):
    """Key material that cannot be used; the message names the file or part."""


def to_datetime(stamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC)


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key: PrivateKeyTypes) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def load_certs(text: str | bytes, where: str) -> list[x509.Certificate]:
    """Every certificate in a PEM text, in order."""
    data = text.encode() if isinstance(text, str) else text
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise PkiError(f"{where}: no PEM certificate could be read ({exc})") from exc
    return certs


def load_key(text: str | bytes, where: str) -> CertificateIssuerPrivateKeyTypes:
    data = text.encode() if isinstance(text, str) else text
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"{where}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise PkiError(f"{where}: a CA key must be RSA or ECDSA, not {type(key).__name__}")
    return key


def same_public_key(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    mine = key.public_key().public_bytes(der, spki)
    return bool(cert.public_key().public_bytes(der, spki) == mine)


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def self_signed_root(trust_domain: str, now: float, ttl: float = ROOT_TTL
                     ) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A new root like Istio's self-signed one: RSA 2048, O=trust domain, 10 years."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=ROOT_RSA_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(to_datetime(now - 120)).not_valid_after(to_datetime(now + ttl))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


@attrs.frozen
class SigningBundle:
    cert: x509.Certificate  # signs workload certificates
    key: CertificateIssuerPrivateKeyTypes
    # From ``cert`` (included) towards the root, roots excluded: empty when ``cert`` is the
    # root itself. Appended to every leaf.
    chain: tuple[x509.Certificate, ...]
    roots: tuple[x509.Certificate, ...]

    @property
    def roots_pem(self) -> str:
        return "".join(cert_pem(root) for root in self.roots)

    def check(self, now: float, where: str) -> None:
        """Refuse a bundle that could only sign certificates nobody can verify."""
        if not same_public_key(self.cert, self.key):
            raise PkiError(f"{where}: ca-key.pem does not belong to ca-cert.pem")
        if not is_ca(self.cert):
            raise PkiError(f"{where}: ca-cert.pem is not a CA certificate (BasicConstraints)")
        if self.cert.not_valid_after_utc <= to_datetime(now):
            raise PkiError(f"{where}: ca-cert.pem expired on "
                           f"{self.cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z")
        path = list(self.chain) or [self.cert]
        for child, parent in itertools.pairwise(path):
            _issued_by(child, parent, where)
        last = path[-1]
        if not any(_is_issued_by(last, root) for root in self.roots):
            raise PkiError(f"{where}: {_name(last)} does not chain to any certificate in "
                           "root-cert.pem (cert-chain.pem must lead from ca-cert.pem to it)")


def make_bundle(cert: x509.Certificate, key: CertificateIssuerPrivateKeyTypes,
                chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate]
                ) -> SigningBundle:
    """Normalise ``cert-chain.pem``, which Istio's docs build as ca-cert + intermediates +
    root (and some tools without ca-cert or the root): the chain starts at the signing cert
    and stops before the roots, so each certificate appears once in a response, root last."""
    root_der = {r.public_bytes(serialization.Encoding.DER) for r in roots}

    def is_root(c: x509.Certificate) -> bool:
        return c.public_bytes(serialization.Encoding.DER) in root_der

    middle = [c for c in chain if c != cert and not is_root(c)]
    head = [] if is_root(cert) else [cert]
    return SigningBundle(cert, key, tuple(head + middle), tuple(roots))


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _is_issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    if child == parent:
        return True
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _issued_by(child: x509.Certificate, parent: x509.Certificate, where: str) -> None:
    if not _is_issued_by(child, parent):
        raise PkiError(f"{where}: {_name(child)} is not signed by {_name(parent)} "
                       "(check the order of cert-chain.pem: signing cert first, root last)")
