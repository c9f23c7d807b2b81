"""Who is calling on 15012: a workload certificate first, then a pod token (sans-IO)."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pilotfish.core.security import tokens
from pilotfish.core.security.identity import Identity
from pilotfish.core.security.pki import make_bundle, self_signed_root
from pilotfish.core.security.provider import CertError, CertSettings, Refusal
from pilotfish.discovery.authn import Authenticator, Credentials, check_proxy_identity
from pilotfish.discovery.ca_service import create_certificate
from pilotfish.plugins.certs.istio_ca import IstioCa
from pilotfish.testing.certs import make_csr, uri_sans, verify_chain

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def ca() -> IstioCa:
    cert, key = self_signed_root("cluster.local", NOW - 60)
    return IstioCa(make_bundle(cert, key, [], [cert]), CertSettings(state_dir=None))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return tokens.generate_keypair()


def workload_cert(ca: IstioCa, identity: Identity, trust_domain: str = "cluster.local") -> bytes:
    chain = create_certificate(ca, CertSettings(state_dir=None, trust_domain=trust_domain),  # type: ignore[arg-type]
                               identity, make_csr()[0], 0, {}, NOW)
    return x509.load_pem_x509_certificate(chain[0].encode()).public_bytes(
        serialization.Encoding.DER)


def test_bearer_tokens_are_read_from_authorization_metadata():
    creds = Credentials.from_metadata(
        [("user-agent", "grpc"), ("authorization", "Bearer abc"), ("authorization", "basic x")],
        None)
    assert creds.tokens == ("abc",)


def test_a_token_proves_its_identity(keys):
    token = tokens.issue(keys[0], "shop", "reviews", "reviews-0", 60, now=NOW)
    auth = Authenticator("cluster.local", keys[1])
    identity = auth.authenticate(Credentials((token,)), NOW)
    assert identity == Identity("shop", "reviews", "reviews-0", "token")


def test_a_workload_certificate_proves_its_spiffe_id(ca, keys):
    der = workload_cert(ca, Identity("shop", "ratings"))
    identity = Authenticator("cluster.local", None).authenticate(Credentials((), der), NOW)
    assert (identity.namespace, identity.service_account, identity.source) == \
        ("shop", "ratings", "certificate")


def test_certificate_wins_over_a_token(ca, keys):
    der = workload_cert(ca, Identity("shop", "ratings"))
    token = tokens.issue(keys[0], "shop", "reviews", "p", 60, now=NOW)
    identity = Authenticator("cluster.local", keys[1]).authenticate(Credentials((token,), der),
                                                                    NOW)
    assert identity.service_account == "ratings"


def test_certificate_of_another_trust_domain_falls_back_to_the_token(ca, keys):
    der = workload_cert(ca, Identity("shop", "ratings"), trust_domain="other.example")
    auth = Authenticator("cluster.local", keys[1])
    with pytest.raises(CertError, match=r"trust domain 'other\.example'") as info:
        auth.authenticate(Credentials((), der), NOW)
    assert info.value.refusal is Refusal.UNAUTHENTICATED
    token = tokens.issue(keys[0], "shop", "reviews", "p", 60, now=NOW)
    assert auth.authenticate(Credentials((token,), der), NOW).service_account == "reviews"


def test_discoverys_dns_certificate_is_no_workload_identity(ca):
    serving = ca.serving_certificate(["istiod.istio-system.svc"], [], NOW)
    der = x509.load_pem_x509_certificate(serving.chain_pem.encode()).public_bytes(
        serialization.Encoding.DER)
    with pytest.raises(CertError, match="carries 0 SPIFFE IDs"):
        Authenticator("cluster.local", None).authenticate(Credentials((), der), NOW)


def test_no_credentials_and_no_token_key_are_explained(keys):
    with pytest.raises(CertError, match="no credentials"):
        Authenticator("cluster.local", keys[1]).authenticate(Credentials(), NOW)
    token = tokens.issue(keys[0], "shop", "reviews", "p", 60, now=NOW)
    with pytest.raises(CertError, match="without --token-key"):
        Authenticator("cluster.local", None).authenticate(Credentials((token,)), NOW)


def test_every_failed_proof_is_named(keys):
    expired = tokens.issue(keys[0], "shop", "reviews", "p", 60, now=NOW - 3600)
    with pytest.raises(CertError, match="bearer token: token expired"):
        Authenticator("cluster.local", keys[1]).authenticate(Credentials((expired,)), NOW)


def test_proxy_must_be_in_the_callers_namespace_and_service_account():
    caller = Identity("shop", "reviews")
    check_proxy_identity(caller, "shop", {})
    check_proxy_identity(caller, "shop", {"SERVICE_ACCOUNT": "reviews"})
    with pytest.raises(CertError, match="may not connect as a proxy in namespace 'bank'"):
        check_proxy_identity(caller, "bank", {})
    with pytest.raises(CertError, match="SERVICE_ACCOUNT 'admin'") as info:
        check_proxy_identity(caller, "shop", {"SERVICE_ACCOUNT": "admin"})
    assert info.value.refusal is Refusal.PERMISSION_DENIED


def test_create_certificate_signs_for_the_caller_only(ca):
    settings = CertSettings(state_dir=None)  # type: ignore[arg-type]
    chain = create_certificate(ca, settings, Identity("shop", "reviews"), make_csr("rsa")[0],
                               3600, {}, NOW)
    leaf = verify_chain(chain, ca.trust_bundle(), NOW)
    assert uri_sans(leaf) == ["spiffe://cluster.local/ns/shop/sa/reviews"]
    with pytest.raises(CertError, match="caller shop/reviews is not a node agent"):
        create_certificate(ca, settings, Identity("shop", "reviews"), make_csr()[0], 0,
                           {"ImpersonatedIdentity": "spiffe://cluster.local/ns/x/sa/y"}, NOW)
