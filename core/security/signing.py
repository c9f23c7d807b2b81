"""Signing decisions for workload and discovery certificates (sans-IO: time is an argument).

Istio's template (``genCertTemplateFromCSR``): random serial, empty subject, NotBefore two
minutes back for clock skew, NotAfter = now + TTL clamped to the signer's own NotAfter,
DigitalSignature|KeyEncipherment, server and client auth, not a CA, and the SPIFFE URI SAN
marked critical because the subject is empty.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPublicKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID

from pilotfish.core.security import csr as csr_mod
from pilotfish.core.security.pki import SigningBundle, cert_pem, key_pem, to_datetime
from pilotfish.core.security.provider import (
    CertError,
    CertSettings,
    Refusal,
    ServingCert,
    SigningRequest,
)

CLOCK_SKEW_GRACE = 120.0  # ClockSkewGracePeriod

_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=True,
    data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
    encipher_only=False, decipher_only=False)
_EXT_USAGE = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                    ExtendedKeyUsageOID.CLIENT_AUTH])


def resolve_ttl(requested: float, settings: CertSettings) -> float:
    """The lifetime to sign for: the default for 0 or less, refused above the maximum."""
    if requested <= 0:
        return settings.workload_ttl
    if requested > settings.max_workload_ttl:
        raise CertError(
            Refusal.INVALID_ARGUMENT,
            f"requested TTL {_human(requested)} is greater than the max allowed TTL "
            f"{_human(settings.max_workload_ttl)}")
    return float(requested)


def _human(seconds: float) -> str:
    """Go's duration form (``2160h0m1s``), exact to the second so two different TTLs never
    read the same; fractions of a second are kept when there are any."""
    whole = int(seconds)
    fraction = seconds - whole
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    tail = f"{secs + fraction:g}s" if fraction else f"{secs}s"
    if hours:
        return f"{hours}h{minutes}m{tail}"
    return f"{minutes}m{tail}" if minutes else tail


def check_request(csr_pem: str, spiffe_id: str, requested_ttl: float,
                  settings: CertSettings) -> tuple[x509.CertificateSigningRequest, float]:
    """Everything core decides before a provider signs: a sound CSR that asks for no one
    else's identity, and a lifetime within bounds."""
    csr = csr_mod.parse(csr_pem)
    csr_mod.check_identity(csr, spiffe_id)
    return csr, resolve_ttl(requested_ttl, settings)


def _template(bundle: SigningBundle, public_key: CertificatePublicKeyTypes,
              sans: Sequence[x509.GeneralName], ttl: float, now: float
              ) -> x509.CertificateBuilder:
    not_after = min(to_datetime(now + ttl), bundle.cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(bundle.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(to_datetime(now - CLOCK_SKEW_GRACE))
        .not_valid_after(not_after)
        .add_extension(_USAGE, critical=True)
        .add_extension(_EXT_USAGE, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=True)
    )
    return builder.add_extension(_authority_key_id(bundle.cert), critical=False)


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    # Chain building in Envoy/BoringSSL matches AKI to the issuer's SKI when both exist.
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            cast(CertificateIssuerPublicKeyTypes, issuer.public_key()))


def _sign(builder: x509.CertificateBuilder, bundle: SigningBundle) -> x509.Certificate:
    return builder.sign(bundle.key, hashes.SHA256())


def response_chain(leaf: x509.Certificate, bundle: SigningBundle) -> list[str]:
    """``[leaf, intermediates..., roots]``: one PEM per element, the root bundle last."""
    return [cert_pem(leaf), *(cert_pem(c) for c in bundle.chain), bundle.roots_pem]


def sign_workload(bundle: SigningBundle, request: SigningRequest, now: float) -> list[str]:
    public_key = request.csr.public_key()
    if bundle.cert.not_valid_after_utc <= to_datetime(now):
        raise CertError(Refusal.INTERNAL, "CA certificate has expired; cannot sign")
    builder = _template(bundle, public_key, [x509.UniformResourceIdentifier(request.spiffe_id)],
                        request.ttl, now)
    return response_chain(_sign(builder, bundle), bundle)


def sign_serving(bundle: SigningBundle, dns_names: Sequence[str], ip_addresses: Sequence[str],
                 ttl: float, now: float) -> ServingCert:
    """Discovery's own DNS certificate (istiod's), with a fresh ECDSA P-256 key."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    leaf = _sign(_template(bundle, key.public_key(), sans, ttl, now), bundle)
    chain = "".join([cert_pem(leaf), *(cert_pem(c) for c in bundle.chain)])
    return ServingCert(chain, key_pem(key), leaf.not_valid_after_utc.timestamp())
