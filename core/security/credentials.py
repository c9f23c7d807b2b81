"""Kubernetes Secrets as Istio serves them for ``credentialName``.

A Gateway server or DestinationRule naming ``credentialName: NAME`` points its proxy at the
SDS resource ``kubernetes://NAME`` (certificate and key) and, for mutual TLS, at
``kubernetes://NAME-cacert`` (the CA bundle); discovery serves both from Secrets in the
proxy's own namespace. The layouts Istio reads:

- ``kubernetes.io/tls``: ``tls.crt`` and ``tls.key``, optionally ``ca.crt`` and ``ca.crl``;
- generic: ``cert`` and ``key``, optionally ``cacert`` and ``crl``;
- a Secret holding only a CA (``ca.crt`` or ``cacert``), named ``NAME-cacert`` for NAME's
  CA (it takes precedence over NAME's own ``ca.crt``), or named by ``caCertCredentialName``.

Validation reads Secrets through `credential` too, so a certificate or key that is not PEM
is refused with the field named, and the last good Secret stays in force.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

PREFIX = "kubernetes://"
CA_SUFFIX = "-cacert"
TLS_TYPE = "kubernetes.io/tls"
# (certificate, key, CA bundle, CRL) keys, Kubernetes' TLS layout first.
_LAYOUTS = (("tls.crt", "tls.key", "ca.crt", "ca.crl"), ("cert", "key", "cacert", "crl"))


class CredentialError(ValueError):
    """A Secret that cannot serve as a credential: ``path`` (``("data", "tls.key")``, or a
    file's path) says where."""

    def __init__(self, path: tuple[str, ...], reason: str) -> None:
        super().__init__(f"{'.'.join(path)}: {reason}")
        self.path = path
        self.reason = reason


@attrs.frozen
class Credential:
    """What a Secret holds for TLS (None: absent); each piece checked as PEM."""

    cert: bytes | None = None
    key: bytes | None = None
    ca: bytes | None = None
    crl: bytes | None = None


def secret_data(body: Mapping[str, Any]) -> dict[str, tuple[tuple[str, ...], bytes]]:
    """Key → (field path, bytes): ``data`` base64-decoded, ``stringData`` over it as the API
    server merges them. Raises CredentialError for data that is not base64."""
    out: dict[str, tuple[tuple[str, ...], bytes]] = {}
    for key, value in dict(body.get("data") or {}).items():
        try:
            out[str(key)] = (("data", str(key)),
                             base64.b64decode(str(value or ""), validate=True))
        except (binascii.Error, ValueError):
            raise CredentialError(("data", str(key)), "not base64") from None
    for key, value in dict(body.get("stringData") or {}).items():
        out[str(key)] = (("stringData", str(key)), str(value or "").encode())
    return out


def credential(body: Mapping[str, Any]) -> Credential | None:
    """The TLS credential a Secret holds, or None when it holds none (an API token, say).
    Raises CredentialError naming the field that is not what Istio needs."""
    data = secret_data(body)
    for cert_key, key_key, ca_key, crl_key in _LAYOUTS:
        if not any(k in data for k in (cert_key, key_key, ca_key)):
            continue
        if (cert_key in data) != (key_key in data):
            missing = key_key if cert_key in data else cert_key
            raise CredentialError(("data", missing), "needed beside "
                                  f"{cert_key if cert_key in data else key_key}")
        cert = pem_certificates(*data[cert_key]) if cert_key in data else None
        key = pem_private_key(*data[key_key]) if key_key in data else None
        ca = pem_certificates(*data[ca_key]) if ca_key in data else None
        crl = data[crl_key][1] if crl_key in data and ca is not None else None
        return Credential(cert, key, ca, crl)
    if body.get("type") == TLS_TYPE:
        raise CredentialError(("data", "tls.crt"),
                              f"a {TLS_TYPE} Secret needs tls.crt and tls.key")
    return None


def sds_secrets(secrets: Iterable[tuple[str, Credential]], prefix: str = PREFIX
                ) -> list[secret_pb2.Secret]:
    """The SDS resources that named credentials make, as istiod names them (``prefix``:
    ``kubernetes-gateway://`` for a Gateway's certificates in another namespace, named
    ``namespace/name``)."""
    implied: dict[str, secret_pb2.Secret] = {}  # NAME-cacert from NAME's own ca.crt
    named: dict[str, secret_pb2.Secret] = {}
    for bare, found in secrets:
        name = prefix + bare
        if found.cert is not None and found.key is not None:
            named[name] = secret_pb2.Secret(
                name=name, tls_certificate=common_pb2.TlsCertificate(
                    certificate_chain=base_pb2.DataSource(inline_bytes=found.cert),
                    private_key=base_pb2.DataSource(inline_bytes=found.key)))
        if found.ca is None:
            continue
        implied[name + CA_SUFFIX] = _trust(name + CA_SUFFIX, found)
        if found.cert is None:  # a CA alone answers to its own name
            named[name] = _trust(name, found)
    return list({**implied, **named}.values())


def _trust(name: str, found: Credential) -> secret_pb2.Secret:
    context = common_pb2.CertificateValidationContext(
        trusted_ca=base_pb2.DataSource(inline_bytes=found.ca or b""))
    if found.crl:
        context.crl.inline_bytes = found.crl
    return secret_pb2.Secret(name=name, validation_context=context)


def pem_certificates(field: tuple[str, ...], data: bytes) -> bytes:
    """``data`` if it holds PEM certificates; CredentialError naming ``field`` if not."""
    try:
        if x509.load_pem_x509_certificates(data):
            return data
    except ValueError:
        pass
    raise CredentialError(field, "holds no PEM certificate")


def pem_private_key(field: tuple[str, ...], data: bytes) -> bytes:
    """``data`` if it is a PEM private key; CredentialError naming ``field`` if not."""
    try:
        serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CredentialError(field, f"not a PEM private key without a password ({exc})"
                              ) from None
    return data
