"""A pod's facts → its capture settings, the way Istio derives them from annotations.

Sans-IO. ``settings_for`` applies Istio's rules: which pods are skipped, which annotation
overrides which istio-iptables setting, and the defaults. Two flavours, as in Istio:

- ``"cni"`` (Istio's CNI plugin): inbound ports 15020, 15021 and 15090 are always
  excluded after the pod's own exclusions; outbound port 15020 is excluded unless the pod
  names its own outbound exclusions.
- ``"init"`` (the injector's istio-init arguments): inbound ``-d 15090,15021,15020`` then
  the pod's exclusions; no outbound port excluded unless the pod asks.

Both run the proxy as 1337 unless its container says otherwise (0 counts as unset), and
capture DNS to the agent when the proxy has ``ISTIO_META_DNS_CAPTURE=true`` — all of
port 53, as the CNI does (pilotfish pods have no resolv.conf servers to single out).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import yaml

from pilotfish.core.interceptor import PodFacts
from pilotfish.interceptors.capture_settings import (
    REDIRECT,
    TPROXY,
    CaptureSettings,
    SettingsError,
    parse_bool,
    parse_cidrs,
    parse_cidrs_or_all,
    parse_interfaces,
    parse_ports,
    parse_ports_or_all,
)

INJECT = "sidecar.istio.io/inject"
INTERCEPTION_MODE = "sidecar.istio.io/interceptionMode"
STATUS_PORT = "status.sidecar.istio.io/port"
PROXY_CONFIG = "proxy.istio.io/config"
TRAFFIC = "traffic.sidecar.istio.io/"
REROUTE = "istio.io/reroute-virtual-interfaces"
KUBEVIRT = TRAFFIC + "kubevirtInterfaces"  # deprecated name of REROUTE
ALWAYS_EXCLUDED_INBOUND = "15020,15021,15090"  # agent status, proxy health, proxy metrics
INIT_EXCLUDED_INBOUND = "15090,15021,15020"  # the same ports, in the injector's order
DEFAULT_PROXY_ID = "1337"


class PodError(ValueError):
    """The pod's facts or annotations are invalid; the message names the field."""


def skip_reason(pod: PodFacts) -> str | None:
    """Why the pod gets no capture (Istio CNI's checks), or ``None`` if it gets capture."""
    if not pod.sidecar:
        return "no sidecar"
    inject = pod.labels.get(INJECT, pod.annotations.get(INJECT, ""))  # the label wins
    if parse_bool(inject) is False:
        return f"{INJECT}={inject}"
    if parse_bool(proxy_env(pod).get("DISABLE_ENVOY", "")):
        return "DISABLE_ENVOY is set on the proxy"
    if _interception_mode(pod) == "NONE":
        return f"{INTERCEPTION_MODE}=NONE"
    return None


def settings_for(pod: PodFacts, environ: Mapping[str, str] = {}, *,
                 flavour: str = "cni") -> CaptureSettings | None:
    """The pod's capture settings, or ``None`` when ``skip_reason`` says it is skipped.

    ``environ`` is the plugin's own environment: Istio reads the loopback CIDR and the
    owner-group filters from it, not from the pod.
    """
    if skip_reason(pod) is not None:
        return None
    a = pod.annotations
    env = proxy_env(pod)

    def annotation(name: str, default: str, parse: Any) -> Any:
        value = a.get(name, default)
        try:
            return parse(value, name)
        except SettingsError as exc:
            raise PodError(f"pod {pod.key}: annotation {exc}") from None

    mode = _interception_mode(pod)
    if mode not in (REDIRECT, TPROXY):
        raise PodError(f"pod {pod.key}: annotation {INTERCEPTION_MODE}: {mode!r} is not "
                       "REDIRECT, TPROXY or NONE")
    annotation(STATUS_PORT, "", parse_ports)  # only checked, as Istio does
    # The agent's and proxy's own ports always stay reachable, whatever the pod asks.
    if flavour == "cni":
        exclude_inbound = annotation(TRAFFIC + "excludeInboundPorts", "15020", parse_ports)
        exclude_inbound = tuple(dict.fromkeys(exclude_inbound + parse_ports(
            ALWAYS_EXCLUDED_INBOUND, "")))
        exclude_outbound_default = "15020"
    elif flavour == "init":
        exclude_inbound = parse_ports(INIT_EXCLUDED_INBOUND, "") + annotation(
            TRAFFIC + "excludeInboundPorts", "", parse_ports)
        exclude_outbound_default = ""
    else:
        raise ValueError(f"flavour: expected 'cni' or 'init', got {flavour!r}")
    dual_stack = bool(parse_bool(env.get("ISTIO_DUAL_STACK", "")))
    try:
        return CaptureSettings(
            proxy_port=15001, inbound_capture_port=15006,
            proxy_uid=_id(pod.run_as_user), proxy_gid=_id(pod.run_as_group),
            inbound_interception_mode=mode,
            outbound_ip_ranges_include=annotation(TRAFFIC + "includeOutboundIPRanges", "*",
                                                  parse_cidrs_or_all),
            outbound_ip_ranges_exclude=annotation(TRAFFIC + "excludeOutboundIPRanges", "",
                                                  parse_cidrs),
            inbound_ports_include=annotation(TRAFFIC + "includeInboundPorts", "*",
                                             parse_ports_or_all),
            inbound_ports_exclude=exclude_inbound,
            outbound_ports_include=annotation(TRAFFIC + "includeOutboundPorts", "",
                                              parse_ports),
            outbound_ports_exclude=annotation(TRAFFIC + "excludeOutboundPorts",
                                              exclude_outbound_default, parse_ports),
            exclude_interfaces=annotation(TRAFFIC + "excludeInterfaces", "", parse_interfaces),
            reroute_virtual_interfaces=annotation(REROUTE if REROUTE in a else KUBEVIRT, "",
                                                  parse_interfaces),
            redirect_dns=bool(parse_bool(env.get("ISTIO_META_DNS_CAPTURE", ""))),
            capture_all_dns=bool(parse_bool(env.get("ISTIO_META_DNS_CAPTURE", ""))),
            drop_invalid=bool(parse_bool(env.get("INVALID_DROP", ""))),
            enable_ipv6=_ipv6(pod.ips, dual_stack),
            host_ipv4_loopback_cidr=environ.get("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",
                                                "127.0.0.1/32"),
            owner_groups_include=environ.get("ISTIO_OUTBOUND_OWNER_GROUPS", "*"),
            owner_groups_exclude=environ.get("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", ""),
        )
    except SettingsError as exc:
        raise PodError(f"pod {pod.key}: {exc}") from None


def proxy_env(pod: PodFacts) -> dict[str, str]:
    """The proxy's environment: ``proxyMetadata`` from ``proxy.istio.io/config`` (what the
    injector would have copied into the container), overridden by ``proxyEnv``."""
    return {**_proxy_config(pod).get("proxyMetadata", {}), **pod.proxy_env}


def _proxy_config(pod: PodFacts) -> dict[str, Any]:
    text = pod.annotations.get(PROXY_CONFIG)
    if not text:
        return {}
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PodError(f"pod {pod.key}: annotation {PROXY_CONFIG}: not YAML or JSON: "
                       f"{exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("proxyMetadata", {}), dict):
        raise PodError(f"pod {pod.key}: annotation {PROXY_CONFIG}: expected a ProxyConfig "
                       "object (proxyMetadata must map names to values)")
    config["proxyMetadata"] = {str(k): str(v) for k, v in config.get("proxyMetadata",
                                                                        {}).items()}
    return config


def _interception_mode(pod: PodFacts) -> str:
    mode = pod.annotations.get(INTERCEPTION_MODE)
    if mode is None:
        mode = str(_proxy_config(pod).get("interceptionMode") or REDIRECT)
    return mode.strip().upper()


def _id(value: int | None) -> str:
    return str(value) if value else DEFAULT_PROXY_ID  # absent or 0 (root): Istio uses 1337


def _ipv6(ips: tuple[str, ...], dual_stack: bool) -> bool:
    # Istio looks at the pod's first usable address (any IPv6 one when dual-stack).
    families = [ipaddress.ip_interface(ip).version for ip in ips]
    if dual_stack:
        return 6 in families
    return bool(families) and families[0] == 6
