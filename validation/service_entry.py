"""ServiceEntry and WorkloadEntry checks beyond their schemas.

The CRDs' CEL rules already cover several relations (CIDR only with NONE/STATIC, no
endpoints with NONE, one endpoint with DNS_ROUND_ROBIN, unique port numbers). Left here:
host and address syntax, what each resolution needs of hosts and endpoints, protocols,
port names, and exportTo.
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
    check_selector,
    error,
    num,
    obj,
    text,
)
from pilotfish.validation.issues import Issue, invalid, warning
from pilotfish.validation.listeners import (
    HTTP_PROTOCOLS,
    TLS_PROTOCOLS,
    UNIX,
    protocol_error,
)


def check_service_entry(spec: dict[str, Any], config: ConfigObject) -> Iterator[Issue]:
    base: FieldPath = ("spec",)
    resolution = text(spec.get("resolution")) or "NONE"
    hosts = [text(h) for h in arr(spec.get("hosts"))]
    for index, host in enumerate(hosts):
        reason = names.wildcard_domain_error(host)
        if reason:
            yield invalid((*base, "hosts", index), host, reason)
        elif host.startswith("*") and not host.startswith("*."):
            yield warning((*base, "hosts", index), f"partial wildcard {host!r}: only '*.' "
                          "prefixes match whole labels")
    addresses = [text(a) for a in arr(spec.get("addresses"))]
    for index, address in enumerate(addresses):
        reason = names.ip_or_cidr_error(address)
        if reason:
            yield invalid((*base, "addresses", index), address, reason)
    port_names: set[str] = set()
    ports = [obj(p) for p in arr(spec.get("ports"))]
    for index, port in enumerate(ports):
        where = (*base, "ports", index)
        name = text(port.get("name"))
        port_names.add(name)
        if names.dns_label_error(name):
            yield invalid((*where, "name"), name, "port name must be a DNS-1123 label")
        protocol = text(port.get("protocol"))
        if protocol and protocol_error(protocol):
            yield invalid((*where, "protocol"), protocol, protocol_error(protocol) or "")
        if not addresses and protocol.upper() in ("", "TCP"):
            yield warning(where, "a TCP (or unset) protocol port without addresses needs DNS "
                          "auto-allocation on the proxies to be reachable")
        if num(port.get("targetPort")) and resolution == "NONE":
            yield warning((*where, "targetPort"), "targetPort has no effect with resolution "
                          "NONE")
    if spec.get("workloadSelector") is not None:
        yield from check_selector((*base, "workloadSelector", "labels"),
                                  obj(obj(spec["workloadSelector"]).get("labels")),
                                  "ServiceEntry")
        if resolution != "STATIC":
            yield warning((*base, "workloadSelector"), "workloadSelector is only used with "
                          "resolution STATIC")
    endpoints = arr(spec.get("endpoints"))
    if resolution in ("DNS", "DNS_ROUND_ROBIN") and not endpoints:
        for index, host in enumerate(hosts):
            if names.fqdn_error(host):
                yield invalid((*base, "hosts", index), host, f"resolution {resolution} "
                              "without endpoints needs fully qualified hosts (no wildcards)")
    for index, endpoint in enumerate(endpoints):
        yield from _check_endpoint((*base, "endpoints", index), obj(endpoint), resolution,
                                   port_names)
    if resolution != "NONE" and len(hosts) > 1:
        plain = [p for p in ports if text(p.get("protocol")).upper() not in
                 HTTP_PROTOCOLS | TLS_PROTOCOLS]
        if plain:
            yield error((*base, "hosts"), "several hosts cannot share non-HTTP, non-TLS ports "
                        "unless resolution is NONE (nothing tells the hosts apart)")
    yield from check_export_to((*base, "exportTo"), arr(spec.get("exportTo")),
                               config.namespace, allow_none=True)


def _check_endpoint(path: FieldPath, endpoint: dict[str, Any], resolution: str,
                    port_names: set[str]) -> Iterator[Issue]:
    address = text(endpoint.get("address"))
    if resolution == "STATIC" and not address.startswith(UNIX) and not names.is_ip(address):
        yield invalid((*path, "address"), address, "resolution STATIC needs IP addresses")
    elif not address.startswith(UNIX) and not names.is_ip(address) and names.fqdn_error(
            address):
        yield invalid((*path, "address"), address, "not an IP address or DNS name")
    for name, number in obj(endpoint.get("ports")).items():
        if name not in port_names:
            yield invalid((*path, "ports", name), name, "no service port has this name")
        yield from check_port((*path, "ports", name), number)
    yield from check_labels((*path, "labels"), obj(endpoint.get("labels")))


def check_workload_entry(spec: dict[str, Any], config: ConfigObject) -> Iterator[Issue]:
    yield from check_workload((("spec",)), spec)


def check_workload(path: FieldPath, workload: dict[str, Any]) -> Iterator[Issue]:
    address = text(workload.get("address"))
    if not address and text(workload.get("network")):
        yield warning((*path, "address"), "no address: the workload is reached through its "
                      "network's gateway")
    if address.startswith(UNIX):
        socket = address.removeprefix(UNIX)
        if not socket.startswith(("@", "/")) or socket.endswith("/"):
            yield invalid((*path, "address"), address, "a unix socket must be an absolute "
                          "file path or @name")
    elif address and not names.is_ip(address) and names.fqdn_error(address):
        yield invalid((*path, "address"), address, "not an IP address or DNS name")
    for name, number in obj(workload.get("ports")).items():
        if names.dns_label_error(name):
            yield invalid((*path, "ports", name), name, "port name must be a DNS-1123 label")
        yield from check_port((*path, "ports", name), number)
    yield from check_labels((*path, "labels"), obj(workload.get("labels")))
