"""ztunnel's key, CSR and certificate reading through libcrypto, checked against
``cryptography`` (which reads what libcrypto wrote and wrote what libcrypto reads)."""

from __future__ import annotations

import datetime
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from pilotfish.core.security import csr as ca_csr
from pilotfish.core.security import libcrypto, node_secret, workload_cert
from pilotfish.core.security.cert_info import CertificateError
from pilotfish.core.security.libcrypto import LibcryptoError
from pilotfish.testing.mesh_ca import MeshCA

ME = "spiffe://cluster.local/ns/shop/sa/reviews"
SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_the_csr_verifies_and_asks_for_the_identity_as_a_critical_uri_san():
    made = libcrypto.make_key_and_csr(ME)
    csr = x509.load_pem_x509_csr(made.csr_pem.encode())
    assert csr.is_signature_valid
    assert csr.subject == x509.Name([])
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA256)
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [ME]
    # The CA's own checks take it as they take the agent's.
    parsed = ca_csr.parse(made.csr_pem)
    assert ca_csr.describe_key(parsed) == "ECDSA P-256"
    ca_csr.check_identity(parsed, ME)


def test_the_key_is_unencrypted_pkcs8_p256_and_its_public_half_is_the_csrs():
    made = libcrypto.make_key_and_csr(ME)
    assert made.key_pem.startswith("-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(made.key_pem.encode(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert key.public_key().public_bytes(*SPKI) == made.public_key_der
    csr = x509.load_pem_x509_csr(made.csr_pem.encode())
    assert csr.public_key().public_bytes(*SPKI) == made.public_key_der
    assert libcrypto.make_key_and_csr(ME).public_key_der != made.public_key_der  # fresh


def _unusual_certificate() -> x509.Certificate:
    """Names that need escaping, UTF-8, several SAN kinds and a long serial."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fisch, Pilot & Söhne"),
        x509.NameAttribute(NameOID.COMMON_NAME, "a+b=c \"quoted\" #1;"),
    ])
    issuer = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")])
    start = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(0x00F1E2D3C4B5A69788796A5B4C3D2E1F)
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=400))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("reviews.shop.svc"),
                x509.UniformResourceIdentifier(ME),
                x509.UniformResourceIdentifier("https://example.com/x")]), critical=False)
            .sign(key, hashes.SHA256()))


def test_parsed_fields_equal_cryptographys():
    ca = MeshCA()
    made = libcrypto.make_key_and_csr(ME)
    leaf, root = (x509.load_pem_x509_certificate(p.encode())
                  for p in ca.sign_csr(made.csr_pem, ME))
    for cert in (leaf, root, _unusual_certificate()):
        pem = cert.public_bytes(serialization.Encoding.PEM)
        [read] = libcrypto.load_certificates(pem, "test")
        assert read.info == workload_cert.describe(cert)
        assert read.der == cert.public_bytes(serialization.Encoding.DER)
        assert read.pem == pem.decode()
        assert read.public_key_der == cert.public_key().public_bytes(*SPKI)


def test_every_certificate_of_a_bundle_is_read_in_order():
    ca, other = MeshCA(), MeshCA("other.domain")
    text = (ca.roots_pem + b"\n" + other.roots_pem).decode()
    read = libcrypto.load_certificates(text, "roots")
    assert [c.info.subject for c in read] == ["O=cluster.local", "O=other.domain"]


@pytest.mark.parametrize(("text", "reason"), [
    ("", "no start line"),
    ("not a certificate", "no start line"),
    ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "error:"),
])
def test_unreadable_text_names_where_and_openssls_reason(text, reason):
    with pytest.raises(LibcryptoError, match=f"cert_chain\\[0\\]: no PEM certificate.*{reason}"):
        libcrypto.load_certificates(text, "cert_chain[0]")


def test_a_damaged_second_certificate_is_not_skipped():
    good = MeshCA().roots_pem.decode()
    broken = good.replace(good.splitlines()[3], "!!!!")
    with pytest.raises(LibcryptoError, match="certificate 2"):
        libcrypto.load_certificates(good + broken, "roots")


def test_an_answer_becomes_a_node_secret_with_the_agents_checks():
    ca = MeshCA()
    made = libcrypto.make_key_and_csr(ME)
    now = time.time()
    secret = node_secret.from_response(ca.sign_csr(made.csr_pem, ME), made, ME, now)
    assert secret.leaf.spiffe_id == ME and secret.leaf.valid_at(now)
    assert secret.roots_pem == ca.roots_pem.decode()
    assert secret.chain_pem.count("BEGIN CERTIFICATE") == 1  # the root is left out
    assert secret.received_at == now
    other = libcrypto.make_key_and_csr(ME)
    with pytest.raises(CertificateError, match="not for the key in the CSR"):
        node_secret.from_response(ca.sign_csr(other.csr_pem, ME), made, ME, now)
    them = "spiffe://cluster.local/ns/shop/sa/cart"
    with pytest.raises(CertificateError, match=r"issued .*sa/cart, but .*sa/reviews"):
        node_secret.from_response(ca.sign_csr(made.csr_pem, them), made, ME, now)
    with pytest.raises(CertificateError, match="not valid now"):
        node_secret.from_response(ca.sign_csr(made.csr_pem, ME), made, ME, now + 7200)
    with pytest.raises(CertificateError, match="empty certificate chain"):
        node_secret.from_response([], made, ME, now)
    with pytest.raises(CertificateError, match=r"cert_chain\[0\]: no PEM"):
        node_secret.from_response(["junk", "junk"], made, ME, now)


def test_a_python_with_openssl_built_in_loads_the_systems_libcrypto():
    # No libcrypto among the mapped files: the system's OpenSSL 3 is loaded instead.
    lib = libcrypto._load("7f0000000000-7f0000001000 r--p 00000000 fe:00 1  /usr/lib/libc.so.6\n")
    assert "libcrypto.so.3" in lib._name
    assert hasattr(lib, "EVP_PKEY_CTX_new_from_name")
