"""A VirtualService's HTTP rules with delegation resolved.

A root VirtualService may hand a rule to a delegate VirtualService (one without hosts):
the delegate's rules replace it, each narrowed by the root rule's match conditions and
inheriting the root's settings it does not set itself. A delegate rule whose matches fall
outside the root's (``/b`` under a root ``/a``) is dropped, as in Istio.

Hosts and gateway names are resolved in the namespace of the VirtualService that wrote them
before merging, so a merged rule reads the same whichever namespace later looks at it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs

from pilotfish.core.model import resolve_host
from pilotfish.core.push_context import PushContext, VirtualService
from pilotfish.translators.route_match import qualify_gateway

# Root settings a delegate rule inherits when it does not set them.
_INHERITED = (
    "rewrite", "directResponse", "timeout", "retries", "fault", "mirror", "mirrorPercent",
    "mirrorPercentage", "corsPolicy", "mirrors", "headers",
)
_STRING_MATCHES = ("uri", "scheme", "method", "authority")
_MAP_MATCHES = ("headers", "withoutHeaders", "queryParams")


@attrs.frozen
class HttpRule:
    """One ``http[]`` rule ready to translate, and the namespace it is read in."""

    spec: Mapping[str, Any]
    namespace: str


def http_rules(
    push: PushContext, vs: VirtualService, memo: dict[Any, Any]
) -> tuple[HttpRule, ...]:
    """The VirtualService's rules after delegation (cached: independent of the proxy)."""
    key = ("rds.http_rules", vs.key)
    rules = memo.get(key)
    if rules is None:
        rules = memo[key] = tuple(_expand(push, vs))
    return rules


def _expand(push: PushContext, root: VirtualService) -> Iterator[HttpRule]:
    domain = push.mesh.domain
    for http in root.http:
        ref = http.get("delegate")
        if not isinstance(ref, Mapping):
            yield HttpRule(http, root.namespace)
            continue
        delegate = find_delegate(push, str(ref.get("name") or ""),
                                 str(ref.get("namespace") or root.namespace), root.namespace)
        if delegate is None:
            continue  # like Istio: only this rule is lost
        parent = _normalized(http, root.namespace, domain)
        for child in delegate.http:
            if child.get("delegate"):
                continue  # delegation is one level deep
            merged = merge_rule(parent, _normalized(child, delegate.namespace, domain))
            if merged is not None:
                yield HttpRule(merged, delegate.namespace)


def find_delegate(
    push: PushContext, name: str, namespace: str, viewer_ns: str
) -> VirtualService | None:
    """The host-less VirtualService ``namespace/name``, if exported to the root's namespace."""
    for vs in push.virtual_services:
        if vs.name != name or vs.namespace != namespace or vs.hosts:
            continue
        exported = vs.export_to
        if "*" in exported or viewer_ns in exported or ("." in exported and namespace == viewer_ns):
            return vs
    return None


def _normalized(http: Mapping[str, Any], namespace: str, domain: str) -> dict[str, Any]:
    out = dict(http)

    def resolved(destination: Mapping[str, Any]) -> dict[str, Any]:
        host = resolve_host(str(destination.get("host") or ""), namespace, domain)
        return {**destination, "host": host}

    if http.get("route"):
        out["route"] = [
            {**d, "destination": resolved(d.get("destination") or {})} for d in http["route"]
        ]
    if isinstance(http.get("mirror"), Mapping):
        out["mirror"] = resolved(http["mirror"])
    if http.get("mirrors"):
        out["mirrors"] = [
            {**m, "destination": resolved(m.get("destination") or {})} for m in http["mirrors"]
        ]
    if http.get("match"):
        out["match"] = [
            {**m, "gateways": [qualify_gateway(str(g), namespace) for g in m["gateways"]]}
            if m.get("gateways") else m
            for m in http["match"]
        ]
    return out


def merge_rule(root: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any] | None:
    """The delegate rule ``child`` under the root rule, or None if their matches conflict."""
    matches = _merge_matches(root.get("match") or [], child.get("match") or [])
    if matches is None:
        return None
    out = {k: v for k, v in child.items() if k != "delegate"}
    out["match"] = matches
    out["name"] = _joined(str(root.get("name") or ""), str(child.get("name") or ""))
    for field in _INHERITED:
        if out.get(field) is None and root.get(field) is not None:
            out[field] = root[field]
    return out


def _joined(root: str, child: str) -> str:
    if not child:
        return root
    return f"{root}-{child}" if root else child


def _merge_matches(
    roots: Sequence[Mapping[str, Any]], children: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]] | None:
    """Every child match must fit inside some root match; it is merged with each it fits."""
    if not roots:
        return list(children)
    if not children:
        return list(roots)
    out: list[Mapping[str, Any]] = []
    for child in children:
        fits = [r for r in roots if not _conflict(r, child)]
        if not fits:
            return None
        out += [_merge_match(r, child) for r in fits]
    return out


def _merge_match(root: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(child)
    out["name"] = _joined(str(root.get("name") or ""), str(child.get("name") or ""))
    for field in (*_STRING_MATCHES, "port", "sourceNamespace", "gateways", "statPrefix"):
        if not out.get(field) and root.get(field):
            out[field] = root[field]
    for field in (*_MAP_MATCHES, "sourceLabels"):
        merged = {**(root.get(field) or {}), **(child.get(field) or {})}
        if merged:
            out[field] = merged
    return out


def _conflict(root: Mapping[str, Any], leaf: Mapping[str, Any]) -> bool:
    """Does the leaf match ask for something outside the root match?"""
    for field in _STRING_MATCHES:
        if _string_conflict(root.get(field), leaf.get(field)):
            return True
    for field in _MAP_MATCHES:
        theirs = root.get(field) or {}
        if any(_string_conflict(theirs.get(k), v) for k, v in (leaf.get(field) or {}).items()):
            return True
    if bool(root.get("ignoreUriCase")) != bool(leaf.get("ignoreUriCase")):
        return True
    root_port, leaf_port = int(root.get("port") or 0), int(leaf.get("port") or 0)
    if root_port and leaf_port and root_port != leaf_port:
        return True
    if root.get("sourceNamespace") and leaf.get("sourceNamespace") != root["sourceNamespace"]:
        return True
    root_labels = root.get("sourceLabels") or {}
    if any(k in root_labels and root_labels[k] != v
           for k, v in (leaf.get("sourceLabels") or {}).items()):
        return True
    root_gws, leaf_gws = set(root.get("gateways") or ()), set(leaf.get("gateways") or ())
    return bool(root_gws and leaf_gws and not leaf_gws <= root_gws)


def _string_conflict(root: Mapping[str, Any] | None, leaf: Mapping[str, Any] | None) -> bool:
    if not root or not leaf:
        return False
    if root.get("regex") or leaf.get("regex"):
        # Regexes cannot be compared: only one side may constrain the value.
        return bool(root.get("regex") or root.get("prefix") or root.get("exact")) and bool(
            leaf.get("regex") or leaf.get("prefix") or leaf.get("exact")
        )
    if root.get("exact"):
        return leaf.get("exact") != root["exact"]
    if root.get("prefix"):
        value = leaf.get("prefix") or leaf.get("exact")
        return not (value and str(value).startswith(str(root["prefix"])))
    return True
