"""``istio-ca``: discovery signs workload certificates (istiod's built-in CA, Citadel).

The root of trust is, in order of preference:

1. a plugged-in CA in ``--ca-dir`` (Istio's ``cacerts`` layout: ``ca-cert.pem``,
   ``ca-key.pem``, ``root-cert.pem``, optional ``cert-chain.pem`` with the intermediates);
2. on a cluster (discovery gives a ``root_store``): the ``cacerts`` Secret, else the
   ``istio-ca-secret`` one, made with a self-signed root by the first replica;
3. the same files in the state directory (a CA plugged in there, or one made earlier);
4. a self-signed root made on first start and written to the state directory
   (``ca-key.pem`` 0600, ``ca-cert.pem`` and ``root-cert.pem`` 0644), so a restart, or a
   second replica sharing the directory, signs with the same root.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.security import files, signing
from pilotfish.core.security.pki import (
    PkiError,
    SigningBundle,
    cert_pem,
    key_pem,
    load_certs,
    load_key,
    make_bundle,
    self_signed_root,
)
from pilotfish.core.security.provider import (
    CaSetupError,
    CertSettings,
    ServingCert,
    SigningRequest,
)

log = logging.getLogger("pilotfish.ca")

CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN = "ca-cert.pem", "ca-key.pem", "root-cert.pem", \
    "cert-chain.pem"


def load_bundle(directory: Path, now: float) -> SigningBundle:
    """A plugged-in CA from ``directory``; every problem names the file."""
    texts = {CA_CERT: files.read_text(directory / CA_CERT, "the CA's signing certificate"),
             CA_KEY: files.read_text(directory / CA_KEY, "the CA's private key")}
    for name, what in ((CERT_CHAIN, "the intermediate chain"), (ROOT_CERT, "the root bundle")):
        if (directory / name).exists():
            texts[name] = files.read_text(directory / name, what)
    return bundle_from_pem(texts, lambda name: str(directory / name), str(directory), now)


def bundle_from_pem(texts: Mapping[str, str], label: Callable[[str], str], where: str,
                    now: float) -> SigningBundle:
    """A CA from its files' text (``ca-cert.pem``, ``ca-key.pem``, optional
    ``cert-chain.pem`` and ``root-cert.pem``); ``label`` names a file in errors."""
    for name in (CA_CERT, CA_KEY):
        if not texts.get(name, "").strip():
            raise CaSetupError(f"{label(name)}: missing or empty")
    try:
        cert = load_certs(texts[CA_CERT], label(CA_CERT))[0]
        key = load_key(texts[CA_KEY], label(CA_KEY))
        chain_text = texts.get(CERT_CHAIN, "")
        chain = load_certs(chain_text, label(CERT_CHAIN)) if chain_text.strip() else []
        root_text = texts.get(ROOT_CERT, "")
        if root_text.strip():
            roots = load_certs(root_text, label(ROOT_CERT))
        elif cert.issuer == cert.subject:
            roots = [cert]  # a self-signed signing cert is its own root
        else:
            raise CaSetupError(f"{label(ROOT_CERT)}: missing, and {CA_CERT} is not "
                               "self-signed: give the root the signing certificate chains to")
        bundle = make_bundle(cert, key, chain, roots)
        bundle.check(now, where)
    except PkiError as exc:
        raise CaSetupError(str(exc)) from exc
    return bundle


def self_signed_files(trust_domain: str, now: float) -> dict[str, str]:
    """A new self-signed root, as the files ``istio-ca-secret`` holds."""
    cert, key = self_signed_root(trust_domain, now)
    log.info("made a self-signed root for %s (serial %x, valid until %s)", trust_domain,
             cert.serial_number, f"{cert.not_valid_after_utc:%Y-%m-%d}")
    return {CA_CERT: cert_pem(cert), CA_KEY: key_pem(key)}


def create_root(directory: Path, trust_domain: str, now: float) -> SigningBundle:
    texts = self_signed_files(trust_domain, now)
    # The key first: a crash between the two writes leaves no certificate without its key.
    files.write_atomic(directory / CA_KEY, texts[CA_KEY], files.KEY_MODE)
    files.write_atomic(directory / CA_CERT, texts[CA_CERT], files.PUBLIC_MODE)
    files.write_atomic(directory / ROOT_CERT, texts[CA_CERT], files.PUBLIC_MODE)
    log.info("wrote the new root to %s", directory)
    return bundle_from_pem(texts, lambda name: str(directory / name), str(directory), now)


def load_or_create(settings: CertSettings, now: float) -> tuple[SigningBundle, str]:
    """The signing bundle and where it came from (for the start-up log)."""
    if settings.ca_dir is not None:
        return load_bundle(settings.ca_dir, now), f"plugged-in CA from {settings.ca_dir}"
    if settings.root_store is not None:
        texts, origin = settings.root_store.load_or_create(
            lambda: self_signed_files(settings.trust_domain, now))
        return bundle_from_pem(texts, lambda name: f"{origin}: {name}", origin, now), origin
    state = files.ensure_dir(settings.state_dir)
    with files.locked(state):
        if (state / CA_CERT).exists() or (state / CA_KEY).exists():
            return load_bundle(state, now), f"CA from {state}"
        return create_root(state, settings.trust_domain, now), f"new self-signed root in {state}"


class IstioCa:
    name = "istio-ca"

    def __init__(self, bundle: SigningBundle, settings: CertSettings) -> None:
        self.bundle = bundle
        self.settings = settings

    def trust_bundle(self) -> str:
        return self.bundle.roots_pem

    def sign(self, request: SigningRequest, now: float) -> list[str]:
        return signing.sign_workload(self.bundle, request, now)

    def serving_certificate(self, dns_names: Sequence[str], ip_addresses: Sequence[str],
                            now: float) -> ServingCert:
        return signing.sign_serving(self.bundle, dns_names, ip_addresses,
                                    self.settings.workload_ttl, now)


@hookimpl
def pilotfish_cert_provider(settings: CertSettings) -> IstioCa:
    bundle, origin = load_or_create(settings, time.time())
    log.info("istio-ca: signing with %s (%s)", origin,
             bundle.cert.subject.rfc4514_string() or "empty subject")
    return IstioCa(bundle, settings)
