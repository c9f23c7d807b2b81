"""istio-ca and file: roots on disk, restarts, plugged-in CAs, and the provider contract."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pilotfish.core.security import signing
from pilotfish.core.security.identity import Identity
from pilotfish.core.security.pki import cert_pem, key_pem, self_signed_root, to_datetime
from pilotfish.core.security.provider import (
    CaSetupError,
    CertError,
    CertSettings,
    Refusal,
    SigningRequest,
)
from pilotfish.plugins.certs import file_certs, istio_ca
from pilotfish.testing.certs import check_cert_provider, make_csr, uri_sans, verify_chain

NOW = time.time()


def provider(state: Path, ca_dir: Path | None = None) -> istio_ca.IstioCa:
    return istio_ca.pilotfish_cert_provider(CertSettings(state_dir=state, ca_dir=ca_dir))


def intermediate(root, root_key, name: str = "Intermediate CA"):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(root.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(to_datetime(NOW - 60)).not_valid_after(to_datetime(NOW + 86400 * 30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(root_key, hashes.SHA256())
    )
    return cert, key


def plug_in(directory: Path, with_root_in_chain: bool = True):
    """Istio's cacerts layout: an intermediate signs, the root is offline."""
    root, root_key = self_signed_root("cluster.local", NOW)
    inter, inter_key = intermediate(root, root_key)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca-cert.pem").write_text(cert_pem(inter))
    (directory / "ca-key.pem").write_text(key_pem(inter_key))
    (directory / "root-cert.pem").write_text(cert_pem(root))
    chain = cert_pem(inter) + (cert_pem(root) if with_root_in_chain else "")
    (directory / "cert-chain.pem").write_text(chain)
    return root, inter


REVIEWS = Identity("shop", "reviews")


def sign(ca, identity: Identity = REVIEWS) -> list[str]:
    spiffe = identity.spiffe_id("cluster.local")
    csr, ttl = signing.check_request(make_csr()[0], spiffe, 0, ca.settings)
    return ca.sign(SigningRequest(csr, identity, spiffe, ttl), NOW)


def test_first_start_makes_a_root_with_a_private_key_file(tmp_path):
    ca = provider(tmp_path / "state")
    state = tmp_path / "state"
    assert stat.S_IMODE(os.stat(state / "ca-key.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state / "root-cert.pem").st_mode) == 0o644
    assert (state / "root-cert.pem").read_text() == ca.trust_bundle()
    root = x509.load_pem_x509_certificate(ca.trust_bundle().encode())
    assert root.subject.rfc4514_string() == "O=cluster.local"
    assert root.not_valid_after_utc.timestamp() > NOW + 3649 * 86400


def test_restart_keeps_the_same_root(tmp_path):
    first = provider(tmp_path)
    chain = sign(first)
    second = provider(tmp_path)
    assert second.trust_bundle() == first.trust_bundle()
    verify_chain(chain, second.trust_bundle())  # old certificates stay valid


def test_plugged_in_root_with_an_intermediate_puts_it_in_the_chain(tmp_path):
    root, inter = plug_in(tmp_path / "cacerts")
    ca = provider(tmp_path / "state", tmp_path / "cacerts")
    chain = sign(ca)
    assert len(chain) == 3  # leaf, intermediate, root: the root appears once, last
    assert x509.load_pem_x509_certificate(chain[1].encode()) == inter
    assert x509.load_pem_x509_certificate(chain[2].encode()) == root
    leaf = verify_chain(chain, cert_pem(root))
    assert leaf.issuer == inter.subject
    assert uri_sans(leaf) == ["spiffe://cluster.local/ns/shop/sa/reviews"]
    assert not (tmp_path / "state" / "ca-key.pem").exists()  # nothing generated


def test_cert_chain_without_the_root_works_too(tmp_path):
    root, inter = plug_in(tmp_path, with_root_in_chain=False)
    chain = sign(provider(tmp_path))  # the files are in the state directory itself
    assert [x509.load_pem_x509_certificate(c.encode()) for c in chain[1:]] == [inter, root]


@pytest.mark.parametrize(("breakage", "message"), [
    (lambda d: (d / "ca-key.pem").unlink(), "ca-key.pem: missing"),
    (lambda d: (d / "ca-key.pem").write_text(key_pem(ec.generate_private_key(ec.SECP256R1()))),
     "ca-key.pem does not belong to ca-cert.pem"),
    (lambda d: (d / "root-cert.pem").write_text(cert_pem(self_signed_root("x", NOW)[0])),
     "does not chain to any certificate in root-cert.pem"),
    (lambda d: (d / "ca-cert.pem").write_text("not a certificate"),
     "ca-cert.pem: no PEM certificate could be read"),
])
def test_broken_plugged_in_files_name_the_problem(tmp_path, breakage, message):
    plug_in(tmp_path / "cacerts")
    breakage(tmp_path / "cacerts")
    with pytest.raises(CaSetupError, match=message):
        provider(tmp_path / "state", tmp_path / "cacerts")


def test_unwritable_state_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CaSetupError, match="cannot create the state directory"):
        provider(blocker / "state")


def test_istio_ca_keeps_the_provider_contract(tmp_path):
    check_cert_provider(provider(tmp_path))


def test_istio_ca_with_an_intermediate_keeps_the_provider_contract(tmp_path):
    plug_in(tmp_path / "cacerts")
    check_cert_provider(provider(tmp_path / "state", tmp_path / "cacerts"))


# -- file ---------------------------------------------------------------------------------


def mounted(directory: Path) -> Path:
    """What cert-manager or SPIRE would mount: a root, and discovery's own cert and key."""
    ca = provider(directory / "issuer")
    serving = ca.serving_certificate(["istiod.istio-system.svc"], ["127.0.0.1"], NOW)
    mount = directory / "mount"
    mount.mkdir()
    (mount / "root-cert.pem").write_text(ca.trust_bundle())
    (mount / "cert-chain.pem").write_text(serving.chain_pem)
    (mount / "key.pem").write_text(serving.key_pem)
    return mount


def test_file_provider_serves_the_mounted_root_and_refuses_to_sign(tmp_path):
    mount = mounted(tmp_path)
    certs = file_certs.pilotfish_cert_provider(CertSettings(state_dir=tmp_path / "s",
                                                            ca_dir=mount))
    assert certs.trust_bundle() == (mount / "root-cert.pem").read_text()
    spiffe = "spiffe://cluster.local/ns/shop/sa/reviews"
    csr, _ = signing.check_request(make_csr()[0], spiffe, 0, CertSettings(state_dir=tmp_path))
    with pytest.raises(CertError, match="cert provider 'file' does not sign") as info:
        certs.sign(SigningRequest(csr, Identity("shop", "reviews"), spiffe, 60), NOW)
    assert info.value.refusal is Refusal.FAILED_PRECONDITION
    check_cert_provider(certs, signs=False)


def test_file_provider_without_a_root_says_which_file(tmp_path):
    with pytest.raises(CaSetupError, match=r"root-cert\.pem: missing"):
        file_certs.pilotfish_cert_provider(CertSettings(state_dir=tmp_path))
