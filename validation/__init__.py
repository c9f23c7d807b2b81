"""Config validation (Galley's job): schema, then CEL rules, then semantic checks.

``validate(obj)`` is the store's validator. It checks an object the way a Kubernetes
cluster with Istio would before admitting it:

1. the kind's OpenAPI schema — from Istio's CRDs, or Kubernetes' own for the core kinds
   (types, enums, bounds, required fields; unknown fields are errors, as under kubectl's
   default strict field validation, or warnings with ``fieldValidation: Warn``);
2. the schema's CEL rules (``x-kubernetes-validations``), skipped, as the API server
   skips them, when step 1 found type, required or enum errors;
3. Istio's webhook checks (and basic API-server checks for Service, Pod, Endpoints,
   EndpointSlice, Namespace), only once 1 and 2 passed, as the webhook only sees
   objects the API server accepted. Plugins' ``pilotfish_validate_config`` checks run
   here too, when the caller passes them.

Every problem becomes a `ConfigError` naming the file, the line of the field, the object
and the field path, with the API server's wording.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from pilotfish.core.objects import (
    BUILTIN_KINDS,
    ConfigObject,
    KindInfo,
    as_json,
    split_api_version,
)
from pilotfish.core.plugins import Plugins
from pilotfish.core.store import ConfigError, KindRegistry, Validator
from pilotfish.validation import catalog, not_applied, semantic
from pilotfish.validation.cel import check_rules
from pilotfish.validation.issues import ERROR, WARNING, Issue, unsupported, warning
from pilotfish.validation.schema import check_object, with_defaults

__all__ = ["FIELD_VALIDATION", "PluginChecks", "check", "known_kind", "make_kinds",
           "make_validator", "schema_kinds", "validate"]
# The mesh config's discovery.fieldValidation → the severity of an unknown field.
FIELD_VALIDATION = {"Strict": ERROR, "Warn": WARNING}

PluginChecks = Callable[[ConfigObject], Iterable[ConfigError]]

_CORE_KINDS = {(info.group, info.kind): info for info in BUILTIN_KINDS}

_RULES_SKIPPED = ("some validation rules were not checked because the object was invalid; "
                  "correct the existing errors to complete validation")


def validate(obj: ConfigObject, plugin_checks: PluginChecks | None = None, *,
             unknown_fields: str = ERROR) -> list[ConfigError]:
    """Every problem with one object; any error (severity "error") means reject it.
    ``unknown_fields`` is the severity of a field the schema does not know."""
    body = as_json(obj.body)
    issues = _schema_issues(obj, body, unknown_fields)
    errors: list[ConfigError] = []
    if not any(issue.severity == ERROR for issue in issues):
        issues += semantic.check(obj, body)
        if plugin_checks is not None:
            errors += plugin_checks(obj)
    issues += semantic.not_applied(obj)
    issues += not_applied.check(obj, body)
    return [_to_error(obj, issue) for issue in issues] + errors


def known_kind(obj: ConfigObject) -> bool:
    """Whether pilotfish validates this kind: a core kind or one with a schema."""
    group, _ = split_api_version(obj.api_version)
    return (group, obj.kind) in _CORE_KINDS or catalog.lookup(group, obj.kind) is not None


def check(obj: ConfigObject, plugin_checks: PluginChecks | None = None, *,
          unknown_fields: str = ERROR) -> list[ConfigError]:
    """What ``pilotfish validate`` (and the validation webhook) says about one object: an
    unknown kind is a warning, a core kind in a version Kubernetes does not serve an
    error, anything else ``validate``'s findings."""
    group, version = split_api_version(obj.api_version)
    core = _CORE_KINDS.get((group, obj.kind))
    if not known_kind(obj):
        return [ConfigError(obj.source.file, obj.source.line, f"unknown kind {obj.kind} "
                            f"({obj.api_version}); not validated", obj.key,
                            severity="warning")]
    if core is not None and version not in core.versions:
        return [ConfigError(obj.source.file, obj.line_of(("apiVersion",)),
                            f"Unsupported value: {json.dumps(obj.api_version)}: supported "
                            f"values: {', '.join(map(json.dumps, core.api_versions()))}",
                            obj.key, "apiVersion")]
    return validate(obj, plugin_checks, unknown_fields=unknown_fields)


def schema_kinds() -> list[KindInfo]:
    """Every kind with a schema in the catalog, with the versions it serves."""
    return catalog.kinds()


def make_validator(plugins: Plugins | None = None,
                   field_validation: str = "Strict") -> Validator:
    """The store's validator: schema, CEL and semantic checks, then the plugins' own."""
    checks = plugins.validate_config if plugins is not None else None
    unknown = FIELD_VALIDATION[field_validation]

    def validator(obj: ConfigObject) -> list[ConfigError]:
        return validate(obj, checks, unknown_fields=unknown)

    return validator


def make_kinds(plugins: Plugins | None = None) -> KindRegistry:
    """The kinds the store accepts: the built-in ones, the catalog's, and the plugins'."""
    kinds = KindRegistry(BUILTIN_KINDS)
    for info in [*schema_kinds(), *(plugins.config_kinds() if plugins is not None else ())]:
        if kinds.lookup_kind(info.group, info.kind) is None:
            kinds.add(info)
    return kinds


def _schema_issues(obj: ConfigObject, body: dict[str, Any], unknown: str) -> list[Issue]:
    group, version = split_api_version(obj.api_version)
    found = catalog.lookup(group, obj.kind)
    if found is None:
        return []  # a kind a plugin declared without a schema: its checks are its own
    schema = found.schemas.get(version)
    if schema is None:
        return [unsupported(("apiVersion",), obj.api_version, found.info.api_versions())]
    body = with_defaults(body, schema)
    issues = list(check_object(body, schema, unknown))
    if any(issue.blocking for issue in issues):
        return [*issues, warning((), _RULES_SKIPPED)]
    return issues + list(check_rules(body, schema))


def _to_error(obj: ConfigObject, issue: Issue) -> ConfigError:
    return ConfigError(
        file=obj.source.file,
        line=obj.line_of(issue.path),
        message=issue.message,
        key=obj.key,
        field=issue.field,
        severity=issue.severity,
    )
