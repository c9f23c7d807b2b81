"""The workload certificate as files (``--output-certs``) and the relay's TLS context."""

from __future__ import annotations

import os
import ssl
import stat

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pilotfish.agent import cert_files
from pilotfish.agent.xds_relay import client_context
from tests.unit.agent.test_sds_server import ME, ROOT, new_secret


def test_the_three_files_hold_the_chain_its_key_and_the_roots(tmp_path) -> None:
    secret = new_secret().with_roots([ROOT])
    cert_files.write(tmp_path / "certs", secret)  # made when missing
    folder = tmp_path / "certs"
    assert sorted(p.name for p in folder.iterdir()) == ["cert-chain.pem", "key.pem",
                                                        "root-cert.pem"]
    leaf, *_ = x509.load_pem_x509_certificates((folder / "cert-chain.pem").read_bytes())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [ME]
    key = serialization.load_pem_private_key((folder / "key.pem").read_bytes(), None)
    assert key.public_key() == leaf.public_key()
    assert x509.load_pem_x509_certificates((folder / "root-cert.pem").read_bytes()) == [ROOT]
    assert stat.S_IMODE(os.stat(folder / "key.pem").st_mode) == 0o600


def test_a_renewal_replaces_the_files_and_leaves_no_temporary_behind(tmp_path) -> None:
    first, second = new_secret(), new_secret()
    cert_files.write(tmp_path, first)
    inode = os.stat(tmp_path / "key.pem").st_ino
    cert_files.write(tmp_path, second)
    assert (tmp_path / "key.pem").read_text() == second.key_pem
    assert (tmp_path / "cert-chain.pem").read_text() == second.chain_pem
    assert os.stat(tmp_path / "key.pem").st_ino != inode  # renamed over, not rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cert-chain.pem", "key.pem",
                                                          "root-cert.pem"]


def test_the_key_is_written_before_the_chain() -> None:
    names = [name for name, _, _ in cert_files.contents(new_secret())]
    assert names == ["key.pem", "cert-chain.pem", "root-cert.pem"]


def test_the_relay_context_presents_the_workload_certificate_and_trusts_the_roots() -> None:
    context = client_context(new_secret().with_roots([ROOT]))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    [held] = context.get_ca_certs()
    assert held["subject"] == ((("organizationName", "cluster.local"),),)
