"""Workload identities: a Kubernetes service account, written as a SPIFFE ID in certificates.

``spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`` is the only form Istio issues and
the form peers check. Names are checked against Kubernetes' rules before they go into a
URI: a service account called ``x/sa/y`` must never turn into someone else's ID.
"""

from __future__ import annotations

import re

import attrs

SPIFFE_SCHEME = "spiffe://"
# Kubernetes: a namespace is a DNS-1123 label, a service account a DNS-1123 subdomain.
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+\Z")


class IdentityError(ValueError):
    """A name or SPIFFE ID that cannot be an Istio workload identity."""


def _check_namespace(_: object, __: object, value: str) -> None:
    if len(value) > 63 or not _LABEL.match(value):
        raise IdentityError(f"namespace {value!r} is not a Kubernetes namespace name "
                            "(lower-case letters, digits and '-', at most 63)")


def _check_service_account(_: object, __: object, value: str) -> None:
    if len(value) > 253 or not _SUBDOMAIN.match(value):
        raise IdentityError(f"service account {value!r} is not a Kubernetes name "
                            "(lower-case letters, digits, '-' and '.', at most 253)")


def check_trust_domain(value: str) -> str:
    if not value or not _TRUST_DOMAIN.match(value):
        raise IdentityError(f"trust domain {value!r}: expected lower-case letters, digits, "
                            "'.', '-' or '_'")
    return value


@attrs.frozen
class Identity:
    """Who an authenticated caller is: a service account, and its pod when a token says so."""

    namespace: str = attrs.field(validator=_check_namespace)
    service_account: str = attrs.field(validator=_check_service_account)
    pod: str = ""
    # How the caller proved it: "token" or "certificate" (for logs and /debug/syncz).
    source: str = "token"
    # The UID of the pod a cluster's token is bound to: tells a pod from a re-created one
    # of the same name.
    pod_uid: str = ""

    def spiffe_id(self, trust_domain: str) -> str:
        return spiffe_id(trust_domain, self.namespace, self.service_account)


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"{SPIFFE_SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}"


def parse_spiffe_id(uri: str) -> tuple[str, Identity]:
    """``spiffe://td/ns/NS/sa/SA`` → (trust domain, identity); anything else is an error."""
    if not uri.startswith(SPIFFE_SCHEME):
        raise IdentityError(f"{uri!r} is not a SPIFFE ID (expected {SPIFFE_SCHEME}...)")
    parts = uri[len(SPIFFE_SCHEME):].split("/")
    if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
        raise IdentityError(
            f"{uri!r} is not an Istio workload ID (expected spiffe://TRUST_DOMAIN/ns/NS/sa/SA)")
    trust_domain = check_trust_domain(parts[0])
    return trust_domain, Identity(parts[2], parts[4], source="certificate")
