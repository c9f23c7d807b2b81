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

import hashlib
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509

from pilotfish.core import istio_metrics
from pilotfish.core.native.config import (
    ConfigState,
    Origination,
    Termination,
    TlsSecret,
    Validation,
)

_VERSIONS = {"TLSv1_0": ssl.TLSVersion.TLSv1, "TLSv1_1": ssl.TLSVersion.TLSv1_1,
             "TLSv1_2": ssl.TLSVersion.TLSv1_2, "TLSv1_3": ssl.TLSVersion.TLSv1_3}


class Missing(Exception):
    """A secret the context needs has not come from SDS yet."""


def peer_names(ssl_object: Any) -> list[str]:
    """The URI and DNS subject alternative names of the peer's verified certificate."""
    certificate = ssl_object.getpeercert() if ssl_object is not None else None
    return [value for kind, value in (certificate or {}).get("subjectAltName", ())
            if kind in ("URI", "DNS")]


class Contexts:
    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or Path(tempfile.mkdtemp(prefix="pilotfish-native-tls-"))
        self.folder.chmod(0o700)
        self._cache: dict[tuple[Any, ...], ssl.SSLContext] = {}
        self._names: dict[tuple[Any, ...], str] = {}

    def _files(self, secret: TlsSecret) -> tuple[Path, Path]:
        digest = hashlib.sha256(secret.chain + secret.key).hexdigest()[:16]
        chain, key = self.folder / f"{digest}.pem", self.folder / f"{digest}.key"
        if not key.exists():
            for path, data in ((chain, secret.chain), (key, secret.key)):
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(descriptor, "wb") as out:
                    out.write(data)
        return chain, key

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
            try:
                certificate = x509.load_pem_x509_certificate(secret.chain)
                names = certificate.extensions.get_extension_for_class(
                    x509.SubjectAlternativeName).value.get_values_for_type(
                    x509.UniformResourceIdentifier)
            except (ValueError, x509.ExtensionNotFound):
                names = []
            found = self._names[key] = istio_metrics.spiffe_name(names)
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
            found.load_cert_chain(*self._files(secret))
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
                found.load_cert_chain(*self._files(secret))
            if tls.alpn:
                found.set_alpn_protocols(list(tls.alpn))
            self._cache[key] = found
        return found
