"""Semantic checks: what Istio's validation webhook (and, for core kinds, the Kubernetes
API server) checks beyond the OpenAPI schema, one checker per kind.

They run only after the schema and its CEL rules passed, as the webhook only sees objects
the API server already accepted; so they can rely on field types for schema'd kinds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pilotfish.core.objects import NETWORKING, SECURITY, ConfigObject
from pilotfish.validation import (
    destination_rule,
    kubernetes,
    listeners,
    security,
    service_entry,
    virtual_service,
)
from pilotfish.validation.fields import obj
from pilotfish.validation.issues import Issue, warning

Checker = Callable[[dict[str, Any], ConfigObject], Iterator[Issue]]

# (group, kind) → (checker, whether it reads spec (True) or the whole body (False)).
_CHECKERS: dict[tuple[str, str], tuple[Checker, bool]] = {
    (NETWORKING, "VirtualService"): (virtual_service.check, True),
    (NETWORKING, "DestinationRule"): (destination_rule.check, True),
    (NETWORKING, "Gateway"): (listeners.check_gateway, True),
    (NETWORKING, "Sidecar"): (listeners.check_sidecar, True),
    (NETWORKING, "ServiceEntry"): (service_entry.check_service_entry, True),
    (NETWORKING, "WorkloadEntry"): (service_entry.check_workload_entry, True),
    (SECURITY, "PeerAuthentication"): (security.check_peer_authentication, True),
    (SECURITY, "AuthorizationPolicy"): (security.check_authorization_policy, True),
    (SECURITY, "RequestAuthentication"): (security.check_request_authentication, True),
    ("", "Service"): (kubernetes.check_service, True),
    ("", "Pod"): (kubernetes.check_pod, True),
    ("", "Secret"): (kubernetes.check_secret, False),
    ("", "Endpoints"): (kubernetes.check_endpoints, False),
    ("discovery.k8s.io", "EndpointSlice"): (kubernetes.check_endpoint_slice, False),
}

# Kinds pilotfish validates and stores but does not turn into proxy config.
_NOT_APPLIED = {
    ("extensions.istio.io", "WasmPlugin"): "",
    ("extensions.istio.io", "TrafficExtension"): "",
    (NETWORKING, "ProxyConfig"): "",
    (NETWORKING, "WorkloadGroup"): "",
}


# Public for the docs (scripts/gen_not_applied.py, with validation/not_applied.py's fields).
NOT_APPLIED_KINDS = _NOT_APPLIED


def check(config: ConfigObject, body: dict[str, Any]) -> Iterator[Issue]:
    """Semantic problems of one object whose schema validation passed.

    ``body`` is the object as JSON would carry it (string keys), which may differ from
    ``config.body`` in key types when it came from YAML.
    """
    yield from kubernetes.check_metadata(config)
    entry = _CHECKERS.get((config.group, config.kind))
    if entry is not None:
        checker, reads_spec = entry
        yield from checker(obj(body.get("spec")) if reads_spec else body, config)


def not_applied(config: ConfigObject) -> Iterator[Issue]:
    """A warning for kinds that are accepted but have no effect in pilotfish."""
    advice = _NOT_APPLIED.get((config.group, config.kind))
    if advice is not None:
        yield warning((), f"{config.kind} is accepted but not applied by pilotfish{advice}")


def has_checks(group: str, kind: str) -> bool:
    return (group, kind) in _CHECKERS
