"""Reading plain JSON defensively, plus checks several Istio kinds share.

Semantic checks run after the schema passed, but kinds without a schema (Service, Pod...)
and preserve-unknown-fields subtrees can still hold anything; these accessors make a
wrong type read as "absent" instead of raising.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pilotfish.core.objects import FieldPath
from pilotfish.validation import names
from pilotfish.validation.issues import Issue, invalid, required, warning


def obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def arr(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def num(value: Any) -> int:
    """An integer field (0 when absent); 80.0 counts as 80, as JSON decoding does."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else 0


def error(path: FieldPath, message: str) -> Issue:
    return Issue(path, message)


def check_port(path: FieldPath, value: Any) -> Iterator[Issue]:
    if value is None:
        yield required(path)
        return
    reason = names.port_error(num(value) if isinstance(value, float) else value)
    if reason:
        yield invalid(path, value, reason)


def check_labels(path: FieldPath, labels: Mapping[str, Any]) -> Iterator[Issue]:
    """Label keys and values as Kubernetes allows them."""
    for key, value in labels.items():
        reason = names.label_key_error(key)
        if reason:
            yield invalid((*path, key), key, reason)
        if isinstance(value, str):
            reason = names.label_value_error(value)
            if reason:
                yield invalid((*path, key), value, reason)


def check_selector(path: FieldPath, labels: Mapping[str, Any], kind: str) -> Iterator[Issue]:
    """A workload selector's labels: no empty keys, no wildcards; empty selects all."""
    for key, value in labels.items():
        shown = f"{key}={value}"
        if not key:
            yield invalid((*path, key), shown, "empty key is not supported in selector")
        elif "*" in key or "*" in str(value):
            yield invalid((*path, key), shown, "wildcard is not supported in selector")
    if not labels:
        yield warning(path, f"workload selector without labels: the {kind} applies to every "
                      "workload in the namespace")


def check_export_to(
    path: FieldPath, entries: list[Any], namespace: str, allow_none: bool
) -> Iterator[Issue]:
    """exportTo: ``.``, ``*``, namespaces, and for ServiceEntry ``~`` (nobody), alone."""
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        entry = text(entry)
        key = namespace if entry == "." else entry
        where = (*path, index)
        if key in seen:
            detail = (f"duplicate entry: . and the current namespace {namespace}"
                      if key != entry else "duplicate entry")
            yield invalid(where, entry, detail)
            continue
        seen.add(key)
        if entry == "~" and not allow_none:
            yield invalid(where, entry, "~ (export to nobody) is only allowed for ServiceEntry")
        elif entry not in ("*", ".", "~") and names.dns_label_error(entry):
            yield invalid(where, entry, "must be ., *, or a namespace name")
    if "*" in seen and len(entries) > 1:
        yield invalid(path, entries, "cannot mix public (*) with other exportTo values")
    if "~" in seen and len(entries) > 1:
        yield invalid(path, entries, "cannot export to nobody (~) and to someone")


# Policy targets Istio accepts: (group, kind); "" is the core group.
_TARGET_KINDS = {("", "Service"), ("networking.istio.io", "ServiceEntry"),
                 ("gateway.networking.k8s.io", "Gateway")}


def check_targets(spec: dict[str, Any]) -> Iterator[Issue]:
    """targetRef / targetRefs of policies (AuthorizationPolicy, RequestAuthentication...)."""
    refs: list[tuple[FieldPath, dict[str, Any]]] = []
    if isinstance(spec.get("targetRef"), dict):
        refs.append((("spec", "targetRef"), spec["targetRef"]))
    refs += [(("spec", "targetRefs", i), obj(ref)) for i, ref in enumerate(arr(
        spec.get("targetRefs")))]
    for path, ref in refs:
        group, kind = text(ref.get("group")), text(ref.get("kind"))
        if (group, kind) not in _TARGET_KINDS:
            allowed = ", ".join(f"{g or 'core'}/{k}" for g, k in sorted(_TARGET_KINDS))
            yield invalid(path, f"{group or 'core'}/{kind}", f"target must be one of {allowed}")
