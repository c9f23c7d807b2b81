"""HBONE's headers and authorities, sans-IO: what a tunnel's CONNECT carries besides its
bytes (Istio's ``forwarded``, ``baggage`` and ``traceparent``, reference §4.5), and the
``:authority`` a server reads the target from.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable

from pilotfish.core.native.sockets import address_text


def forwarded(client: tuple[str, int], host: str = "") -> str:
    """The ``forwarded`` header a tunnel carries: who the client is (``for="ip:port"``,
    an IPv6 address in brackets) and, through a waypoint, the service it asked for."""
    value = f'for="{address_text(tuple(client))}"'
    return f"{value};host={host}" if host else value


# baggage keys by keyword, in the order ztunnel writes them
_BAGGAGE = {"cluster_id": "k8s.cluster.name", "namespace": "k8s.namespace.name",
            "workload_name": "k8s.{workload_type}.name", "service_name": "service.name",
            "revision": "service.version", "region": "cloud.region",
            "zone": "cloud.availability_zone"}
_WORKLOAD_TYPES = ("deployment", "cronjob", "pod", "job")


def baggage(**facts: str) -> str:
    """Istio's ``baggage`` header from the facts given and not empty: ``cluster_id``,
    ``namespace``, ``workload_name`` (as ``k8s.<workload_type>.name``, ``workload_type``
    one of deployment, cronjob, pod, job; deployment by default), ``service_name``,
    ``revision``, ``region``, ``zone``."""
    kind = facts.pop("workload_type", "") or "deployment"
    unknown = sorted(set(facts) - set(_BAGGAGE))
    if unknown:
        raise TypeError(f"baggage: unknown facts {unknown}; known: "
                        f"{sorted([*_BAGGAGE, 'workload_type'])}")
    if kind not in _WORKLOAD_TYPES:
        raise ValueError(f"baggage: workload_type {kind!r} is not one of {_WORKLOAD_TYPES}")
    return ",".join(f"{name.format(workload_type=kind)}={facts[key]}"
                    for key, name in _BAGGAGE.items() if facts.get(key))


def parse_baggage(values: Iterable[str]) -> dict[str, str]:
    """The facts in ``baggage`` header values, by :func:`baggage`'s keywords (the
    workload's kind as ``workload_type``); empty values and other keys are left out."""
    keys = {name: key for key, name in _BAGGAGE.items()}
    keys |= {f"k8s.{kind}.name": "workload_name" for kind in _WORKLOAD_TYPES}
    facts: dict[str, str] = {}
    for value in values:
        for item in value.split(","):
            name, _, text = item.strip().partition("=")
            if text and name in keys:
                facts[keys[name]] = text
                if keys[name] == "workload_name":
                    facts["workload_type"] = name.split(".")[1]
    return facts


def traceparent() -> str:
    """A W3C ``traceparent`` for one tunnel: random trace and parent IDs, not sampled."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"


def parse_authority(authority: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as (host, port); ValueError says what is
    wrong."""
    host, colon, port = authority.rpartition(":")
    if not colon or not host:
        raise ValueError(f"authority {authority!r}: expected host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"authority {authority!r}: {host!r} is not an IPv6 address"
                             ) from None
    elif ":" in host:
        raise ValueError(f"authority {authority!r}: an IPv6 address goes in brackets")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"authority {authority!r}: port {port!r} is not 1-65535")
    return host, int(port)


