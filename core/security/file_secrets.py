"""Certificates in files, handed to the proxy by its agent's SDS under Istio's names.

A Gateway server or DestinationRule that names certificate files (``serverCertificate``,
``privateKey``, ``clientCertificate``, ``caCertificates``) gets them as SDS secrets from the
agent next to its proxy, as Istio's agent serves them: ``file-cert:<chain>~<key>`` (a
certificate and its key) and ``file-root:<ca bundle>`` (trust anchors). The proxy's
listener or cluster waits for the secret instead of failing on a file that is not there
yet, and picks up a rotated file without a restart.

Only files holding what the name says are served: PEM certificates (and for ``file-cert``
a PEM private key), each file at most `MAX_FILE` bytes. A name that points at anything else
(``/etc/shadow``) is refused, whoever wrote it into the config.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import attrs
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from pilotfish.core.security.credentials import (
    CredentialError,
    pem_certificates,
    pem_private_key,
)

FILE_CERT = "file-cert:"
FILE_ROOT = "file-root:"
MAX_FILE = 1 << 20


def cert_name(chain: str, key: str) -> str:
    return f"{FILE_CERT}{chain}~{key}"


def root_name(bundle: str) -> str:
    return f"{FILE_ROOT}{bundle}"


def is_file_secret(name: str) -> bool:
    return name.startswith((FILE_CERT, FILE_ROOT))


class FileSecretError(ValueError):
    """A file secret cannot be served now (the message says which file and why)."""


@attrs.frozen
class FileSecret:
    name: str
    paths: tuple[str, ...]  # what it is read from: (chain, key) or (bundle,)

    @classmethod
    def parse(cls, name: str) -> FileSecret:
        """Raises FileSecretError for a name that is no file secret."""
        if name.startswith(FILE_CERT):
            chain, sep, key = name[len(FILE_CERT):].partition("~")
            if not (sep and chain and key):
                raise FileSecretError(f"{name!r}: expected {FILE_CERT}<chain file>~<key file>")
            return cls(name, (chain, key))
        if name.startswith(FILE_ROOT) and len(name) > len(FILE_ROOT):
            return cls(name, (name[len(FILE_ROOT):],))
        raise FileSecretError(f"{name!r}: not a {FILE_CERT} or {FILE_ROOT} secret")

    def load(self, read: Callable[[str], bytes] = lambda path: _read(Path(path))
             ) -> secret_pb2.Secret:
        """The secret as Envoy takes it, the files' contents inline; raises FileSecretError."""
        contents = [read(path) for path in self.paths]
        try:
            pem_certificates((self.paths[0],), contents[0])
            if len(self.paths) == 2:
                pem_private_key((self.paths[1],), contents[1])
        except CredentialError as exc:
            raise FileSecretError(str(exc)) from None
        if len(self.paths) == 1:
            return secret_pb2.Secret(name=self.name, validation_context=(
                common_pb2.CertificateValidationContext(
                    trusted_ca=base_pb2.DataSource(inline_bytes=contents[0]))))
        return secret_pb2.Secret(name=self.name, tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=contents[0]),
            private_key=base_pb2.DataSource(inline_bytes=contents[1])))


def _read(path: Path) -> bytes:
    try:
        if not path.is_file():
            raise FileSecretError(f"{path}: not there (or not a regular file)")
        if path.stat().st_size > MAX_FILE:
            raise FileSecretError(f"{path}: larger than {MAX_FILE} bytes")
        return path.read_bytes()
    except OSError as exc:
        raise FileSecretError(f"{path}: {exc.strerror or exc}") from None

