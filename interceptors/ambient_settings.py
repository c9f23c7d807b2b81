"""What an ambient pod's in-pod rules depend on: the node's settings and the pod's overrides.

Sans-IO. Istio's CNI node agent writes the same rules into every ambient pod on a node,
except where the pod's annotations say otherwise; the two inputs are kept apart here as
they are there:

- ``AmbientSettings`` — node-wide, fixed when the agent starts: IPv6 on or off, DNS
  capture on or off, and the link-local addresses node-local probes are SNATed to (the
  in-pod rules let traffic from those addresses bypass ztunnel). Defaults are Istio's
  (``ambient.ipv6`` and ``ambient.dnsCapture`` both on in the istio-cni chart).
- ``PodOverrides`` — per pod, from its annotations: ingress mode
  (``ambient.istio.io/bypass-inbound-capture``: no inbound capture), DNS capture on or off
  (``ambient.istio.io/dns-capture``, else the node's setting), and virtual interfaces
  whose inbound TCP is treated as outbound (``istio.io/reroute-virtual-interfaces``).

A boolean annotation that is not a Go boolean is ignored, as Istio ignores it (with a
warning there); a bad interface name is an error naming the annotation.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import attrs

from pilotfish.interceptors.capture_settings import (
    SettingsError,
    parse_bool,
    parse_interfaces,
)

BYPASS_INBOUND = "ambient.istio.io/bypass-inbound-capture"
DNS_CAPTURE = "ambient.istio.io/dns-capture"
REROUTE_VIRTUAL_INTERFACES = "istio.io/reroute-virtual-interfaces"

PROBE_SNAT_V4 = "169.254.7.127"
PROBE_SNAT_V6 = "fd16:9254:7127:1337:ffff:ffff:ffff:ffff"


def _address(version: int) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[str], value: str) -> None:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            address = None
        if address is None or address.version != version:
            raise SettingsError(f"{attribute.name}: {value!r} is not an IPv{version} address")
    return check


def _canonical(value: str) -> str:
    # Istio prints the parsed address (netip.Addr.String()): compressed, lower case.
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return value  # the validator names the setting and the value


@attrs.frozen(kw_only=True)
class AmbientSettings:
    """The node agent's settings that shape every ambient pod's rules."""

    enable_ipv6: bool = attrs.field(default=True, converter=bool)
    redirect_dns: bool = attrs.field(default=True, converter=bool)
    host_probe_snat_v4: str = attrs.field(default=PROBE_SNAT_V4, converter=_canonical,
                                          validator=_address(4))
    host_probe_snat_v6: str = attrs.field(default=PROBE_SNAT_V6, converter=_canonical,
                                          validator=_address(6))


@attrs.frozen(kw_only=True)
class PodOverrides:
    """One pod's departures from the node's settings."""

    ingress_mode: bool = attrs.field(default=False, converter=bool)
    dns_capture: bool | None = None  # None: the node's redirect_dns decides
    virtual_interfaces: tuple[str, ...] = attrs.field(
        default=(), converter=lambda v: parse_interfaces(v, "virtual_interfaces"))

    def redirect_dns(self, settings: AmbientSettings) -> bool:
        """Whether this pod's DNS goes to ztunnel: its annotation, else the node's."""
        return settings.redirect_dns if self.dns_capture is None else self.dns_capture


def pod_overrides(annotations: Mapping[str, str]) -> PodOverrides:
    """A pod's overrides from its annotations, read as Istio's node agent reads them."""
    ingress = parse_bool(annotations.get(BYPASS_INBOUND, "")) or False
    dns = parse_bool(annotations[DNS_CAPTURE]) if DNS_CAPTURE in annotations else None
    nics = parse_interfaces(annotations.get(REROUTE_VIRTUAL_INTERFACES),
                            REROUTE_VIRTUAL_INTERFACES)
    return PodOverrides(ingress_mode=ingress, dns_capture=dns, virtual_interfaces=nics)
