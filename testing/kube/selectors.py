"""Label and field selectors: the ``?labelSelector=`` and ``?fieldSelector=`` grammar, and
``metav1.LabelSelector`` objects (webhooks' namespaceSelector and objectSelector).

A selector is a list of requirements, all of which must hold.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

# Fields each kind can be selected by, beyond metadata.name and metadata.namespace (the
# kube-apiserver registries' field label conversions, the ones clients use).
FIELDS: dict[str, frozenset[str]] = {
    "Pod": frozenset({"spec.nodeName", "spec.serviceAccountName", "spec.hostNetwork",
                      "spec.schedulerName", "status.phase", "status.podIP",
                      "status.nominatedNodeName"}),
    "Event": frozenset({"involvedObject.kind", "involvedObject.namespace",
                        "involvedObject.name", "involvedObject.uid",
                        "involvedObject.apiVersion", "involvedObject.resourceVersion",
                        "involvedObject.fieldPath", "reason", "reportingComponent", "source",
                        "type"}),
    "Secret": frozenset({"type"}),
    "Namespace": frozenset({"status.phase"}),
    "Node": frozenset({"spec.unschedulable"}),
}

_WORD = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_SET = re.compile(rf"^\s*({_WORD})\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQUALITY = re.compile(rf"^\s*({_WORD})\s*(==|=|!=)\s*([-A-Za-z0-9_.]*)\s*$")
_EXISTS = re.compile(rf"^\s*(!?)\s*({_WORD})\s*$")
_FIELD = re.compile(r"^\s*([A-Za-z0-9.]+)\s*(==|=|!=)\s*([^,\s]*)\s*$")  # values: anything


@attrs.frozen
class Requirement:
    key: str
    operator: str  # in, notin, exists, !exists (= and == are in; != is notin)
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "exists":
            return self.key in labels
        if self.operator == "!exists":
            return self.key not in labels
        if self.operator == "in":
            return self.key in labels and labels[self.key] in self.values
        return labels.get(self.key) not in self.values  # notin: absent keys match


Selector = Sequence[Requirement]


def matches(selector: Selector, labels: Mapping[str, str] | None) -> bool:
    return all(requirement.matches(labels or {}) for requirement in selector)


def _split(text: str) -> list[str]:
    """Split on the commas that are not inside a set's parentheses."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part for part in parts if part.strip()]


def parse_labels(text: str) -> list[Requirement]:
    """``app=a,tier!=db,env in (x,y),!legacy`` → requirements; ValueError when malformed."""
    requirements = []
    for part in _split(text):
        if found := _SET.match(part):
            values = frozenset(v.strip() for v in found[3].split(",") if v.strip())
            requirements.append(Requirement(found[1], found[2], values))
        elif found := _EQUALITY.match(part):
            operator = "notin" if found[2] == "!=" else "in"
            requirements.append(Requirement(found[1], operator, frozenset({found[3]})))
        elif found := _EXISTS.match(part):
            requirements.append(Requirement(found[2], "!exists" if found[1] else "exists"))
        else:
            raise ValueError(f"unable to parse requirement: {part.strip()!r}")
    return requirements


def parse_fields(text: str, kind: str) -> list[Requirement]:
    """``metadata.name=x,spec.nodeName!=y`` → requirements on the field values; ValueError
    for a malformed term or a field the kind cannot be selected by."""
    allowed = FIELDS.get(kind, frozenset()) | {"metadata.name", "metadata.namespace"}
    requirements = []
    for part in _split(text):
        found = _FIELD.match(part)
        if not found:
            raise ValueError(f"invalid selector: {part.strip()!r}; can't understand it")
        if found[1] not in allowed:
            raise ValueError(f'field label not supported: {found[1]}')
        operator = "notin" if found[2] == "!=" else "in"
        requirements.append(Requirement(found[1], operator, frozenset({found[3]})))
    return requirements


def fields_of(obj: Mapping[str, Any], selector: Selector) -> dict[str, str]:
    """The values of the fields a field selector names, as strings (absent: empty)."""
    values = {}
    for requirement in selector:
        value: Any = obj
        for step in requirement.key.split("."):
            value = value.get(step) if isinstance(value, dict) else None
        if isinstance(value, bool):
            value = "true" if value else "false"
        values[requirement.key] = "" if value is None else str(value)
    return values


def from_label_selector(selector: Mapping[str, Any] | None) -> list[Requirement]:
    """A ``metav1.LabelSelector`` (matchLabels, matchExpressions) → requirements; an absent
    or empty selector selects everything."""
    if not selector:
        return []
    requirements = [Requirement(key, "in", frozenset({value}))
                    for key, value in (selector.get("matchLabels") or {}).items()]
    operators = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expression in selector.get("matchExpressions") or ():
        operator = operators.get(expression.get("operator"))
        if operator is None:
            raise ValueError(f"{expression.get('operator')!r} is not a valid label selector "
                             f"operator")
        requirements.append(Requirement(expression["key"], operator,
                                        frozenset(expression.get("values") or ())))
    return requirements
