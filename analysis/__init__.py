"""The analyzers ``pilotfish analyze`` runs, and the catalog of what they report.

Each module holds the checks of one concern: its `Check`s (code, name, level, and the
message Istio's analyzers give for the same problem) and an ``analyze(inputs)`` function
yielding findings. What several checks look up (pods by selector, workloads by namespace,
the Services selecting a pod) is indexed once on `Inputs`. Codes are stable: scripts may
filter on them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pilotfish.analysis import (
    authorization,
    claim_routes,
    destinations,
    gateway_bindings,
    gateway_credentials,
    gateway_subsets,
    gateways,
    localhost,
    mesh_hosts,
    ports,
    proxy_uid,
    shadowed_routes,
    sidecars,
    subsets,
)
from pilotfish.analysis.base import (
    Check,
    Finding,
    Inputs,
    IstioMessage,
    Level,
    node_labels,
    pod_templates,
)
from pilotfish.core.objects import ConfigObject
from pilotfish.core.push_context import PushContext
from pilotfish.core.store import ConfigStore

_SCHEMA = "schema.ValidationAnalyzer"
INVALID_CONFIG = Check("PF0001", "InvalidConfig", Level.ERROR,
                       "an object fails validation (schema, CEL or semantic rules)",
                       IstioMessage("IST0106", "SchemaValidationError", _SCHEMA))
# What a validation warning is called in Istio (the finding says so, not the check).
SCHEMA_WARNING = IstioMessage("IST0133", "SchemaWarning", _SCHEMA)

Analyzer = Callable[[Inputs], Iterable[Finding]]

ANALYZERS: tuple[tuple[str, Analyzer], ...] = (
    ("ports", ports.analyze),
    ("proxy-uid", proxy_uid.analyze),
    ("subsets", subsets.analyze),
    ("destinations", destinations.analyze),
    ("gateways", gateways.analyze),
    ("gateway-credentials", gateway_credentials.analyze),
    ("gateway-bindings", gateway_bindings.analyze),
    ("mesh-hosts", mesh_hosts.analyze),
    ("gateway-subsets", gateway_subsets.analyze),
    ("claim-routes", claim_routes.analyze),
    ("authorization", authorization.analyze),
    ("shadowed-routes", shadowed_routes.analyze),
    ("sidecars", sidecars.analyze),
    ("localhost", localhost.analyze),
)

CHECKS: tuple[Check, ...] = (
    INVALID_CONFIG,
    ports.PORT_PROTOCOL,
    proxy_uid.PROXY_UID,
    subsets.SUBSET_SELECTS_NOTHING,
    subsets.RULE_HOST_UNKNOWN,
    destinations.HOST_UNKNOWN,
    destinations.SUBSET_UNKNOWN,
    destinations.PORT_UNKNOWN,
    destinations.PORT_AMBIGUOUS,
    localhost.LOCALHOST_LISTENER,
    gateways.SELECTS_NOTHING,
    gateways.PORT_NOT_ON_SERVICE,
    gateways.CONFLICTING,
    gateway_bindings.GATEWAY_UNKNOWN,
    gateway_bindings.HOST_NOT_ADMITTED,
    gateway_bindings.INTERNAL_GATEWAY,
    gateway_bindings.KUBERNETES_GATEWAY,
    mesh_hosts.CONFLICTING_HOSTS,
    gateway_subsets.INGRESS_IGNORES_SUBSETS,
    claim_routes.CLAIM_ROUTE,
    gateway_credentials.CREDENTIAL_MISSING,
    gateway_credentials.CREDENTIAL_INVALID,
    gateway_credentials.DUPLICATE_CERTIFICATE,
    authorization.SELECTS_NOTHING,
    authorization.NAMESPACE_UNKNOWN,
    shadowed_routes.RULE_UNREACHABLE,
    shadowed_routes.MATCH_INEFFECTIVE,
    gateway_bindings.NOT_EXPORTED,
    sidecars.SELECTS_NOTHING,
    sidecars.CONFLICTING,
    sidecars.SEVERAL_DEFAULTS,
    sidecars.FOR_AMBIENT,
)


def inputs_for(store: ConfigStore, push: PushContext,
               controllers: Iterable[ConfigObject] = (), now: float | None = None) -> Inputs:
    """What the analyzers look at for a store and the push context built from it
    (``controllers``: workload controllers read beside the store, whose pod templates count
    as pods; ``now``: the wall-clock time certificates are judged by)."""
    pods = pod_templates([*store.objects("Pod"), *controllers])
    rejected = frozenset(e.key for e in store.errors() if e.key is not None
                         and e.severity == "error" and store.get(e.key) is None)
    return Inputs(push, tuple(pods), rejected=rejected,
                  nodes=node_labels(store.objects("Node")), now=now)


def run(inputs: Inputs) -> list[Finding]:
    """Every analyzer's findings, by file and line."""
    return sort(f for _, analyzer in ANALYZERS for f in analyzer(inputs))


def sort(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.file, f.line, f.severity.rank, f.check.code))
