"""CSRs, chain checks and the contract every cert provider must keep.

A third-party provider's test suite can run the same checks core relies on::

    from pilotfish.testing.certs import check_cert_provider
    def test_contract(tmp_path): check_cert_provider(make_my_provider(tmp_path))

``make_csr``, ``verify_chain`` and ``create_certificate`` (a CA client) are the pieces
tests of agents and discovery use too.
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import time
from collections.abc import Sequence

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from google.protobuf import struct_pb2

from pilotfish.core.security import ca_pb2, ca_pb2_grpc
from pilotfish.core.security.identity import Identity
from pilotfish.core.security.pki import is_ca, key_pem, load_certs, load_key, same_public_key
from pilotfish.core.security.provider import CertError, CertProvider, SigningRequest

CONTRACT_IDENTITY = Identity("contract", "checker", "checker-0")
CONTRACT_TRUST_DOMAIN = "cluster.local"
DISCOVERY_NAME = "istiod.istio-system.svc"  # the name pilot-agent checks on 15012


def make_key(kind: str = "ec") -> CertificateIssuerPrivateKeyTypes:
    """``ec`` (P-256, Istio's ECC option) or ``rsa`` (2048, the agent's default)."""
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"key kind {kind!r}: expected ec or rsa")


def make_csr(kind: str = "ec", uris: Sequence[str] = (),
             key: CertificateIssuerPrivateKeyTypes | None = None) -> tuple[str, str]:
    """A PEM CSR (optionally asking for URI SANs) and its PEM private key."""
    key = key or make_key(kind)
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if uris:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(u) for u in uris]), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key_pem(key)


def self_signed(dns_name: str, days: int = 1) -> tuple[bytes, bytes]:
    """A self-signed server certificate for ``dns_name`` and its key, both PEM."""
    key = make_key()
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, dns_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), key_pem(key).encode()


def ca_signed(dns_name: str, days: int = 1, ips: Sequence[str] = ()
              ) -> tuple[bytes, bytes, bytes]:
    """A CA certificate, and a server certificate for ``dns_name`` (and the IP addresses
    ``ips``) it signed with its key: (CA, certificate, key), PEM. Both carry the key
    identifiers a strict verifier (Python 3.13's default) asks for."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = make_key(), make_key()
    ca_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    names: list[x509.GeneralName] = [x509.DNSName(dns_name)]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, dns_name)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return ca.public_bytes(pem), leaf.public_bytes(pem), key_pem(key).encode()


def uri_sans(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def verify_chain(chain: Sequence[str], trust_bundle: str, now: float | None = None
                 ) -> x509.Certificate:
    """Check a ``cert_chain`` response: one PEM per element (each ending in a newline), the
    root bundle last, every link signed by the next, the last link by a root of
    ``trust_bundle``, every certificate valid at ``now``. Returns the leaf."""
    assert len(chain) >= 2, f"expected at least a leaf and a root, got {len(chain)} elements"
    for index, element in enumerate(chain):
        assert element.endswith("\n"), f"chain[{index}] does not end in a newline"
    links = []
    for index, element in enumerate(chain[:-1]):
        found = load_certs(element, f"chain[{index}]")
        assert len(found) == 1, f"chain[{index}] holds {len(found)} certificates, not one"
        links.append(found[0])
    last = load_certs(chain[-1], "the chain's last element")
    trusted = load_certs(trust_bundle, "trust bundle")
    assert all(root in trusted for root in last), "the last element is not the trust bundle"
    for child, parent in itertools.pairwise(links):
        child.verify_directly_issued_by(parent)
    top = links[-1]
    assert any(top == root or _issued_by(top, root) for root in last), \
        "the chain does not lead to a root of the bundle"
    moment = time.time() if now is None else now
    for cert in [*links, *last]:
        assert cert.not_valid_before_utc.timestamp() <= moment, "a certificate is not valid yet"
        assert moment < cert.not_valid_after_utc.timestamp(), "a certificate has expired"
    return links[0]


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def create_certificate(address: str, root_pem: bytes, csr: str, *, token: str | None = None,
                       key_pem: str | None = None, chain: Sequence[str] = (),
                       validity: int = 0, server_name: str = DISCOVERY_NAME,
                       timeout: float = 10.0, impersonate: str = "") -> list[str]:
    """``CreateCertificate`` on 15012 as a workload would call it: with its pod token, or
    with its current certificate (``key_pem`` and ``chain``, leaf first) for a renewal;
    ``impersonate``: as a node agent asking for that SPIFFE ID (``ImpersonatedIdentity``).
    Refusals raise ``grpc.RpcError`` with the status code and message."""
    credentials = grpc.ssl_channel_credentials(
        root_pem, key_pem.encode() if key_pem else None,
        "".join(chain).encode() if chain else None)
    options = [("grpc.ssl_target_name_override", server_name)]
    with grpc.secure_channel(address, credentials, options=options) as channel:
        stub = ca_pb2_grpc.IstioCertificateServiceStub(channel)
        response = stub.CreateCertificate(
            ca_pb2.IstioCertificateRequest(
                csr=csr, validity_duration=validity,
                metadata=struct_pb2.Struct(fields={"ImpersonatedIdentity": struct_pb2.Value(
                    string_value=impersonate)}) if impersonate else None),
            metadata=[("authorization", f"Bearer {token}")] if token else None,
            timeout=timeout)
    return list(response.cert_chain)


def check_cert_provider(provider: CertProvider, *, signs: bool = True,
                        now: float | None = None) -> None:
    """Assert the cert provider contract (``pilotfish.core.security.provider``):

    - ``trust_bundle()`` is PEM CA certificates;
    - ``sign`` (when ``signs``) certifies the CSR's own key, with exactly the requested
      SPIFFE ID as a critical URI SAN, not a CA, server and client auth, no longer than the
      TTL, as a chain leaf first and root last that verifies against the trust bundle, for
      ECDSA P-256 and RSA 2048 keys; a provider that does not sign refuses with
      ``CertError`` and a message;
    - ``serving_certificate`` gives a key and a chain that verifies against the bundle.
    """
    moment = time.time() if now is None else now
    bundle = provider.trust_bundle()
    roots = load_certs(bundle, f"{provider.name}: trust bundle")
    assert all(is_ca(root) for root in roots), f"{provider.name}: a root is not a CA"
    spiffe = CONTRACT_IDENTITY.spiffe_id(CONTRACT_TRUST_DOMAIN)
    for kind in ("ec", "rsa"):
        key = make_key(kind)
        csr_pem, _ = make_csr(key=key)
        request = SigningRequest(x509.load_pem_x509_csr(csr_pem.encode()), CONTRACT_IDENTITY,
                                 spiffe, 3600.0)
        if not signs:
            try:
                provider.sign(request, moment)
            except CertError as exc:
                assert str(exc), f"{provider.name}: refusal without a message"
                continue
            raise AssertionError(f"{provider.name}: signed although it says it does not")
        chain = provider.sign(request, moment)
        leaf = verify_chain(chain, bundle, moment)
        assert same_public_key(leaf, key), f"{provider.name}: leaf does not certify the CSR key"
        assert uri_sans(leaf) == [spiffe], f"{provider.name}: URI SANs {uri_sans(leaf)}"
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        assert san.critical, f"{provider.name}: the SAN extension must be critical"
        assert not is_ca(leaf), f"{provider.name}: a workload certificate must not be a CA"
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in usage
        assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usage
        assert leaf.not_valid_after_utc.timestamp() <= moment + 3600 + 1, \
            f"{provider.name}: leaf outlives the requested TTL"
    serving = provider.serving_certificate(["istiod.istio-system.svc"], ["127.0.0.1"], moment)
    chain_certs = load_certs(serving.chain_pem, f"{provider.name}: serving chain")
    assert same_public_key(chain_certs[0], load_key(serving.key_pem, "serving key"))
    served = [c.public_bytes(serialization.Encoding.PEM).decode() for c in chain_certs]
    verify_chain([*served, bundle], bundle, moment)
