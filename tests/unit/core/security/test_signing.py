"""CSR checks and workload certificates: the SAN is the caller's, the TTL is capped, the
chain is leaf first and root last, ECDSA P-256 and RSA 2048 keys are accepted."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pilotfish.core.security import csr as csr_mod
from pilotfish.core.security import signing
from pilotfish.core.security.identity import Identity
from pilotfish.core.security.pki import make_bundle, same_public_key, self_signed_root
from pilotfish.core.security.provider import CertError, CertSettings, Refusal, SigningRequest
from pilotfish.testing.certs import make_csr, uri_sans, verify_chain

NOW = 1_800_000_000.0
CALLER = Identity("shop", "reviews", "reviews-0")
SPIFFE = "spiffe://cluster.local/ns/shop/sa/reviews"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    cert, key = self_signed_root("cluster.local", NOW - 3600)
    return make_bundle(cert, key, [], [cert])


def settings(**kwargs) -> CertSettings:
    return CertSettings(state_dir=None, **kwargs)  # type: ignore[arg-type]


def sign(bundle, csr_pem: str, ttl: float = 0, **kw) -> list[str]:
    csr, resolved = signing.check_request(csr_pem, SPIFFE, ttl, settings(**kw))
    return signing.sign_workload(bundle, SigningRequest(csr, CALLER, SPIFFE, resolved), NOW)


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_certificate_carries_the_callers_spiffe_id_and_the_csrs_key(bundle, kind):
    csr_pem, key_pem = make_csr(kind)
    chain = sign(bundle, csr_pem)
    leaf = verify_chain(chain, bundle.roots_pem, NOW)
    assert uri_sans(leaf) == [SPIFFE]
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    assert same_public_key(leaf, key)
    assert leaf.subject == x509.Name([])
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign


def test_chain_is_leaf_then_root_each_its_own_pem(bundle):
    chain = sign(bundle, make_csr()[0])
    assert len(chain) == 2 and all(c.endswith("\n") for c in chain)
    assert chain[-1] == bundle.roots_pem


def test_default_ttl_is_24h_and_not_before_allows_clock_skew(bundle):
    leaf = x509.load_pem_x509_certificate(sign(bundle, make_csr()[0])[0].encode())
    assert leaf.not_valid_after_utc.timestamp() == NOW + 86400
    assert leaf.not_valid_before_utc.timestamp() == NOW - 120


def test_requested_ttl_is_honoured_and_the_maximum_enforced(bundle):
    leaf = x509.load_pem_x509_certificate(sign(bundle, make_csr()[0], ttl=120)[0].encode())
    assert leaf.not_valid_after_utc.timestamp() == NOW + 120
    with pytest.raises(CertError, match="requested TTL 2400h0m0s is greater than the max "
                                        "allowed TTL 2160h0m0s") as info:
        sign(bundle, make_csr()[0], ttl=100 * 86400)
    assert info.value.refusal is Refusal.INVALID_ARGUMENT
    with pytest.raises(CertError, match="greater than the max allowed TTL 1h0m0s"):
        sign(bundle, make_csr()[0], ttl=7200, max_workload_ttl=3600)
    # one second over still reads as two different numbers
    with pytest.raises(CertError, match=r"TTL 2160h0m1s is greater than the max allowed "
                                        r"TTL 2160h0m0s"):
        sign(bundle, make_csr()[0], ttl=90 * 86400 + 1)
    with pytest.raises(CertError, match=r"TTL 1m0.5s is greater than the max allowed TTL 1m0s"):
        sign(bundle, make_csr()[0], ttl=60.5, max_workload_ttl=60)


def test_lifetime_is_clamped_to_the_signing_certificate(bundle):
    short_root, key = self_signed_root("cluster.local", NOW, ttl=600)
    short = make_bundle(short_root, key, [], [short_root])
    csr, ttl = signing.check_request(make_csr()[0], SPIFFE, 0, settings())
    leaf_pem = signing.sign_workload(short, SigningRequest(csr, CALLER, SPIFFE, ttl), NOW)[0]
    leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
    assert leaf.not_valid_after_utc == short_root.not_valid_after_utc


def test_csr_asking_for_another_identity_is_refused(bundle):
    other = "spiffe://cluster.local/ns/shop/sa/admin"
    with pytest.raises(CertError, match=f"CSR asks for identity {other} but the caller is "
                                        f"authenticated as {SPIFFE}") as info:
        sign(bundle, make_csr(uris=[other])[0])
    assert info.value.refusal is Refusal.PERMISSION_DENIED


def test_csr_asking_for_its_own_identity_or_no_spiffe_id_is_fine(bundle):
    for uris in ([SPIFFE], ["https://example.com/not-spiffe"], []):
        leaf = verify_chain(sign(bundle, make_csr(uris=uris)[0]), bundle.roots_pem, NOW)
        assert uri_sans(leaf) == [SPIFFE]  # only the caller's ID, whatever else was asked


def _csr_with(key) -> str:
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key,
                                                                                   algorithm)
    return csr.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(("key", "message"), [
    (rsa.generate_private_key(public_exponent=65537, key_size=1024), "RSA 1024 key"),
    (rsa.generate_private_key(public_exponent=3, key_size=2048), "public exponent 3; only 65537"),
    (ec.generate_private_key(ec.SECP521R1()), "curve secp521r1"),
    (ed25519.Ed25519PrivateKey.generate(), "unsupported Ed25519 key"),
])
def test_unsupported_keys_are_refused(bundle, key, message):
    with pytest.raises(CertError, match=message) as info:
        sign(bundle, _csr_with(key))
    assert info.value.refusal is Refusal.INVALID_ARGUMENT


@pytest.mark.parametrize(("pem", "message"), [
    ("", "empty CSR"),
    ("garbage", "not PEM"),
    ("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
     "cannot be parsed"),
])
def test_malformed_csrs_are_refused(bundle, pem, message):
    with pytest.raises(CertError, match=message):
        sign(bundle, pem)


def test_csr_with_a_bad_signature_is_refused():
    pem = make_csr()[0]
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(
        serialization.Encoding.DER))
    der[-5] ^= 0xFF  # inside the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CertError, match="signature does not verify"):
        csr_mod.parse(tampered.decode())


def test_serving_certificate_has_discoverys_names(bundle):
    serving = signing.sign_serving(bundle, ["istiod.istio-system.svc"], ["127.0.0.1"], 3600,
                                   NOW)
    leaf = x509.load_pem_x509_certificate(serving.chain_pem.encode())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["istiod.istio-system.svc"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert serving.not_after == NOW + 3600
