"""The Host header values a sidecar recognises for a service.

Applications call services by every name their resolver accepts: the FQDN (with or
without the trailing root dot), the short forms Kubernetes' search path completes
(``reviews`` from the same namespace, ``reviews.default`` and ``reviews.default.svc``
from anywhere in the cluster) and the cluster IP. Ports are not listed: the route
configuration sets ``ignore_port_in_host_matching``.
"""

from __future__ import annotations

from collections.abc import Iterable

from pilotfish.core.model import Resolution, Service

_SVC = ".svc."


def _ip_domain(address: str) -> str:
    # Host headers carry IPv6 literals in brackets.
    return f"[{address}]" if ":" in address else address


def _kube_short_names(hostname: str, proxy_domain: str) -> list[str]:
    """Short names of ``name.ns.svc.<suffix>`` for a proxy whose domain is ``ns'.svc.<suffix>``."""
    at = hostname.find(_SVC)
    dot = hostname.find(".")
    if at <= 0 or dot + 1 > at:
        return []
    name, namespace = hostname[:dot], hostname[dot + 1:at]
    with_ns = hostname[:at]
    if namespace == proxy_domain[:proxy_domain.find(_SVC)]:
        return [name, f"{with_ns}.svc", with_ns]
    return [with_ns, f"{with_ns}.svc"]


def alt_names(hostname: str, proxy_domain: str) -> list[str]:
    """The shorter names under which a proxy in ``proxy_domain`` may reach ``hostname``."""
    if _SVC in proxy_domain:
        suffix = proxy_domain[proxy_domain.find(_SVC):]
        # Only Kubernetes-style names expand: "api.example.com" must never be shortened
        # to something that could collide with a service's short name.
        return _kube_short_names(hostname, proxy_domain) if hostname.endswith(suffix) else []
    # Outside Kubernetes naming, strip the longest DNS suffix the two names share.
    host_parts, domain_parts = hostname.split("."), proxy_domain.split(".")
    shared = 0
    while (shared < min(len(host_parts), len(domain_parts))
           and host_parts[-1 - shared] == domain_parts[-1 - shared]):
        shared += 1
    if shared == 0:
        return []
    unique = host_parts[:len(host_parts) - shared]
    if not unique:
        return []
    out = [".".join(unique)]
    if len(unique) == 2:
        out.append(".".join(unique) + "." + domain_parts[len(domain_parts) - shared])
    return out


def service_domains(
    service: Service, proxy_domain: str, aliases: Iterable[Service] = ()
) -> tuple[list[str], list[str]]:
    """(domains, the subset that are shortened forms) for a service's virtual host.

    ExternalName services that point at ``service`` (``aliases``) answer on the same
    virtual host, since their traffic goes to the same cluster.
    """
    domains: list[str] = []
    short: list[str] = []
    for hostname in (service.hostname, *(a.hostname for a in aliases)):
        domains.append(hostname)
        if not hostname.startswith("*"):
            domains.append(hostname + ".")  # absolute form: "reviews.default.svc.cluster.local."
        names = alt_names(hostname, proxy_domain)
        domains += names
        short += names
    if service.resolution is Resolution.PASSTHROUGH and service.origin is not None and (
        service.origin.kind == "Service"
    ):
        # Headless Kubernetes services are also called per pod: pod-0.reviews.default...
        domains += [f"*.{d}" for d in list(domains)]
    for address in service.vips:
        if address and address != "0.0.0.0" and "/" not in address:
            domains.append(_ip_domain(address))
    return domains, short
