"""``proxy-config secret``: the certificates a proxy holds, from Envoy's SecretsConfigDump.

istioctl's columns (``RESOURCE NAME  TYPE  STATUS  VALID CERT  SERIAL NUMBER  NOT AFTER
NOT BEFORE``: the serial in hex, times in UTC, the first certificate of each secret), and
two more that answer the questions one asks next: whose certificate it is (``SPIFFE ID``)
and which root it leads to (``ROOT``; for a trust bundle, the roots it holds). Envoy
redacts private keys in its dump, so nothing secret is read or shown.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

SECRET_HEADERS = ["RESOURCE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER",
                  "NOT AFTER", "NOT BEFORE", "SPIFFE ID", "ROOT"]


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _certs(source: Mapping[str, Any]) -> list[x509.Certificate] | str:
    """Certificates of a DataSource, or a word saying why there are none to read."""
    if "inline_bytes" in source:
        try:
            data = base64.b64decode(source["inline_bytes"])
        except (binascii.Error, ValueError):
            return "unreadable"
    elif "inline_string" in source:
        data = str(source["inline_string"]).encode()
    elif "filename" in source:
        return f"file {source['filename']}"
    else:
        return "none"
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return "unreadable"


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _spiffe(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return next((u for u in uris if u.startswith("spiffe://")), ",".join(uris))


def entries(section: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, ACTIVE|WARMING, Secret) for every secret in a SecretsConfigDump."""
    out = []
    for key, status in (("static_secrets", "ACTIVE"), ("dynamic_active_secrets", "ACTIVE"),
                        ("dynamic_warming_secrets", "WARMING")):
        for entry in section.get(key) or ():
            secret = dict(entry.get("secret") or {})
            out.append((str(entry.get("name") or secret.get("name", "")), status, secret))
    return out


def certificates(secret: Mapping[str, Any]) -> tuple[str, list[x509.Certificate] | str]:
    """(TYPE, certificates) of a Secret: the chain of a certificate, the roots of a trust
    bundle; instead of the list, a word saying why there is none to read."""
    if "tls_certificate" in secret:
        return "Cert Chain", _certs(
            (secret["tls_certificate"] or {}).get("certificate_chain") or {})
    if "validation_context" in secret:
        return "CA", _certs((secret["validation_context"] or {}).get("trusted_ca") or {})
    return "", "none"


def secret_row(name: str, status: str, secret: Mapping[str, Any], now: datetime
               ) -> list[str]:
    kind, found = certificates(secret)
    if not kind:
        return [name, "", status, "false", "", "", "", "", ""]
    if isinstance(found, str) or not found:
        return [name, kind, status, "false", "", "", "", "",
                found if isinstance(found, str) else "none"]
    first = found[0]
    valid = first.not_valid_before_utc <= now < first.not_valid_after_utc
    if kind == "CA":
        spiffe = "-"
        root = "; ".join(_name(c) for c in found)
    else:
        spiffe = _spiffe(first) or "-"
        root = found[-1].issuer.rfc4514_string() or "(empty issuer)"
    return [name, kind, status, str(valid).lower(), format(first.serial_number, "x"),
            _stamp(first.not_valid_after_utc), _stamp(first.not_valid_before_utc),
            spiffe, root]


def secret_rows(section: Mapping[str, Any], now: datetime | None = None) -> list[list[str]]:
    moment = now or datetime.now(UTC)
    return [secret_row(name, status, secret, moment)
            for name, status, secret in entries(section)]
