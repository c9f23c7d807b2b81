"""Object metadata, and the core Kubernetes kinds pilotfish reads, checked the way the API
server would before they ever reached istiod.

pilotfish acts as its own API server for the file source, so it checks the parts it
relies on: names, labels, Service ports, Pod IPs, Endpoints and EndpointSlice addresses.
It is not a full reimplementation of Kubernetes' validation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pilotfish.core.objects import ConfigObject, FieldPath
from pilotfish.core.security import credentials
from pilotfish.validation import names
from pilotfish.validation.fields import arr, check_labels, check_port, num, obj, text
from pilotfish.validation.issues import (
    Issue,
    duplicate,
    invalid,
    required,
    unsupported,
    warning,
)

_PROTOCOLS = ("TCP", "UDP", "SCTP")
_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
_ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")
# How each kind's metadata.name is checked; the rest use RFC 1123 subdomains.
_NAME_RULES: dict[str, Callable[[str], str | None]] = {
    "Namespace": names.dns_label_error,
    "Service": names.dns1035_label_error,
}


def check_metadata(config: ConfigObject) -> Iterator[Issue]:
    rule = _NAME_RULES.get(config.kind, names.dns_subdomain_error)
    reason = rule(config.name)
    if reason:
        yield invalid(("metadata", "name"), config.name, f"must be {reason}")
    namespace = text(obj(config.body.get("metadata")).get("namespace"))
    if namespace and names.dns_label_error(namespace):
        yield invalid(("metadata", "namespace"), namespace,
                      f"must be {names.dns_label_error(namespace)}")
    metadata = obj(config.body.get("metadata"))
    yield from check_labels(("metadata", "labels"), obj(metadata.get("labels")))
    for key in obj(metadata.get("annotations")):
        reason = names.label_key_error(key)
        if reason:
            yield invalid(("metadata", "annotations", key), key, reason)


def check_service(spec: dict[str, Any], config: ConfigObject) -> Iterator[Issue]:
    base: FieldPath = ("spec",)
    service_type = spec.get("type", "ClusterIP")
    if service_type not in _SERVICE_TYPES:
        yield unsupported((*base, "type"), service_type, _SERVICE_TYPES)
    cluster_ip = text(spec.get("clusterIP"))
    if cluster_ip and cluster_ip != "None" and not names.is_ip(cluster_ip):
        yield invalid((*base, "clusterIP"), cluster_ip, "must be an IP address or None")
    ports = arr(spec.get("ports"))
    seen_names: set[str] = set()
    seen_ports: set[tuple[int, str]] = set()
    for index, port in enumerate(ports):
        where, port = (*base, "ports", index), obj(port)
        name = text(port.get("name"))
        if len(ports) > 1 and not name:
            yield required((*where, "name"), "every port needs a name when there are several")
        elif name and names.dns_label_error(name):
            yield invalid((*where, "name"), name, f"must be {names.dns_label_error(name)}")
        if name and name in seen_names:
            yield duplicate((*where, "name"), name)
        seen_names.add(name)
        yield from _check_protocol((*where, "protocol"), port)
        if "port" not in port:
            yield required((*where, "port"))
            continue
        yield from check_port((*where, "port"), port["port"])
        identity = (num(port["port"]), text(port.get("protocol")) or "TCP")
        if identity in seen_ports:
            yield duplicate(where, {"port": identity[0], "protocol": identity[1]})
        seen_ports.add(identity)
        if "targetPort" in port:
            yield from _check_target_port((*where, "targetPort"), port["targetPort"])
    yield from check_labels((*base, "selector"), obj(spec.get("selector")))


def _check_protocol(path: FieldPath, port: dict[str, Any]) -> Iterator[Issue]:
    protocol = port.get("protocol", "TCP")
    if protocol not in _PROTOCOLS:
        yield unsupported(path, protocol, _PROTOCOLS)


def _check_target_port(path: FieldPath, target: Any) -> Iterator[Issue]:
    if isinstance(target, str) and not target.isdigit():
        reason = names.port_name_error(target)
        if reason:
            yield invalid(path, target, f"must be {reason}")
    else:
        yield from check_port(path, int(target) if isinstance(target, str) else target)


def check_pod(spec: dict[str, Any], config: ConfigObject) -> Iterator[Issue]:
    status = obj(config.body.get("status"))
    if "podIP" in status and not names.is_ip(text(status["podIP"])):
        yield invalid(("status", "podIP"), status["podIP"], "must be an IP address")
    for index, entry in enumerate(arr(status.get("podIPs"))):
        address = obj(entry).get("ip")
        if not names.is_ip(text(address)):
            yield invalid(("status", "podIPs", index, "ip"), address, "must be an IP address")
    account = text(spec.get("serviceAccountName"))
    if account and names.dns_subdomain_error(account):
        yield invalid(("spec", "serviceAccountName"), account, "must be an RFC 1123 subdomain")
    for c_index, container in enumerate(arr(spec.get("containers"))):
        for p_index, port in enumerate(arr(obj(container).get("ports"))):
            where = ("spec", "containers", c_index, "ports", p_index)
            yield from check_port((*where, "containerPort"), obj(port).get("containerPort"))


def check_endpoints(body: dict[str, Any], config: ConfigObject) -> Iterator[Issue]:
    for s_index, subset in enumerate(arr(body.get("subsets"))):
        subset, where = obj(subset), ("subsets", s_index)
        for field in ("addresses", "notReadyAddresses"):
            for index, address in enumerate(arr(subset.get(field))):
                ip = obj(address).get("ip")
                if not names.is_ip(text(ip)):
                    yield invalid((*where, field, index, "ip"), ip, "must be an IP address")
        for index, port in enumerate(arr(subset.get("ports"))):
            yield from check_port((*where, "ports", index, "port"), obj(port).get("port"))
            yield from _check_protocol((*where, "ports", index, "protocol"), obj(port))


def check_endpoint_slice(body: dict[str, Any], config: ConfigObject) -> Iterator[Issue]:
    address_type = body.get("addressType")
    if address_type is None:
        yield required(("addressType",))
    elif address_type not in _ADDRESS_TYPES:
        yield unsupported(("addressType",), address_type, _ADDRESS_TYPES)
    for e_index, endpoint in enumerate(arr(body.get("endpoints"))):
        addresses = arr(obj(endpoint).get("addresses"))
        where = ("endpoints", e_index, "addresses")
        if not addresses:
            yield required(where)
        for index, address in enumerate(addresses):
            if not _address_fits(text(address), address_type):
                yield invalid((*where, index), address, f"must be an {address_type} address")
    for index, port in enumerate(arr(body.get("ports"))):
        port = obj(port)
        if port.get("port") is not None:
            yield from check_port(("ports", index, "port"), port["port"])
        yield from _check_protocol(("ports", index, "protocol"), port)


def _address_fits(address: str, address_type: Any) -> bool:
    if address_type == "FQDN":
        return names.fqdn_error(address) is None
    if not names.is_ip(address):
        return False
    return (":" in address) == (address_type == "IPv6")



def check_secret(body: dict[str, Any], config: ConfigObject) -> Iterator[Issue]:
    """A Secret holding TLS material that cannot serve as a ``credentialName`` (not PEM, a
    certificate without its key): a warning, as the API server stores it anyway and
    gateways report it in their status; its contents are never echoed."""
    try:
        credentials.credential(body)
    except credentials.CredentialError as exc:
        yield warning(exc.path, f"cannot serve as a TLS credential: {exc.reason}")
