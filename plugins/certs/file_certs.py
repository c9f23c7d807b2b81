"""``file``: certificates come from files mounted by something else (cert-manager, SPIRE, a
Vault agent...), not from discovery.

On the discovery side this provider signs nothing. It reads, from ``--ca-dir`` (or the
state directory), the layout Istio uses for file-mounted certificates:

- ``root-cert.pem``: the trust bundle. Discovery trusts workload certificates that chain to
  it on 15012 and writes it to ``<state-dir>/root-cert.pem`` for the node;
- ``cert-chain.pem`` and ``key.pem``: discovery's own serving certificate for 15012 (leaf
  first), re-read whenever discovery renews it, so a rotated mount is picked up.

``CreateCertificate`` is refused with ``FAILED_PRECONDITION`` and a message saying so:
workloads of such a mesh read their own mounted files instead of sending CSRs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.security import files
from pilotfish.core.security.pki import PkiError, load_certs, load_key, same_public_key
from pilotfish.core.security.provider import (
    CaSetupError,
    CertError,
    CertSettings,
    Refusal,
    ServingCert,
    SigningRequest,
)

log = logging.getLogger("pilotfish.ca")

ROOT_CERT, CERT_CHAIN, KEY = "root-cert.pem", "cert-chain.pem", "key.pem"


class FileCerts:
    name = "file"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        path = directory / ROOT_CERT
        text = files.read_text(path, "the trust bundle the mounted certificates chain to")
        try:
            load_certs(text, str(path))
        except PkiError as exc:
            raise CaSetupError(str(exc)) from exc
        self._roots = text if text.endswith("\n") else text + "\n"

    def trust_bundle(self) -> str:
        return self._roots

    def sign(self, request: SigningRequest, now: float) -> list[str]:
        raise CertError(
            Refusal.FAILED_PRECONDITION,
            f"cert provider 'file' does not sign: workload certificates in this mesh are "
            f"mounted from files (cert-chain.pem, key.pem, root-cert.pem), so "
            f"{request.spiffe_id} must read its own; set plugins.certs to istio-ca to have "
            f"discovery sign CSRs")

    def serving_certificate(self, dns_names: Sequence[str], ip_addresses: Sequence[str],
                            now: float) -> ServingCert:
        chain_path, key_path = self.directory / CERT_CHAIN, self.directory / KEY
        chain_text = files.read_text(chain_path, "discovery's serving certificate chain")
        key_text = files.read_text(key_path, "discovery's serving key")
        try:
            leaf = load_certs(chain_text, str(chain_path))[0]
            key = load_key(key_text, str(key_path))
        except PkiError as exc:
            raise CaSetupError(str(exc)) from exc
        if not same_public_key(leaf, key):
            raise CaSetupError(f"{key_path}: does not belong to the first certificate "
                               f"of {chain_path}")
        # The names are the mount's business; the caller asked for these to be present.
        log.debug("file: serving certificate from %s (asked for %s)", chain_path,
                  ", ".join([*dns_names, *ip_addresses]))
        return ServingCert(chain_text, key_text, leaf.not_valid_after_utc.timestamp())


@hookimpl
def pilotfish_cert_provider(settings: CertSettings) -> FileCerts:
    return FileCerts(settings.ca_dir or settings.state_dir)
