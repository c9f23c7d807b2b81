"""TLS for the native proxy: ``ssl.SSLContext`` objects built from the certificates and
trust bundles SDS delivered — a server context per filter chain that terminates TLS (a
client certificate required and checked for mutual TLS), a client context per cluster
that originates it — and the subject-alternative-name checks Envoy's validation contexts
ask for, made on the peer's verified certificate after the handshake.

Python's ssl module loads keys from files only: each certificate is written once to a
private folder (mode 0700, files 0600) named by its content; contexts are cached until a
secret changes.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
from typing import TYPE_CHECKING, Any

from pilotfish.core import istio_metrics

if TYPE_CHECKING:  # only named in signatures: ztunnel's HBONE loads no proxy config
    from pilotfish.core.native.config import (
        ConfigState,
        Origination,
        Termination,
        TlsSecret,
        Validation,
    )

_VERSIONS = {"TLSv1_0": ssl.TLSVersion.TLSv1, "TLSv1_1": ssl.TLSVersion.TLSv1_1,
             "TLSv1_2": ssl.TLSVersion.TLSv1_2, "TLSv1_3": ssl.TLSVersion.TLSv1_3}


# DER: the tags looked for, and subjectAltName's object identifier (2.5.29.17)
_OID, _EXTENSIONS, _URI = 0x06, 0xA3, 0x86
_SUBJECT_ALT_NAME = bytes((0x55, 0x1D, 0x11))


def _elements(der: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """The (tag, first byte, end) of each DER element between ``start`` and ``end``."""
    out = []
    at = start
    while at < end:
        if at + 2 > end:
            raise ValueError("truncated element")
        tag, length = der[at], der[at + 1]
        at += 2
        if length & 0x80:  # long form: the length's own length, then the length
            size = length & 0x7F
            if not 0 < size <= 4 or at + size > end:
                raise ValueError("bad length")
            length = int.from_bytes(der[at:at + size], "big")
            at += size
        if at + length > end:
            raise ValueError("element past its parent")
        out.append((tag, at, at + length))
        at += length
    return out


def uri_names(pem: bytes) -> list[str]:
    """The URI names (SPIFFE IDs) in the subject alternative names of the first
    certificate of a PEM chain; [] when it has none or cannot be read. A short walk of the
    DER, so the proxy need not load a whole X.509 library (~10 MiB) to learn who it is."""
    try:
        text = pem.split(b"-----BEGIN CERTIFICATE-----", 1)[1].split(b"-----END", 1)[0]
        der = base64.b64decode(b"".join(text.split()))
        (tag, start, end), *_ = _elements(der, 0, len(der))
        tbs = _elements(der, start, end)[0]
        for tag, start, end in _elements(der, tbs[1], tbs[2]):
            if tag != _EXTENSIONS:
                continue
            (_, start, end), *_ = _elements(der, start, end)
            for _, first, last in _elements(der, start, end):  # each extension
                parts = _elements(der, first, last)
                oid, a, b = parts[0]
                if oid != _OID or der[a:b] != _SUBJECT_ALT_NAME:
                    continue
                _, value, value_end = parts[-1]  # extnValue: an OCTET STRING of DER
                (_, names, names_end), *_ = _elements(der, value, value_end)
                return [der[a:b].decode("ascii") for tag, a, b in
                        _elements(der, names, names_end) if tag == _URI]
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        pass
    return []


def load_identity(context: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    """Give ``context`` a certificate chain and its key held in memory (a certificate
    fetched from the CA). The ssl module reads keys from files only: they go through
    anonymous in-memory files (``memfd_create``), so a private key never touches a
    filesystem."""
    descriptors = []
    try:
        for name, data in (("chain", chain_pem), ("key", key_pem)):
            descriptor = os.memfd_create(f"pilotfish-{name}", os.MFD_CLOEXEC)
            descriptors.append(descriptor)
            os.write(descriptor, data)
        chain, key = (f"/proc/self/fd/{descriptor}" for descriptor in descriptors)
        try:
            context.load_cert_chain(chain, key)
        except ssl.SSLError as exc:
            raise ValueError(f"the certificate chain and key do not load ({exc.reason or exc})"
                             " - PEM chain, leaf first, and its unencrypted PEM key expected"
                             ) from None
    finally:
        for descriptor in descriptors:
            os.close(descriptor)


class Missing(Exception):
    """A secret the context needs has not come from SDS yet."""


def peer_names(ssl_object: Any) -> list[str]:
    """The URI and DNS subject alternative names of the peer's verified certificate."""
    certificate = ssl_object.getpeercert() if ssl_object is not None else None
    return [value for kind, value in (certificate or {}).get("subjectAltName", ())
            if kind in ("URI", "DNS")]


class Contexts:
    """TLS contexts by what makes them, each made once (certificates and keys loaded from
    memory, `load_identity`)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], ssl.SSLContext] = {}
        self._names: dict[tuple[Any, ...], str] = {}

    @staticmethod
    def _secret(state: ConfigState, name: str) -> TlsSecret:
        secret = state.secrets.get(name)
        if secret is None:
            raise Missing(name)
        return secret

    def _trust(self, state: ConfigState, validation: Validation) -> bytes:
        if validation.ca_secret:
            return self._secret(state, validation.ca_secret).ca
        return validation.ca_inline

    def identity(self, secret_name: str, state: ConfigState) -> str:
        """The SPIFFE ID (else first URI name) of a certificate from SDS ("" if none)."""
        secret = state.secrets.get(secret_name)
        if secret is None or not secret.chain:
            return ""
        key = ("identity", secret.chain)
        found = self._names.get(key)
        if found is None:
            found = self._names[key] = istio_metrics.spiffe_name(uri_names(secret.chain))
        return found

    def server(self, tls: Termination, state: ConfigState) -> ssl.SSLContext:
        """The context a chain terminates TLS with (``Missing`` while a secret is)."""
        secret = self._secret(state, tls.secret)
        trust = self._trust(state, tls.client) if tls.client is not None else b""
        key = ("server", tls, secret, trust)
        found = self._cache.get(key)
        if found is None:
            found = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            found.minimum_version = _VERSIONS.get(tls.min_version, ssl.TLSVersion.TLSv1_2)
            if tls.max_version in _VERSIONS:
                found.maximum_version = _VERSIONS[tls.max_version]
            load_identity(found, secret.chain, secret.key)
            if tls.alpn:
                found.set_alpn_protocols(list(tls.alpn))
            if tls.client is not None:
                found.verify_mode = ssl.CERT_REQUIRED
                found.load_verify_locations(cadata=trust.decode())
            self._cache[key] = found
        return found

    def client(self, tls: Origination, state: ConfigState) -> ssl.SSLContext:
        """The context a cluster originates TLS with (``Missing`` while a secret is)."""
        secret = self._secret(state, tls.secret) if tls.secret else None
        trust = self._trust(state, tls.server)
        key = ("client", tls, secret, trust)
        found = self._cache.get(key)
        if found is None:
            found = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            found.check_hostname = False  # Envoy checks SANs, not the host name
            if trust:
                found.load_verify_locations(cadata=trust.decode())
            else:
                found.verify_mode = ssl.CERT_NONE
            if secret is not None:
                load_identity(found, secret.chain, secret.key)
            if tls.alpn:
                found.set_alpn_protocols(list(tls.alpn))
            self._cache[key] = found
        return found
