"""The pod annotations injection acts on, checked before anything is rendered.

A bad value is refused with the annotation's name (as Istio refuses it), instead of
becoming an ``istio-iptables`` or agent flag that fails when the pod starts. The capture
annotations are read by the same parsers ``pilotfish iptables`` and the CNI plugin use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pilotfish.discovery.inject.settings import InjectionError
from pilotfish.discovery.inject.template import ANN, READINESS, REROUTE, STATUS_PORT, TRAFFIC
from pilotfish.interceptors.capture_settings import (
    SettingsError,
    parse_cidrs,
    parse_cidrs_or_all,
    parse_interfaces,
    parse_ports,
    parse_ports_or_all,
)

LOG_LEVELS = ("trace", "debug", "info", "warning", "error", "critical", "off")


def _port_or_zero(value: str, what: str) -> Any:
    if not value.strip().isdigit() or int(value) > 65535:
        raise SettingsError(f"{what}: {value!r} is not a port; expected 0 (off) to 65535")
    return int(value)


def _whole(value: str, what: str) -> Any:
    if not value.strip().isdigit() or int(value) > 2**32 - 1:
        raise SettingsError(f"{what}: {value!r} is not a whole number of 0 or more")
    return int(value)


def _mode(value: str, what: str) -> Any:
    if value not in ("REDIRECT", "TPROXY", "NONE"):
        raise SettingsError(f"{what}: {value!r} is not REDIRECT, TPROXY or NONE")
    return value


def _level(value: str, what: str) -> Any:
    if value not in LOG_LEVELS:
        raise SettingsError(f"{what}: {value!r} is not a proxy log level; expected one of "
                            f"{', '.join(LOG_LEVELS)}")
    return value


CHECKS: Mapping[str, Callable[[str, str], Any]] = {
    TRAFFIC + "includeOutboundIPRanges": parse_cidrs_or_all,
    TRAFFIC + "excludeOutboundIPRanges": parse_cidrs,
    TRAFFIC + "includeInboundPorts": parse_ports_or_all,
    TRAFFIC + "excludeInboundPorts": parse_ports,
    TRAFFIC + "includeOutboundPorts": parse_ports,
    TRAFFIC + "excludeOutboundPorts": parse_ports,
    TRAFFIC + "excludeInterfaces": parse_interfaces,
    TRAFFIC + "kubevirtInterfaces": parse_interfaces,
    REROUTE: parse_interfaces,
    STATUS_PORT: _port_or_zero,
    READINESS + "initialDelaySeconds": _whole,
    READINESS + "periodSeconds": _whole,
    READINESS + "failureThreshold": _whole,
    READINESS + "applicationPorts": parse_ports,
    ANN + "interceptionMode": _mode,
    ANN + "logLevel": _level,
}


def check(annotations: Mapping[str, Any]) -> None:
    """Raise ``InjectionError`` naming the first annotation with a bad value."""
    for name, parse in CHECKS.items():
        if name not in annotations:
            continue
        value = annotations[name]
        try:
            parse(str(value), name)
        except SettingsError as exc:
            raise InjectionError(f"annotation {exc}") from None
