"""The certificates the Go suite makes in code (``utils/kubernetes/certificate.go``), and the
Secrets and ConfigMaps ``suite.Setup`` creates from them before any test runs.

Go's helpers, field for field: RSA 2048 keys, a year's validity, subject ``CN=default,
O=Acme Co`` for leaves and ``CN=gatewayapi`` for CAs (issuer written as ``CN=kubernetes``
although the CA signs itself), hosts sorted into IP, DNS and (when not a DNS name, as
``*``) URI SANs. The Secrets are ``kubernetes.io/tls`` with ``tls.crt``/``tls.key`` as
base64 ``data``; the ConfigMaps hold ``ca.crt`` as text.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import re
import secrets
from collections.abc import Sequence
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .model import APP_BACKEND_NS, INFRA_NS, WEB_BACKEND_NS

_VALID_FOR = datetime.timedelta(days=365)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@attrs.frozen
class Issuer:
    cert: x509.Certificate
    key: rsa.RSAPrivateKey

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _is_dns(host: str) -> bool:
    """Go's validateHost: a DNS-1123 subdomain of DNS-1123 labels, after one ``*.``."""
    host = host.removeprefix("*.")
    return 0 < len(host) <= 253 and all(
        len(label) <= 63 and _DNS_LABEL.match(label) for label in host.split("."))


def _sans(hosts: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for host in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if _is_dns(host):
            out.append(x509.DNSName(host))
        else:
            out.append(x509.UniformResourceIdentifier(host))
    return out


def leaf(hosts: Sequence[str], issuer: Issuer | None = None, *, client: bool = False
         ) -> tuple[str, str]:
    """``generateRSACert``: (certificate PEM, key PEM), self-signed without an issuer."""
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "default"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Co")])
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer.cert.subject if issuer else subject)
               .public_key(key.public_key())
               .serial_number(secrets.randbits(127) + 1)
               .not_valid_before(now)
               .not_valid_after(now + _VALID_FOR)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=True, key_encipherment=True, content_commitment=False,
                   data_encipherment=False, key_agreement=False, key_cert_sign=False,
                   crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    sans = _sans(hosts)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def ca() -> Issuer:
    """``generateCACert``: a self-signed CA for client and server authentication."""
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Kubernetes Gateway API"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "gatewayapi")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(2024)
            .not_valid_before(now)
            .not_valid_after(now + _VALID_FOR)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_encipherment=False, content_commitment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                  ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return Issuer(cert, key)


def tls_secret(namespace: str, name: str, cert: str, key: str) -> dict[str, Any]:
    """``formatSecret``."""
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": base64.b64encode(cert.encode()).decode(),
                     "tls.key": base64.b64encode(key.encode()).decode()}}


def ca_configmap(namespace: str, name: str, issuer: Issuer) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"ca.crt": issuer.pem}}


def setup_objects() -> list[dict[str, Any]]:
    """What ``suite.Setup`` creates after the base manifests, in its order."""
    out = [tls_secret(WEB_BACKEND_NS, "certificate", *leaf(["*"])),
           tls_secret(INFRA_NS, "tls-validity-checks-certificate",
                      *leaf(["*", "*.org", "*.wildcard.org"]))]
    out.append(ca_configmap(WEB_BACKEND_NS, "web-backend-cm", ca()))
    validity = ca()
    out += [ca_configmap(INFRA_NS, "tls-validity-checks-ca-certificate", validity),
            tls_secret(INFRA_NS, "tls-validity-checks-client-certificate",
                       *leaf([], validity, client=True))]
    per_port = ca()
    out += [ca_configmap(INFRA_NS, "tls-validity-checks-per-port-ca-certificate", per_port),
            tls_secret(INFRA_NS, "tls-validity-checks-per-port-client-certificate",
                       *leaf([], per_port, client=True))]
    checks = ca()
    out += [
        ca_configmap(INFRA_NS, "tls-checks-ca-certificate", checks),
        tls_secret(INFRA_NS, "tls-checks-certificate", *leaf(
            ["abc.example.com", "spiffe://abc.example.com/test-identity", "other.example.com"],
            checks)),
        tls_secret(INFRA_NS, "tls-checks-client-certificate", *leaf([], checks, client=True)),
        tls_secret(INFRA_NS, "tls-passthrough-checks-certificate",
                   *leaf(["abc.example.com"], checks)),
        tls_secret(APP_BACKEND_NS, "tls-passthrough-checks-certificate",
                   *leaf(["abc.example.com"], checks)),
        tls_secret(INFRA_NS, "tls-terminate-checks-certificate",
                   *leaf(["tls.example.com"], checks)),
        ca_configmap(INFRA_NS, "mismatch-ca-certificate", ca()),
    ]
    return out
