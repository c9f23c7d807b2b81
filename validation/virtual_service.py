"""VirtualService checks beyond its schema, following Istio's validation webhook.

The schema already types every field and the CRD's CEL rules bound durations; what is
left are relations between fields (route vs redirect vs directResponse), host syntax,
RE2 regexes, header names and the ranges Envoy needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pilotfish.core.objects import ConfigObject, FieldPath
from pilotfish.validation import names
from pilotfish.validation.fields import (
    arr,
    check_export_to,
    check_labels,
    check_port,
    error,
    num,
    obj,
    text,
)
from pilotfish.validation.issues import Issue, invalid, warning
from pilotfish.validation.route_parts import (
    check_cors,
    check_destination,
    check_fault,
    check_header_ops,
    check_redirect,
    check_retries,
    check_rewrite,
    check_string_match,
    check_weights,
)

MESH = "mesh"


def check(spec: dict[str, Any], config: ConfigObject) -> Iterator[Issue]:
    base: FieldPath = ("spec",)
    hosts = [text(h) for h in arr(spec.get("hosts"))]
    gateways = [text(g) for g in arr(spec.get("gateways"))]
    delegate = not hosts
    if delegate:
        yield warning((*base, "hosts"), "no hosts: this VirtualService is only used as a "
                      "delegate of another VirtualService's http route")
        for field in ("gateways", "tls", "tcp"):
            if spec.get(field):
                yield error((*base, field), f"a delegate VirtualService (no hosts) cannot "
                            f"set {field}")
    on_gateway = bool(gateways) and MESH not in gateways
    yield from _check_hosts((*base, "hosts"), hosts, on_gateway)
    yield from _check_gateway_names((*base, "gateways"), gateways)
    if not any(spec.get(field) for field in ("http", "tcp", "tls")):
        yield error(base, "http, tcp or tls must be provided in a VirtualService")
    routes = arr(spec.get("http"))
    for index, route in enumerate(routes):
        yield from _check_http_route((*base, "http", index), obj(route), delegate)
    yield from _unreachable((*base, "http"), routes)
    for index, route in enumerate(arr(spec.get("tcp"))):
        yield from _check_l4_route((*base, "tcp", index), obj(route), "TCP")
    for index, route in enumerate(arr(spec.get("tls"))):
        where = (*base, "tls", index)
        route = obj(route)
        yield from _check_l4_route(where, route, "TLS")
        if not arr(route.get("match")):
            yield error((*where, "match"), "a TLS route needs at least one match")
        for m_index, match in enumerate(arr(route.get("match"))):
            yield from _check_sni((*where, "match", m_index, "sniHosts"), obj(match), hosts,
                                  on_gateway)
    yield from check_export_to((*base, "exportTo"), arr(spec.get("exportTo")),
                               config.namespace, allow_none=False)


def _check_hosts(path: FieldPath, hosts: list[str], on_gateway: bool) -> Iterator[Issue]:
    valid = True
    for index, host in enumerate(hosts):
        reason = names.wildcard_domain_error(host)
        if reason and not names.is_ip(host):
            valid = False
            yield invalid((*path, index), host, reason)
        elif host == "*" and not on_gateway:
            valid = False
            yield invalid((*path, index), host, "wildcard host * is not allowed for "
                          "VirtualServices bound to the mesh")
    if not valid:
        return
    for i, first in enumerate(hosts):
        for j in range(i + 1, len(hosts)):
            if _overlap(first, hosts[j]):
                yield invalid((*path, j), hosts[j], f"duplicate of host {first!r}")


def _overlap(a: str, b: str) -> bool:
    """Whether two host names (possibly ``*.`` wildcards) match a common name."""
    a, b = a.lower(), b.lower()
    if a == b or "*" in (a, b):
        return True
    if a.startswith("*"):
        return b.endswith(a[1:])
    return b.startswith("*") and a.endswith(b[1:])


def _check_gateway_names(path: FieldPath, gateways: list[str]) -> Iterator[Issue]:
    for index, name in enumerate(gateways):
        where = (*path, index)
        namespace, slash, gateway = name.partition("/")
        if not slash:
            reason = None if name == MESH else names.fqdn_error(name)
            if reason:
                yield invalid(where, name, reason)
            elif "." in name:
                yield warning(where, f"legacy gateway name {name!r}: prefer "
                              "<namespace>/<name>")
            continue
        if names.dns_label_error(namespace):
            yield invalid(where, name, f"invalid namespace {namespace!r}")
        if names.dns_label_error(gateway):
            yield invalid(where, name, f"invalid gateway name {gateway!r}")


def _check_http_route(path: FieldPath, route: dict[str, Any], delegate: bool) -> (
    Iterator[Issue]
):
    actions = [a for a in ("route", "redirect", "directResponse", "delegate") if route.get(a)]
    if not actions:
        yield error(path, "an http route needs one of route, redirect, directResponse or "
                    "delegate")
    elif len(actions) > 1:
        yield error(path, f"an http route cannot contain both {actions[0]} and {actions[1]}")
    if delegate and route.get("delegate"):
        yield error((*path, "delegate"), "a delegate VirtualService cannot delegate again")
    for field in ("fault", "rewrite"):
        if route.get("redirect") and route.get(field):
            yield error(path, f"an http route cannot contain both {field} and redirect")
    for index, match in enumerate(arr(route.get("match"))):
        yield from _check_match((*path, "match", index), obj(match), bool(route.get("delegate")))
    yield from check_header_ops((*path, "headers"), obj(route.get("headers")))
    yield from check_cors((*path, "corsPolicy"), obj(route.get("corsPolicy")))
    yield from check_fault((*path, "fault"), route.get("fault"))
    yield from check_redirect((*path, "redirect"), route.get("redirect"))
    yield from check_retries((*path, "retries"), route.get("retries"))
    yield from check_rewrite((*path, "rewrite"), route.get("rewrite"))
    if "directResponse" in route:
        yield from _check_direct_response((*path, "directResponse"),
                                          obj(route["directResponse"]))
    yield from _check_mirrors(path, route)
    yield from check_weights((*path, "route"), arr(route.get("route")), http=True)


def _check_match(path: FieldPath, match: dict[str, Any], root: bool) -> Iterator[Issue]:
    for field in ("uri", "scheme", "method", "authority"):
        if field in match:
            yield from check_string_match((*path, field), obj(match[field]), root)
    for field in ("headers", "queryParams", "withoutHeaders"):
        for name, value in obj(match.get(field)).items():
            where = (*path, field, name)
            if field != "queryParams" and not _header_name_ok(name):
                yield invalid(where, name, "not a valid header name")
            yield from check_string_match(where, obj(value), root)
    if "port" in match:
        yield from check_port((*path, "port"), match["port"])
    yield from check_labels((*path, "sourceLabels"), obj(match.get("sourceLabels")))
    yield from _check_gateway_names((*path, "gateways"), [text(g) for g in arr(
        match.get("gateways"))])
    namespace = text(match.get("sourceNamespace"))
    if namespace and names.dns_label_error(namespace):
        yield invalid((*path, "sourceNamespace"), namespace, "not a valid namespace name")


def _header_name_ok(name: str) -> bool:
    # "@request.auth.claims.<claim>" routes on JWT claims (gateways only; see Istio docs).
    return name.startswith("@request.auth.claims") or bool(
        name and all(c.isalnum() or c in "-_" for c in name) and name.isascii())


def _check_direct_response(path: FieldPath, response: dict[str, Any]) -> Iterator[Issue]:
    status = num(response.get("status"))
    if not 200 <= status <= 599:
        yield invalid((*path, "status"), response.get("status"), "must be in range 200-599")
    body = obj(response.get("body"))
    size = len(text(body.get("string")).encode()) + len(text(body.get("bytes"))) * 3 // 4
    if size > 1024 * 1024:
        yield error((*path, "body"), "direct response body must be smaller than 1MB")
    elif size > 100 * 1024:
        yield warning((*path, "body"), "large direct response bodies slow down config pushes")


def _check_mirrors(path: FieldPath, route: dict[str, Any]) -> Iterator[Issue]:
    if route.get("mirror") and route.get("mirrors"):
        yield error(path, "an http route cannot set both mirror and mirrors")
    if "mirror" in route:
        yield from check_destination((*path, "mirror"), obj(route["mirror"]))
    if "mirrorPercent" in route:
        yield warning((*path, "mirrorPercent"), "mirrorPercent is deprecated; use "
                      "mirrorPercentage")
    percentages = [((*path, "mirrorPercentage"), route.get("mirrorPercentage"))]
    for index, mirror in enumerate(arr(route.get("mirrors"))):
        where = (*path, "mirrors", index)
        yield from check_destination((*where, "destination"), obj(obj(mirror).get(
            "destination")))
        percentages.append(((*where, "percentage"), obj(mirror).get("percentage")))
    for where, percentage in percentages:
        value = obj(percentage).get("value")
        if isinstance(value, int | float) and not 0 <= value <= 100:
            yield invalid((*where, "value"), value, "must be in range 0-100")


def _check_l4_route(path: FieldPath, route: dict[str, Any], kind: str) -> Iterator[Issue]:
    if not arr(route.get("route")):
        yield error((*path, "route"), f"a {kind} route needs at least one destination")
    for index, match in enumerate(arr(route.get("match"))):
        where = (*path, "match", index)
        match = obj(match)
        for s_index, subnet in enumerate(arr(match.get("destinationSubnets"))):
            reason = names.ip_or_cidr_error(text(subnet))
            if reason:
                yield invalid((*where, "destinationSubnets", s_index), subnet, reason)
        if "port" in match:
            yield from check_port((*where, "port"), match["port"])
        yield from check_labels((*where, "sourceLabels"), obj(match.get("sourceLabels")))
    yield from check_weights((*path, "route"), arr(route.get("route")), http=False)


def _check_sni(path: FieldPath, match: dict[str, Any], hosts: list[str], on_gateway: bool) -> (
    Iterator[Issue]
):
    sni_hosts = [text(h) for h in arr(match.get("sniHosts"))]
    if not sni_hosts:
        yield error(path, "a TLS match needs at least one SNI host")
    for index, sni in enumerate(sni_hosts):
        reason = names.wildcard_domain_error(sni)
        if reason:
            if names.is_ip(sni):
                yield warning((*path, index), f"{sni!r} is an IP address; most clients never "
                              "send one as SNI")
            else:
                yield invalid((*path, index), sni, reason)
        elif not any(_within(sni, host) for host in hosts):
            yield invalid((*path, index), sni, "is not covered by any of the VirtualService "
                          f"hosts: {', '.join(hosts)}")


def _within(sni: str, host: str) -> bool:
    sni, host = sni.lower(), host.lower()
    if host == "*" or sni == host:
        return True
    return host.startswith("*") and sni.endswith(host[1:]) and not (
        sni.startswith("*") and len(sni) < len(host))


def _unreachable(path: FieldPath, routes: list[Any]) -> Iterator[Issue]:
    """Warn about rules no request can reach: those after a rule without matches."""
    catch_all = None
    for index, route in enumerate(routes):
        if catch_all is not None:
            yield warning((*path, index), f"rule not used: rule {catch_all} before it "
                          "already matches every request")
        elif not arr(obj(route).get("match")):
            catch_all = index
