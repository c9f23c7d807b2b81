"""PeerAuthentication, AuthorizationPolicy and RequestAuthentication checks.

Istio's webhook rules: no empty sources/operations, DENY needs rules, CUSTOM names its
provider (an ``extensionProviders`` entry of the mesh config, looked up when the policy is
served), known condition keys, IPs and ports that parse.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from pilotfish.core.objects import ConfigObject, FieldPath
from pilotfish.core.security_policies import path_template_error
from pilotfish.validation import names
from pilotfish.validation.fields import arr, check_selector, check_targets, error, obj, text
from pilotfish.validation.issues import Issue, invalid, warning

_SOURCE_FIELDS = ("principals", "requestPrincipals", "namespaces", "ipBlocks",
                  "remoteIpBlocks", "serviceAccounts", "trustDomains")
_OPERATION_FIELDS = ("hosts", "ports", "methods", "paths")
_IP_FIELDS = ("ipBlocks", "remoteIpBlocks", "notIpBlocks", "notRemoteIpBlocks")
# Fields that only HTTP requests carry: a DENY on them alone never matches TCP traffic.
_HTTP_ONLY = ("requestPrincipals", "notRequestPrincipals", "hosts", "notHosts", "methods",
              "notMethods", "paths", "notPaths")
_PLAIN_KEYS = frozenset({
    "source.ip", "remote.ip", "source.namespace", "source.principal",
    "source.serviceAccount", "source.trustDomain", "request.auth.principal",
    "request.auth.audiences", "request.auth.presenter", "destination.ip",
    "destination.port", "connection.sni",
})
_KEY_WITH_INDEX = re.compile(r"(request\.headers|request\.auth\.claims|experimental\.[\w.]+)"
                             r"(\[[^\[\]]+\])+\Z")
_IP_KEYS = ("source.ip", "remote.ip", "destination.ip")


def check_peer_authentication(spec: dict[str, Any], config: ConfigObject) -> Iterator[Issue]:
    selector = spec.get("selector")
    if selector is not None:
        yield from check_selector(("spec", "selector", "matchLabels"),
                                  obj(obj(selector).get("matchLabels")), "PeerAuthentication")


def check_request_authentication(spec: dict[str, Any], config: ConfigObject) -> (
    Iterator[Issue]
):
    yield from _check_scope(spec, "RequestAuthentication")
    for index, rule in enumerate(arr(spec.get("jwtRules"))):
        where, rule = ("spec", "jwtRules", index), obj(rule)
        if not text(rule.get("issuer")):
            yield invalid((*where, "issuer"), rule.get("issuer", ""), "issuer must be set")
        jwks = text(rule.get("jwks"))
        if jwks:
            try:
                keys = json.loads(jwks)
            except ValueError as exc:
                yield invalid((*where, "jwks"), "<jwks>", f"not a JSON Web Key Set: {exc}")
            else:
                if not isinstance(keys, dict) or not isinstance(keys.get("keys"), list):
                    yield invalid((*where, "jwks"), "<jwks>", 'a JWKS is an object with "keys"')
        for h_index, header in enumerate(arr(rule.get("outputClaimToHeaders"))):
            name = text(obj(header).get("header"))
            if name and not all(c.isalnum() or c in "-_" for c in name):
                yield invalid((*where, "outputClaimToHeaders", h_index, "header"), name,
                              "not a valid header name")


def check_authorization_policy(spec: dict[str, Any], config: ConfigObject) -> (
    Iterator[Issue]
):
    yield from _check_scope(spec, "AuthorizationPolicy")
    action = text(spec.get("action")) or "ALLOW"
    rules = spec.get("rules")
    if action == "CUSTOM":
        if not text(obj(spec.get("provider")).get("name")):
            yield error(("spec", "provider", "name"), "action CUSTOM needs the name of an "
                        "ext_authz provider from the mesh config's extensionProviders")
    elif "provider" in spec:
        yield invalid(("spec", "provider"), obj(spec["provider"]).get("name", ""),
                      f"provider is only used with action CUSTOM, not {action}")
    if action == "DENY" and rules is None:
        yield error(("spec", "rules"), "a DENY policy without rules never matches; add an "
                    "empty rule {} to deny every request")
    for index, rule in enumerate(arr(rules)):
        yield from _check_rule(("spec", "rules", index), rule, action)


def _check_scope(spec: dict[str, Any], kind: str) -> Iterator[Issue]:
    selector = spec.get("selector")
    if selector is not None:
        yield from check_selector(("spec", "selector", "matchLabels"),
                                  obj(obj(selector).get("matchLabels")), kind)
    yield from check_targets(spec)


def _check_rule(path: FieldPath, rule: Any, action: str) -> Iterator[Issue]:
    if not isinstance(rule, dict):
        yield error(path, "a rule must be an object")
        return
    if "from" in rule and not arr(rule["from"]):
        yield error((*path, "from"), "from must not be empty when set")
    if "to" in rule and not arr(rule["to"]):
        yield error((*path, "to"), "to must not be empty when set")
    http_only = []
    for index, entry in enumerate(arr(rule.get("from"))):
        where = (*path, "from", index, "source")
        source = obj(entry).get("source")
        yield from _check_clause(where, source, _SOURCE_FIELDS, "source")
        http_only.append(_only_http(obj(source)))
    for index, entry in enumerate(arr(rule.get("to"))):
        where = (*path, "to", index, "operation")
        operation = obj(entry).get("operation")
        yield from _check_clause(where, operation, _OPERATION_FIELDS, "operation")
        for field in ("ports", "notPorts"):
            for p_index, port in enumerate(arr(obj(operation).get(field))):
                if not text(port).isdigit() or int(text(port)) > 65535:
                    yield invalid((*where, field, p_index), port, "must be a port number "
                                  "0-65535")
        for field in ("paths", "notPaths"):
            for p_index, value in enumerate(arr(obj(operation).get(field))):
                reason = path_template_error(text(value))
                if reason:
                    yield invalid((*where, field, p_index), value, reason)
        http_only.append(_only_http(obj(operation)))
    for index, condition in enumerate(arr(rule.get("when"))):
        yield from _check_condition((*path, "when", index), obj(condition))
    if action == "DENY" and http_only and all(http_only):
        yield warning(path, "this DENY rule uses only HTTP attributes, so it denies all TCP "
                      "traffic in its scope; name the ports to limit it")


def _check_clause(path: FieldPath, clause: Any, fields: tuple[str, ...], name: str) -> (
    Iterator[Issue]
):
    if not isinstance(clause, dict):
        yield error(path, f"{name} must be set")
        return
    negated = tuple("not" + f[0].upper() + f[1:] for f in fields)
    if not any(arr(clause.get(f)) for f in fields + negated):
        yield error(path, f"{name} must not be empty")
    for field, values in clause.items():
        for index, value in enumerate(arr(values)):
            where = (*path, field, index)
            if text(value) == "":
                yield invalid(where, value, "values must not be empty")
            elif field in _IP_FIELDS:
                reason = names.ip_or_cidr_error(text(value))
                if reason:
                    yield invalid(where, value, reason)


def _only_http(clause: dict[str, Any]) -> bool:
    present = [field for field, values in clause.items() if arr(values)]
    return bool(present) and all(field in _HTTP_ONLY for field in present)


def _check_condition(path: FieldPath, condition: dict[str, Any]) -> Iterator[Issue]:
    key = text(condition.get("key"))
    if not key:
        yield error((*path, "key"), "key must be set")
        return
    if key not in _PLAIN_KEYS and not _KEY_WITH_INDEX.match(key):
        yield invalid((*path, "key"), key, "unknown attribute")
    values, not_values = arr(condition.get("values")), arr(condition.get("notValues"))
    if not values and not not_values:
        yield error(path, f"values or notValues must be set for key {key}")
    for field, items in (("values", values), ("notValues", not_values)):
        for index, value in enumerate(items):
            where = (*path, field, index)
            if key in _IP_KEYS and names.ip_or_cidr_error(text(value)):
                yield invalid(where, value, names.ip_or_cidr_error(text(value)) or "")
            elif key == "destination.port" and not (text(value).isdigit() and int(
                    text(value)) <= 65535):
                yield invalid(where, value, "must be a port number 0-65535")
