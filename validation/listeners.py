"""Gateway and Sidecar checks: both declare listeners (port, bind, hosts, TLS).

Facts follow Istio's webhook: Gateway names are DNS labels; every server needs hosts and a
named port; HTTPS/TLS servers need TLS settings and plain HTTP servers may only redirect;
Sidecar listeners need unique ports and ``namespace/host`` egress hosts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pilotfish.core.objects import ConfigObject, FieldPath
from pilotfish.validation import names
from pilotfish.validation.destination_rule import check_connection_pool
from pilotfish.validation.fields import (
    arr,
    check_port,
    check_selector,
    error,
    num,
    obj,
    text,
)
from pilotfish.validation.issues import Issue, invalid, required, warning

UNIX = "unix://"
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-WEB"})
TLS_PROTOCOLS = frozenset({"HTTPS", "TLS"})
PROTOCOLS = HTTP_PROTOCOLS | TLS_PROTOCOLS | {"TCP", "UDP", "MONGO", "MYSQL", "REDIS"}


def protocol_error(protocol: str) -> str | None:
    if protocol.upper() not in PROTOCOLS:
        return f"unsupported protocol; supported: {', '.join(sorted(PROTOCOLS))}"
    return None


def check_gateway(spec: dict[str, Any], config: ConfigObject) -> Iterator[Issue]:
    base: FieldPath = ("spec",)
    # Names with dots are valid object names (reported by the metadata check otherwise).
    if names.dns_label_error(config.name) and not names.dns_subdomain_error(config.name):
        yield invalid(("metadata", "name"), config.name, "a Gateway name must be a DNS-1123 "
                      "label (no dots)")
    servers = arr(spec.get("servers"))
    if not servers:
        yield error((*base, "servers"), "a Gateway needs at least one server")
    port_names: dict[str, int] = {}
    for index, server in enumerate(servers):
        where = (*base, "servers", index)
        server = obj(server)
        yield from _check_server(where, server)
        port = obj(server.get("port"))
        name = text(port.get("name"))
        if name and name in port_names:
            yield invalid((*where, "port", "name"), name, "port names must be unique across "
                          f"servers (also server {port_names[name]})")
        port_names.setdefault(name, index)
        protocol = text(port.get("protocol")).upper()
        if obj(server.get("tls")).get("httpsRedirect") and protocol not in HTTP_PROTOCOLS:
            yield warning((*where, "tls", "httpsRedirect"), "httpsRedirect only applies to "
                          "HTTP servers")


def _check_server(path: FieldPath, server: dict[str, Any]) -> Iterator[Issue]:
    hosts = arr(server.get("hosts"))
    if not hosts:
        yield error((*path, "hosts"), "a server needs at least one host")
    for index, host in enumerate(hosts):
        reason = names.namespace_host_error(text(host), allow_bare=True)
        if reason:
            yield invalid((*path, "hosts", index), host, reason)
    bind = text(server.get("bind"))
    if "port" not in server:
        yield required((*path, "port"))
        return
    port = obj(server["port"])
    protocol = text(port.get("protocol"))
    if protocol_error(protocol):
        yield invalid((*path, "port", "protocol"), protocol, protocol_error(protocol) or "")
    if num(port.get("number")) or not bind.startswith(UNIX):
        yield from check_port((*path, "port", "number"), port.get("number"))
    if num(port.get("targetPort")):
        yield error((*path, "port", "targetPort"), "targetPort has no effect on Gateways")
    if not text(port.get("name")):
        yield required((*path, "port", "name"))
    yield from _check_bind((*path, "bind"), bind, num(port.get("number")))
    tls = server.get("tls")
    if tls is not None:
        yield from check_server_tls((*path, "tls"), obj(tls))
    upper = protocol.upper()
    if upper in TLS_PROTOCOLS and tls is None:
        yield required((*path, "tls"), f"{upper} servers need TLS settings")
    elif upper in HTTP_PROTOCOLS and tls is not None:
        tls = obj(tls)
        if not tls.get("httpsRedirect") or any(text(tls.get(f)) for f in (
                "caCertificates", "privateKey", "serverCertificate")):
            yield error((*path, "tls"), "plain-text HTTP servers may only set "
                        "tls.httpsRedirect")
    elif upper not in TLS_PROTOCOLS | HTTP_PROTOCOLS and tls is not None and not protocol_error(
            protocol):
        yield error((*path, "tls"), f"{upper} servers cannot have TLS settings")


def _check_bind(path: FieldPath, bind: str, number: int) -> Iterator[Issue]:
    if bind.startswith(UNIX):
        socket = bind.removeprefix(UNIX)
        if not (socket.startswith("@") or (socket.startswith("/") and not socket.endswith("/"))):
            yield invalid(path, bind, "a unix socket must be an absolute file path or @name")
        if number:
            yield invalid(path, bind, "the port number must be 0 with a unix socket bind")
    elif bind and not names.is_ip(bind):
        yield invalid(path, bind, "must be an IP address or unix:// path")


def check_server_tls(path: FieldPath, tls: dict[str, Any]) -> Iterator[Issue]:
    mode = text(tls.get("mode")) or "PASSTHROUGH"
    files = [f for f in ("serverCertificate", "privateKey", "caCertificates",
                         "credentialName") if text(tls.get(f))]
    if mode == "ISTIO_MUTUAL":
        for field in files:
            yield error((*path, field), f"ISTIO_MUTUAL uses Istio's certificates; {field} "
                        "cannot be set")
        return
    if mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH") and (files or text(tls.get("caCrl"))):
        yield warning(path, f"{mode} does not terminate TLS; certificates are ignored")
    if mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL") and not (
            text(tls.get("credentialName")) or arr(tls.get("credentialNames")) or arr(
            tls.get("tlsCertificates"))):
        needed = ["serverCertificate", "privateKey"]
        if mode != "SIMPLE":
            needed.append("caCertificates")
        for field in needed:
            if field not in files:
                yield required((*path, field), f"{mode} TLS without credentialName needs "
                               f"{field}")
    if text(tls.get("caCrl")):
        if text(tls.get("credentialName")):
            yield error((*path, "caCrl"), "caCrl cannot be used with credentialName")
        if mode == "SIMPLE":
            yield error((*path, "caCrl"), "caCrl is not supported with SIMPLE TLS")


def check_sidecar(spec: dict[str, Any], config: ConfigObject) -> Iterator[Issue]:
    base: FieldPath = ("spec",)
    selector = spec.get("workloadSelector")
    if selector is not None:
        yield from check_selector((*base, "workloadSelector", "labels"),
                                  obj(obj(selector).get("labels")), "Sidecar")
    if not any(spec.get(f) for f in ("egress", "ingress", "outboundTrafficPolicy",
                                     "inboundConnectionPool")):
        yield error(base, "a Sidecar must set egress, ingress, outboundTrafficPolicy or "
                    "inboundConnectionPool")
    used: set[int] = set()
    for index, listener in enumerate(arr(spec.get("ingress"))):
        where, listener = (*base, "ingress", index), obj(listener)
        if "port" not in listener:
            yield required((*where, "port"))
            continue
        yield from _check_sidecar_port(where, listener, used)
        tls = obj(listener.get("tls"))
        if tls.get("mode") in ("ISTIO_MUTUAL", "AUTO_PASSTHROUGH"):
            yield invalid((*where, "tls", "mode"), tls["mode"], "not allowed on sidecar "
                          "ingress")
        if "tls" in listener:
            yield from check_server_tls((*where, "tls"), tls)
        if "connectionPool" in listener:
            yield from check_connection_pool((*where, "connectionPool"),
                                             obj(listener["connectionPool"]))
    if "inboundConnectionPool" in spec:
        yield from check_connection_pool((*base, "inboundConnectionPool"),
                                         obj(spec["inboundConnectionPool"]))
    yield from _check_egress((*base, "egress"), arr(spec.get("egress")))
    policy = obj(spec.get("outboundTrafficPolicy"))
    if policy.get("egressProxy") and policy.get("mode") != "ALLOW_ANY":
        yield error((*base, "outboundTrafficPolicy", "egressProxy"), "egressProxy needs "
                    "mode ALLOW_ANY")


def _check_egress(path: FieldPath, listeners: list[Any]) -> Iterator[Issue]:
    used: set[int] = set()
    for index, listener in enumerate(listeners):
        where, listener = (*path, index), obj(listener)
        if "port" not in listener and index != len(listeners) - 1:
            yield error(where, "only the last egress listener may omit the port")
        elif "port" in listener:
            yield from _check_sidecar_port(where, listener, used)
        hosts = arr(listener.get("hosts"))
        if not hosts:
            yield error((*where, "hosts"), "an egress listener needs at least one host")
        for h_index, host in enumerate(hosts):
            reason = names.namespace_host_error(text(host), allow_bare=False,
                                                exclusions=True)
            if reason:
                yield invalid((*where, "hosts", h_index), host, reason)


def _check_sidecar_port(path: FieldPath, listener: dict[str, Any], used: set[int]) -> (
    Iterator[Issue]
):
    port = obj(listener.get("port"))
    number, bind = num(port.get("number")), text(listener.get("bind"))
    protocol = text(port.get("protocol"))
    if protocol and protocol_error(protocol):
        yield invalid((*path, "port", "protocol"), protocol, protocol_error(protocol) or "")
    if number or not bind.startswith(UNIX):
        yield from check_port((*path, "port", "number"), port.get("number"))
    if number in used:
        yield invalid((*path, "port", "number"), number, "ports on IP-bound listeners must "
                      "be unique")
    used.add(number)
    if num(port.get("targetPort")):
        yield error((*path, "port", "targetPort"), "targetPort has no effect on Sidecars")
    yield from _check_bind((*path, "bind"), bind, number)
