"""What to capture: istio-iptables's settings as one frozen value, parsed and checked.

``CaptureSettings`` holds every input the rule planner reads, named after istio-iptables's
flags (``proxy_port`` is ``-p``, ``inbound_ports_include`` is ``-b``...). Lists may be given
as Istio writes them — comma-separated text such as ``"15090,15021,15020"`` — or as
sequences; either way they are split, checked and stored as tuples, so a bad value fails
here with the setting's name rather than later inside ``iptables-restore``.

``"*"`` (``ALL``) means "every port" / "every address" where istio-iptables allows it; an
empty value means "none" (no inbound capture for ``-b ""``, no outbound for ``-i ""``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any, Literal

import attrs

ALL: Literal["*"] = "*"
REDIRECT = "REDIRECT"
TPROXY = "TPROXY"
MAX_OWNER_GROUPS_INCLUDE = 64  # Istio's limit: all groups go into one rule's matches

Ports = tuple[int, ...]
PortsOrAll = Literal["*"] | tuple[int, ...]
CidrsOrAll = Literal["*"] | tuple[str, ...]

# uid/gid/group names: what iptables' owner match accepts (numbers or account names).
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?\Z")
_IFACE = re.compile(r"^[^\s/,:]{1,15}\Z")  # Linux IFNAMSIZ-1, no separators


class SettingsError(ValueError):
    """A capture setting has a bad value; the message names the setting and the value."""


def split_list(value: str | Iterable[Any] | None) -> list[str]:
    """Istio's list splitting: commas, surrounding blanks and empty items ignored."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return [item.strip() for item in items if item.strip()]


def parse_bool(text: str) -> bool | None:
    """Go's ``strconv.ParseBool``, which Istio reads its boolean annotations and variables
    with: ``None`` for anything else."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def parse_ports(value: str | Iterable[Any] | None, what: str) -> Ports:
    ports = []
    for item in split_list(value):
        if not item.isdigit() or not 0 < int(item) < 65536:
            raise SettingsError(
                f"{what}: {item!r} is not a port; expected comma-separated ports from 1 to 65535"
            )
        ports.append(int(item))
    return tuple(ports)


def parse_ports_or_all(value: str | Iterable[Any] | None, what: str) -> PortsOrAll:
    if isinstance(value, str) and value.strip() == ALL:
        return ALL
    return parse_ports(value, what)


def parse_cidrs(value: str | Iterable[Any] | None, what: str) -> tuple[str, ...]:
    out = []
    for item in split_list(value):
        if item == ALL:
            raise SettingsError(f"{what}: '*' is not allowed here; list CIDRs such as 10.0.0.0/8")
        try:
            # ip_interface keeps host bits ("127.0.0.1/8"), as Istio's prefix parser does.
            out.append(str(ipaddress.ip_interface(item)))
        except ValueError:
            raise SettingsError(
                f"{what}: {item!r} is not an IP range; expected CIDRs such as 10.0.0.0/8 "
                "or 2001:db8::/32"
            ) from None
    return tuple(out)


def parse_cidrs_or_all(value: str | Iterable[Any] | None, what: str) -> CidrsOrAll:
    if isinstance(value, str) and value.strip() == ALL:
        return ALL
    return parse_cidrs(value, what)


def parse_names(value: str | Iterable[Any] | None, what: str) -> tuple[str, ...]:
    names = split_list(value)
    for name in names:
        if not _NAME.match(name):
            raise SettingsError(f"{what}: {name!r} is not a user/group id or name")
    return tuple(names)


def parse_interfaces(value: str | Iterable[Any] | None, what: str) -> tuple[str, ...]:
    names = split_list(value)
    for name in names:
        if not _IFACE.match(name):
            raise SettingsError(f"{what}: {name!r} is not a network interface name")
    return tuple(names)


def parse_addresses(value: str | Iterable[Any] | None, what: str, version: int) -> tuple[str, ...]:
    names = split_list(value)
    for name in names:
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            raise SettingsError(f"{what}: {name!r} is not an IP address") from None
        if address.version != version:
            raise SettingsError(f"{what}: {name!r} is not an IPv{version} address")
    # Kept as written: Istio appends /32 or /128 to the text it read from resolv.conf.
    return tuple(names)


def _check_port(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 < value < 65536:
        raise SettingsError(f"{attribute.name}: expected a port from 1 to 65535, got {value}")


def _check_mode(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in (REDIRECT, TPROXY):
        raise SettingsError(f"{attribute.name}: expected REDIRECT or TPROXY, got {value!r}")


def _check_number(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.isdigit():
        raise SettingsError(f"{attribute.name}: expected a number, got {value!r}")


def _check_loopback(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    try:
        network = ipaddress.ip_interface(value)
    except ValueError:
        network = None
    if network is None or network.version != 4 or not network.ip.is_loopback \
            or network.network.prefixlen < 8:
        raise SettingsError(
            f"{attribute.name}: {value!r} must be an IPv4 loopback CIDR within 127.0.0.0/8, "
            "such as 127.0.0.1/32"
        )


def _mode(value: str | None) -> str:
    return (value or REDIRECT).strip().upper()  # Istio treats an empty -m as REDIRECT


@attrs.frozen(kw_only=True)
class CaptureSettings:
    """istio-iptables's settings; defaults are the tool's own (no inbound, no outbound)."""

    proxy_port: int = attrs.field(default=15001, converter=int, validator=_check_port)
    inbound_capture_port: int = attrs.field(default=15006, converter=int,
                                            validator=_check_port)
    inbound_tunnel_port: int = attrs.field(default=15008, converter=int, validator=_check_port)
    proxy_uid: tuple[str, ...] = attrs.field(default="1337",
                                             converter=lambda v: parse_names(v, "proxy_uid"))
    proxy_gid: tuple[str, ...] = attrs.field(
        default=attrs.Factory(lambda self: self.proxy_uid, takes_self=True),
        converter=lambda v: parse_names(v, "proxy_gid"),
    )
    inbound_interception_mode: str = attrs.field(default=REDIRECT, converter=_mode,
                                                 validator=_check_mode)
    inbound_tproxy_mark: str = attrs.field(default="1337", converter=str,
                                           validator=_check_number)
    inbound_tproxy_route_table: str = attrs.field(default="133", converter=str,
                                                  validator=_check_number)
    inbound_ports_include: PortsOrAll = attrs.field(
        default=(), converter=lambda v: parse_ports_or_all(v, "inbound_ports_include"))
    inbound_ports_exclude: Ports = attrs.field(
        default=(), converter=lambda v: parse_ports(v, "inbound_ports_exclude"))
    outbound_ports_include: Ports = attrs.field(
        default=(), converter=lambda v: parse_ports(v, "outbound_ports_include"))
    outbound_ports_exclude: Ports = attrs.field(
        default=(), converter=lambda v: parse_ports(v, "outbound_ports_exclude"))
    outbound_ip_ranges_include: CidrsOrAll = attrs.field(
        default=(), converter=lambda v: parse_cidrs_or_all(v, "outbound_ip_ranges_include"))
    outbound_ip_ranges_exclude: tuple[str, ...] = attrs.field(
        default=(), converter=lambda v: parse_cidrs(v, "outbound_ip_ranges_exclude"))
    reroute_virtual_interfaces: tuple[str, ...] = attrs.field(
        default=(), converter=lambda v: parse_interfaces(v, "reroute_virtual_interfaces"))
    exclude_interfaces: tuple[str, ...] = attrs.field(
        default=(), converter=lambda v: parse_interfaces(v, "exclude_interfaces"))
    owner_groups_include: Literal["*"] | tuple[str, ...] = attrs.field(
        default=ALL, converter=lambda v: ALL if isinstance(v, str) and v.strip() == ALL
        else parse_names(v, "owner_groups_include"))
    owner_groups_exclude: tuple[str, ...] = attrs.field(
        default=(), converter=lambda v: parse_names(v, "owner_groups_exclude"))
    redirect_dns: bool = attrs.field(default=False, converter=bool)
    capture_all_dns: bool = attrs.field(default=False, converter=bool)
    dns_servers_v4: tuple[str, ...] = attrs.field(
        default=(), converter=lambda v: parse_addresses(v, "dns_servers_v4", 4))
    dns_servers_v6: tuple[str, ...] = attrs.field(
        default=(), converter=lambda v: parse_addresses(v, "dns_servers_v6", 6))
    enable_ipv6: bool = attrs.field(default=False, converter=bool)
    drop_invalid: bool = attrs.field(default=False, converter=bool)
    host_ipv4_loopback_cidr: str = attrs.field(default="127.0.0.1/32", converter=str,
                                               validator=_check_loopback)

    def __attrs_post_init__(self) -> None:
        include = self.owner_groups_include
        if include != ALL and len(include) > MAX_OWNER_GROUPS_INCLUDE:
            raise SettingsError(
                f"owner_groups_include: at most {MAX_OWNER_GROUPS_INCLUDE} groups can be "
                f"captured (they form one rule), got {len(include)}"
            )

    @property
    def tproxy(self) -> bool:
        return self.inbound_interception_mode == TPROXY

    @property
    def dns_capture(self) -> bool:
        """DNS capture in effect: asked for, and with servers to capture or all of port 53."""
        return self.redirect_dns and (
            self.capture_all_dns or bool(self.dns_servers_v4) or bool(self.dns_servers_v6)
        )

    @classmethod
    def sidecar(cls, **changes: Any) -> CaptureSettings:
        """The injected sidecar's capture (istio-init's arguments), with ``changes``."""
        base: dict[str, Any] = dict(
            proxy_port=15001, inbound_capture_port=15006, proxy_uid="1337",
            inbound_interception_mode=REDIRECT, outbound_ip_ranges_include=ALL,
            inbound_ports_include=ALL, inbound_ports_exclude="15090,15021,15020",
        )
        return cls(**{**base, **changes})
