"""The native proxy's own reading of a certificate's URI names (its SPIFFE identity),
checked against the cryptography library's reading of the same certificates."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from pilotfish.core.native.tls import uri_names
from pilotfish.testing.certs import make_key

SPIFFE = "spiffe://cluster.local/ns/shop/sa/web"


def _certificate(names: list[x509.GeneralName] | None, key_kind: str = "ec") -> bytes:
    key = make_key(key_kind)
    subject = x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "pilotfish")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _cryptography_reads(pem: bytes) -> list[str]:
    certificate = x509.load_pem_x509_certificate(pem)
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(extension.value.get_values_for_type(x509.UniformResourceIdentifier))


@pytest.mark.parametrize(("names", "key_kind"), [
    ([x509.UniformResourceIdentifier(SPIFFE)], "ec"),  # an Istio workload certificate
    ([x509.UniformResourceIdentifier(SPIFFE)], "rsa"),  # long-form lengths throughout
    ([x509.DNSName("web.shop.svc"), x509.UniformResourceIdentifier(SPIFFE),
      x509.UniformResourceIdentifier("https://example.com/other")], "ec"),
    ([x509.DNSName("web.shop.svc")], "ec"),  # no URI name
    (None, "ec"),  # no subject alternative names at all
    ([x509.UniformResourceIdentifier(f"spiffe://td/ns/n{i}/sa/{'s' * 40}")
      for i in range(20)], "ec"),  # a SAN longer than 255 bytes
])
def test_uri_names_read_as_the_cryptography_library_reads_them(
        names: list[x509.GeneralName] | None, key_kind: str) -> None:
    pem = _certificate(names, key_kind)
    assert uri_names(pem) == _cryptography_reads(pem)


def test_the_first_certificate_of_a_chain_is_the_one_read() -> None:
    leaf = _certificate([x509.UniformResourceIdentifier(SPIFFE)])
    issuer = _certificate([x509.UniformResourceIdentifier("spiffe://cluster.local/ca")])
    assert uri_names(leaf + issuer) == [SPIFFE]


@pytest.mark.parametrize("pem", [
    b"", b"not a certificate",
    b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",  # truncated DER
])
def test_what_is_not_a_certificate_has_no_names(pem: bytes) -> None:
    assert uri_names(pem) == []


def test_a_truncated_certificate_has_no_names() -> None:
    pem = _certificate([x509.UniformResourceIdentifier(SPIFFE)])
    lines = pem.splitlines()
    assert uri_names(b"\n".join(lines[:4] + lines[-1:])) == []
