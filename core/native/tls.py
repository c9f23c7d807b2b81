"""TLS for the native proxy's listeners: one ``ssl.SSLContext`` per filter chain, built from
the certificate SDS delivered, and the handshake's SNI choosing the chain (what Envoy's
``tls_inspector`` and ``server_names`` matching do together).

Python's ssl module loads keys from files only: each certificate is written once to a
private folder (mode 0700, files 0600) named by its content, and the context is cached
until the secret changes.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any

from pilotfish.core.native.config import FilterChain, Listener, Termination, TlsSecret

SERVER_NAME = "_pilotfish_server_name"  # the handshake's SNI, kept on the SSL object
_VERSIONS = {"TLSv1_0": ssl.TLSVersion.TLSv1, "TLSv1_1": ssl.TLSVersion.TLSv1_1,
             "TLSv1_2": ssl.TLSVersion.TLSv1_2, "TLSv1_3": ssl.TLSVersion.TLSv1_3}


class Contexts:
    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or Path(tempfile.mkdtemp(prefix="pilotfish-native-tls-"))
        self.folder.chmod(0o700)
        self._cache: dict[tuple[Any, ...], ssl.SSLContext] = {}

    def _files(self, secret: TlsSecret) -> tuple[Path, Path]:
        digest = hashlib.sha256(secret.chain + secret.key).hexdigest()[:16]
        chain, key = self.folder / f"{digest}.pem", self.folder / f"{digest}.key"
        if not key.exists():
            for path, data in ((chain, secret.chain), (key, secret.key)):
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(descriptor, "wb") as out:
                    out.write(data)
        return chain, key

    def context(self, tls: Termination, secret: TlsSecret) -> ssl.SSLContext:
        key = (tls, secret)
        found = self._cache.get(key)
        if found is None:
            found = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            found.minimum_version = _VERSIONS.get(tls.min_version, ssl.TLSVersion.TLSv1_2)
            if tls.max_version in _VERSIONS:
                found.maximum_version = _VERSIONS[tls.max_version]
            chain, private = self._files(secret)
            found.load_cert_chain(chain, private)
            if tls.alpn:
                found.set_alpn_protocols(list(tls.alpn))
            self._cache[key] = found
        return found

    def listener_context(self, listener_name: str, state: Any) -> ssl.SSLContext | None:
        """The context a TLS listener accepts with: its first chain's, switched in the
        handshake to the chain its SNI selects (None while a secret is missing)."""
        listener: Listener | None = state.listeners.get(listener_name)
        if listener is None or not listener.tls:
            return None
        contexts = {}
        for chain in listener.chains:
            assert chain.tls is not None
            secret = state.secrets.get(chain.tls.secret)
            if secret is None:
                return None
            contexts[id(chain)] = self.context(chain.tls, secret)
        base = contexts[id(listener.chains[0])]

        def choose(ssl_object: Any, server_name: str | None, _: ssl.SSLContext) -> None:
            setattr(ssl_object, SERVER_NAME, server_name or "")
            current: Listener | None = state.listeners.get(listener_name)
            if current is None:
                return
            chain: FilterChain | None = current.chain(0, server_name or "")
            if chain is None or chain.tls is None:
                return
            secret = state.secrets.get(chain.tls.secret)
            if secret is not None:
                ssl_object.context = self.context(chain.tls, secret)

        # One accepting context per listener; SNI switches it per connection.
        accepting = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        accepting.minimum_version = base.minimum_version
        first = listener.chains[0]
        assert first.tls is not None
        chain_file, key_file = self._files(state.secrets[first.tls.secret])
        accepting.load_cert_chain(chain_file, key_file)
        if first.tls.alpn:
            accepting.set_alpn_protocols(list(first.tls.alpn))
        accepting.sni_callback = choose
        return accepting
