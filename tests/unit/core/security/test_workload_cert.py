"""The agent's key, CSR and the checks on what the CA returns (sans-IO, real crypto)."""

from __future__ import annotations

import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pilotfish.core.security import csr as ca_csr
from pilotfish.core.security import pki, signing, workload_cert
from pilotfish.core.security.identity import Identity
from pilotfish.core.security.provider import SigningRequest
from pilotfish.core.security.workload_cert import CertificateError

NOW = time.time()
ME = "spiffe://cluster.local/ns/shop/sa/reviews"


def ca(trust_domain: str = "cluster.local") -> pki.SigningBundle:
    root, key = pki.self_signed_root(trust_domain, NOW)
    return pki.make_bundle(root, key, [], [root])


def sign(bundle: pki.SigningBundle, key, spiffe: str = ME, ttl: float = 3600.0,
         now: float = NOW) -> list[str]:
    csr = x509.load_pem_x509_csr(workload_cert.make_csr(key, spiffe).encode())
    request = SigningRequest(csr, Identity("shop", "reviews"), spiffe, ttl)
    return signing.sign_workload(bundle, request, now)


@pytest.mark.parametrize(("kind", "expected"), [("ec", "ECDSA P-256"), ("rsa", "RSA 2048")])
def test_key_types_are_what_the_ca_accepts(kind, expected):
    key = workload_cert.generate_key(kind)
    assert isinstance(key, ec.EllipticCurvePrivateKey if kind == "ec" else rsa.RSAPrivateKey)
    csr = ca_csr.parse(workload_cert.make_csr(key, ME))  # the CA's own checks
    assert ca_csr.describe_key(csr) == expected
    assert ca_csr.requested_uris(csr) == [ME]
    ca_csr.check_identity(csr, ME)


def test_unknown_key_type_is_refused_by_name():
    with pytest.raises(ValueError, match=r"dsa.*ec, rsa"):
        workload_cert.generate_key("dsa")


def test_the_key_pem_is_pkcs8_and_unencrypted():
    text = workload_cert.key_pem(workload_cert.generate_key())
    assert text.startswith("-----BEGIN PRIVATE KEY-----")


def test_a_signed_answer_becomes_a_secret_without_the_root_in_the_chain():
    bundle, key = ca(), workload_cert.generate_key()
    secret = workload_cert.from_response(sign(bundle, key), key, ME, (), NOW)
    assert [c.subject for c in secret.chain] == [x509.Name([])]  # the leaf only
    assert secret.roots == bundle.roots
    assert secret.leaf.spiffe_id == ME
    assert secret.leaf.serial == format(secret.chain[0].serial_number, "x")
    assert secret.leaf.valid_at(NOW) and not secret.leaf.valid_at(NOW + 3601)
    assert secret.received_at == NOW
    assert "PRIVATE KEY" in secret.key_pem and "PRIVATE KEY" not in repr(secret)


def test_roots_of_the_answer_and_the_root_file_are_both_trusted_once_each():
    old, new = ca(), ca()
    key = workload_cert.generate_key()
    secret = workload_cert.from_response(sign(new, key), key, ME,
                                         [old.roots[0], new.roots[0]], NOW)
    assert secret.roots == (new.roots[0], old.roots[0])
    assert secret.roots_pem.count("BEGIN CERTIFICATE") == 2


def test_a_certificate_for_another_key_is_refused():
    bundle = ca()
    chain = sign(bundle, workload_cert.generate_key())
    with pytest.raises(CertificateError, match="not for the key in the CSR"):
        workload_cert.from_response(chain, workload_cert.generate_key(), ME, (), NOW)


def test_a_certificate_for_another_workload_is_refused():
    bundle, key = ca(), workload_cert.generate_key()
    chain = sign(bundle, key, "spiffe://cluster.local/ns/shop/sa/ratings")
    with pytest.raises(CertificateError, match=r"issued spiffe://.*/sa/ratings.*runs as .*"
                                                r"/sa/reviews"):
        workload_cert.from_response(chain, key, ME, (), NOW)


def test_the_ca_decides_the_trust_domain():
    bundle, key = ca("example.org"), workload_cert.generate_key()
    chain = sign(bundle, key, "spiffe://example.org/ns/shop/sa/reviews")
    secret = workload_cert.from_response(chain, key, ME, (), NOW)
    assert secret.leaf.spiffe_id == "spiffe://example.org/ns/shop/sa/reviews"


def test_an_expired_answer_is_refused_with_a_hint_about_clocks():
    bundle, key = ca(), workload_cert.generate_key()
    chain = sign(bundle, key, ttl=60, now=NOW - 3600)
    with pytest.raises(CertificateError, match=r"not valid now.*clocks"):
        workload_cert.from_response(chain, key, ME, (), NOW)


def test_garbage_and_empty_answers_are_refused():
    key = workload_cert.generate_key()
    with pytest.raises(CertificateError, match="empty certificate chain"):
        workload_cert.from_response([], key, ME, (), NOW)
    with pytest.raises(CertificateError, match=r"cert_chain\[0\]: no PEM"):
        workload_cert.from_response(["junk", "junk"], key, ME, (), NOW)


def test_a_bare_leaf_needs_a_root_from_the_file():
    bundle, key = ca(), workload_cert.generate_key()
    leaf_only = sign(bundle, key)[:1]
    with pytest.raises(CertificateError, match="no root"):
        workload_cert.from_response(leaf_only, key, ME, (), NOW)
    secret = workload_cert.from_response(leaf_only, key, ME, bundle.roots, NOW)
    assert secret.roots == bundle.roots
