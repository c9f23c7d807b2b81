"""Syntax of the small strings config is made of: DNS names, hosts, IPs, ports, labels,
durations and regular expressions.

Each check returns ``None`` when the value is fine, or a short reason. The rules are the
ones Kubernetes and Istio apply (DNS-1123 labels, RFC 1123 subdomains, Go durations, RE2).
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Any

import re2  # type: ignore[import-untyped]

from pilotfish.core.model import is_ip  # noqa: F401  (validators import it from here)

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
# Istio checks host labels case-insensitively (hosts are matched without case anyway).
_HOST_LABEL = re.compile(r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?\Z")
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?\Z")
_QUALIFIED = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")
_IANA_SVC = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?\Z")
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_NANOS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9,
          "m": 60 * 10**9, "h": 3600 * 10**9}


def dns_label_error(value: str) -> str | None:
    if len(value) > 63 or not _LABEL.match(value):
        return "a lowercase RFC 1123 label: at most 63 characters of a-z, 0-9 and '-', " \
            "starting and ending with a letter or digit"
    return None


def dns_subdomain_error(value: str) -> str | None:
    if len(value) > 253 or not all(_LABEL.match(part) for part in value.split(".")):
        return "a lowercase RFC 1123 subdomain: at most 253 characters of dot-separated " \
            "labels of a-z, 0-9 and '-', each starting and ending with a letter or digit"
    return None


def dns1035_label_error(value: str) -> str | None:
    if len(value) > 63 or not _DNS1035.match(value):
        return "a DNS-1035 label: at most 63 characters of a-z, 0-9 and '-', " \
            "starting with a letter and ending with a letter or digit"
    return None


def fqdn_error(host: str, whole: str = "") -> str | None:
    """A DNS name (a trailing dot is allowed; the last label may not be all digits).

    ``whole`` is the name to quote in the reason when ``host`` is part of a longer one.
    """
    shown = repr(whole or host)
    if not host:
        return f"domain name {shown} must not be empty"
    if len(host) > 255:
        return f"domain name {shown} is too long (at most 255 characters)"
    labels = host.removesuffix(".").split(".")
    if labels[-1].isdigit():
        return f"domain name {shown} has an all-numeric top-level domain"
    for label in labels:
        if len(label) > 63 or not _HOST_LABEL.match(label):
            return f"domain name {shown} has an invalid label {label!r}"
    return None


def wildcard_domain_error(host: str) -> str | None:
    """A DNS name whose first label may be ``*`` or start with ``*`` (``*.example.com``)."""
    if host == "*":
        return None
    first, dot, rest = host.partition(".")
    if first.startswith("*"):
        first = first[1:]
        if not first and not rest:
            return None
    if first and not _HOST_LABEL.match(first):
        return f"domain name {host!r} has an invalid label {first!r}"
    if "*" in rest:
        return f"domain name {host!r}: a wildcard may only be the first character"
    if not dot:
        return None
    return fqdn_error(rest, whole=host)


def namespace_host_error(value: str, allow_bare: bool, exclusions: bool = False
                         ) -> str | None:
    """``namespace/host`` as Gateways and Sidecars write hosts (``*/``, ``./``, ``~/``).

    ``exclusions``: a Sidecar's egress hosts, where ``~ns/host`` leaves out what the other
    hosts import (``~/host`` in every namespace, ``~/*`` everything)."""
    namespace, slash, host = value.partition("/")
    if not slash:
        if not allow_bare:
            return f"host {value!r} must be of the form namespace/dnsName"
        return wildcard_domain_error(value)
    if exclusions and namespace.startswith("~"):
        namespace = namespace[1:] or "*"
    if not namespace or not host:
        return f"host {value!r}: namespace and dnsName must not be empty"
    if namespace not in ("*", ".", "~") and dns_label_error(namespace):
        return f"host {value!r}: invalid namespace {namespace!r}"
    return wildcard_domain_error(host)


def ip_or_cidr_error(value: str) -> str | None:
    try:
        if "/" in value:
            ipaddress.ip_network(value, strict=False)
        else:
            ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not a valid IP address or CIDR block"
    return None


def port_error(number: Any) -> str | None:
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
        return f"port number {number} must be in the range 1..65535"
    return None


def port_name_error(name: str) -> str | None:
    """A named port (targetPort: http): an IANA service name."""
    if not 1 <= len(name) <= 15 or not _IANA_SVC.match(name) or "--" in name:
        return "a port name: at most 15 characters of a-z, 0-9 and '-', no '--'"
    if not any(c.isalpha() for c in name):
        return "a port name must contain at least one letter"
    return None


def label_key_error(key: str) -> str | None:
    """A label key: an optional DNS subdomain prefix and '/', then a qualified name."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or dns_subdomain_error(prefix)):
        return f"label key {key!r} has an invalid prefix"
    if not name or len(name) > 63 or not _QUALIFIED.match(name):
        return f"label key {key!r} is not a valid name"
    return None


def label_value_error(value: str) -> str | None:
    if value and (len(value) > 63 or not _QUALIFIED.match(value)):
        return f"label value {value!r} is not valid"
    return None


def parse_duration(text: str) -> int | None:
    """A Go duration ("1h30m", "250ms", "-1.5s", "0") in nanoseconds, or None."""
    sign = -1 if text.startswith("-") else 1
    body = text[1:] if text[:1] in ("+", "-") else text
    if body == "0":
        return 0
    if not body:
        return None
    total = 0
    position = 0
    while position < len(body):
        part = _DURATION_PART.match(body, position)
        if not part or part.group(1) in ("", "."):
            return None
        total += int(float(part.group(1)) * _NANOS[part.group(2)])
        position = part.end()
    return sign * total


# Bounded: the patterns come from users' config, and a long-running discovery sees many.
@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> Any:
    options = re2.Options()
    options.log_errors = False  # the library logs to stderr otherwise; we report instead
    return re2.compile(pattern, options=options)


def regex_error(pattern: str) -> str | None:
    """Why ``pattern`` is not an RE2 expression (Envoy and Go both use RE2), or None."""
    try:
        _compiled(pattern)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        return reason.decode() if isinstance(reason, bytes) else str(reason)
    return None


def regex_search(pattern: str, value: str) -> bool:
    """Unanchored search, as OpenAPI ``pattern`` is applied. The pattern must compile."""
    return _compiled(pattern).search(value) is not None
