"""What the agent asks of a proxy backend, and the options it hands one.

A backend (group ``pilotfish.proxies``: ``envoy``, ``native``, ``grpc``, ``ztunnel``) turns
``ProxyOptions`` into a bootstrap file, checks that file with the proxy itself, and
says which command line runs the proxy. The agent owns the process: it launches the
command, relays signals, drains the proxy on shutdown and exits with the proxy's status.
(A ``ztunnel`` backend's process is owned by the local node instead, which runs one per node
as a DaemonSet would; its options carry ``ZtunnelOptions``.)
Backends stay free of process management so every proxy shuts down the same way.

Everything else that depends on which proxy runs goes through the backend's
``ProxyAdmin`` for one running proxy: whether it accepted a full configuration and is
serving (readiness), its metrics in Prometheus text with Istio's standard ones, its config
dump in Envoy's shape, a drain, and whatever it needs served beside it. The agent names no
proxy's stat or endpoint.

A backend may say ``plaintext_xds = True`` (an optional class attribute): its proxy speaks
xDS in plaintext to the agent's relay socket and cannot run TLS itself with secrets from
SDS (proxyless gRPC), so with xDS over mTLS the agent's relay originates the mTLS to
discovery, and the certificate is written as files (``output_certs``) for the app.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import anyio
import anyio.abc
import attrs

from pilotfish.core.model import DEFAULT_DOMAIN, is_ip

PROXY_TYPES = ("sidecar", "router", "waypoint")  # what an agent runs (``--type``)
ZTUNNEL_TYPE = "ztunnel"  # ambient mode's node proxy: the node runs it, with no agent
XDS_MODES = ("sotw", "delta")
INTERCEPTION_MODES = ("REDIRECT", "TPROXY", "NONE")
SDS_SOCKET = "SDS"  # in the config dir: the agent's SDS server (cluster sds-grpc)
ALS_SOCKET = "ALS"  # in the config dir: the agent's access-log sink (cluster als-grpc)
XDS_SOCKET = "XDS"  # in the config dir: the agent's xDS relay, with xDS over mTLS
# The workload certificate as files (``--output-certs``, Istio's OUTPUT_CERTS), by Istio's names.
CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE = "cert-chain.pem", "key.pem", "root-cert.pem"
DISCOVERY_SAN = "istiod.istio-system.svc"  # the name discovery's certificate carries
# Static clusters every bootstrap defines, which generated config names (Istio's names).
XDS_CLUSTER = "xds-grpc"  # ADS to discovery (directly, or through the agent's XDS relay)
SDS_CLUSTER = "sds-grpc"  # the agent's SDS socket: secrets ``default`` and ``ROOTCA``
ALS_CLUSTER = "als-grpc"  # the agent's access-log socket


class ProxyError(Exception):
    """A proxy backend cannot do what was asked; the message says what to change."""


class ProxyNotInstalled(ProxyError):
    """The proxy binary is missing; the message names the package that provides it."""


class BootstrapError(ProxyError):
    """The proxy rejected a bootstrap; the message carries the proxy's own error lines."""


def split_host_port(address: str, what: str = "address") -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → ``(host, port)``; ValueError names ``what``."""
    host, sep, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        # A bare IPv6 address would make the port ambiguous.
        raise ValueError(f"{what} {address!r}: write IPv6 addresses as [ADDR]:PORT")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(
            f"{what} {address!r}: expected HOST:PORT with a port from 1 to 65535, "
            "for example pilotfish-discovery.istio-system.svc:15010"
        )
    return host, int(port_text)


def config_dump_object(body: bytes, who: str) -> dict[str, Any]:
    """A proxy's ``/config_dump`` answer as a JSON object; ``ProxyError`` says what is wrong."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ProxyError(f"{who}'s /config_dump is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProxyError(f"{who}'s /config_dump is not a JSON object")
    return data



def _check_choice(choices: tuple[str, ...]) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise ValueError(
                f"{attribute.name}: expected one of {', '.join(choices)}, got {value!r}"
            )
    return check


def _check_locality(instance: Any, attribute: Any, value: str) -> None:
    if value and (value.count("/") > 2 or not value.split("/")[0]):
        raise ValueError(f"--locality {value!r}: expected REGION[/ZONE[/SUBZONE]]")


def _check_ip(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not is_ip(value):
        raise ValueError(f"{attribute.name}: {value!r} is not an IP address")


def _check_port(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 < value < 65536:
        raise ValueError(f"{attribute.name}: expected a port from 1 to 65535, got {value}")


def _check_port_or_off(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value < 65536:
        raise ValueError(f"{attribute.name}: expected a port from 1 to 65535, or 0 for none, "
                         f"got {value}")


def _check_address(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    split_host_port(value, attribute.name)


def _check_positive(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name}: expected a number >= 0, got {value}")


@attrs.frozen
class PodPort:
    """A container port, as Kubernetes declares it (named ports resolve through these)."""

    port: int = attrs.field(validator=_check_port)
    name: str = ""
    protocol: str = "TCP"

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"containerPort": self.port, "protocol": self.protocol}
        if self.name:
            out["name"] = self.name
        return out


def _check_address_or_default(instance: Any, attribute: attrs.Attribute[Any],
                              value: str) -> None:
    if value:
        split_host_port(value, attribute.name)


@attrs.frozen(kw_only=True)
class ZtunnelOptions:
    """What ambient mode's node proxy needs beyond ``ProxyOptions`` (``ProxyOptions.ztunnel``).

    A ztunnel has no agent beside it: it asks the CA itself, with its own token, for its
    certificate and for those of the node's pods, and takes the pods from the CNI node agent
    over ZDS. So the backend that runs one is told where those are.
    """

    zds_socket: Path  # the node agent's ZDS socket, which ztunnel connects to
    root_cert: Path  # PEM roots discovery's certificate chains to
    token_file: Path  # ztunnel's own service-account token, re-read per CA call
    ca_address: str = attrs.field(default="", validator=_check_address_or_default)  # "": 15012
    node_name: str = ""  # the node it serves (node metadata NODE_NAME)
    trust_domain: str = DEFAULT_DOMAIN
    cluster_id: str = "Kubernetes"
    dns_resolv_conf: Path = Path("/etc/resolv.conf")  # where the DNS proxy forwards the rest
    metrics_address: str = attrs.field(default="0.0.0.0:15020", validator=_check_address)
    readiness_address: str = attrs.field(default="0.0.0.0:15021", validator=_check_address)


def _check_proxy_type(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    """An agent's proxy types; ``ztunnel`` only with the ztunnel's own options (and those
    only with it), since no agent stands beside a ztunnel to fill them in."""
    with_ztunnel = instance.ztunnel is not None
    if value == ZTUNNEL_TYPE and with_ztunnel:
        return
    if with_ztunnel:
        raise ValueError(f"ztunnel: options for a ztunnel, but proxy_type is {value!r}")
    if value not in PROXY_TYPES:
        raise ValueError(f"{attribute.name}: expected one of {', '.join(PROXY_TYPES)}, "
                         f"got {value!r}" + (" without ztunnel options"
                                             if value == ZTUNNEL_TYPE else ""))


@attrs.frozen(kw_only=True)
class ProxyOptions:
    """Everything a backend needs to bootstrap one proxy. Built by the agent from flags (by
    the local node for its ztunnel)."""

    name: str  # pod or workload instance name
    namespace: str
    ip: str = attrs.field(validator=_check_ip)
    discovery_address: str = attrs.field(validator=_check_address)  # HOST:PORT of xDS
    config_dir: Path  # where the bootstrap (and later the SDS socket) live
    proxy_type: str = attrs.field(default="sidecar", validator=_check_proxy_type)
    labels: Mapping[str, str] = attrs.field(factory=dict)
    service_account: str = "default"
    xds_mode: str = attrs.field(default="delta", validator=_check_choice(XDS_MODES))
    interception_mode: str = attrs.field(
        default="REDIRECT", validator=_check_choice(INTERCEPTION_MODES)
    )
    domain: str = DEFAULT_DOMAIN  # cluster DNS domain (mesh config ``domain``)
    admin_address: str = attrs.field(default="127.0.0.1", validator=_check_ip)
    admin_port: int = attrs.field(default=15000, validator=_check_port)
    # workers (0: one per CPU; None: the backend's default — Envoy 2, as Istio's sidecars)
    concurrency: int | None = attrs.field(default=None, validator=attrs.validators.optional(
        _check_positive))
    drain_seconds: int = attrs.field(default=45, validator=_check_positive)
    log_level: str = "warning"
    metadata: Mapping[str, Any] = attrs.field(factory=dict)  # extra node metadata
    pod_ports: tuple[PodPort, ...] = ()
    # ``region/zone/subzone`` where the proxy runs (Envoy's node.locality); "" leaves it to
    # the pod's labels, read by discovery.
    locality: str = attrs.field(default="", validator=_check_locality)
    # Where the proxy serves its own Prometheus stats (Istio's 15090); 0: nowhere. The
    # agent's merged scrape reads the admin API directly and needs no such port.
    prometheus_port: int = attrs.field(default=0, validator=_check_port_or_off)
    # xDS over mTLS: the proxy dials the agent's relay (``xds_socket``) and runs TLS to
    # discovery through it with the workload certificate the agent serves over SDS.
    xds_tls: bool = False
    discovery_san: str = DISCOVERY_SAN  # checked in discovery's certificate, sent as SNI
    # Where the agent also writes the workload certificate as PEM files (Istio's
    # OUTPUT_CERTS); None: nowhere, the key stays in memory.
    output_certs: Path | None = None
    # A ztunnel's own settings (proxy type ``ztunnel``); None for the proxies agents run.
    ztunnel: ZtunnelOptions | None = None

    @property
    def node_id(self) -> str:
        """Istio's four-part node id, which discovery parses back (``core/proxy.py``)."""
        return (
            f"{self.proxy_type}~{self.ip}~{self.name}.{self.namespace}"
            f"~{self.namespace}.svc.{self.domain}"
        )

    @property
    def sds_socket(self) -> Path:
        return self.config_dir / SDS_SOCKET

    @property
    def als_socket(self) -> Path:
        return self.config_dir / ALS_SOCKET

    @property
    def xds_socket(self) -> Path:
        return self.config_dir / XDS_SOCKET

    @property
    def admin_url(self) -> str:
        host = f"[{self.admin_address}]" if ":" in self.admin_address else self.admin_address
        return f"http://{host}:{self.admin_port}"

    @property
    def pod_ports_json(self) -> str:
        """POD_PORTS as Istio sends it: a JSON string, not a list (metadata is flat)."""
        return json.dumps([p.as_json() for p in self.pod_ports], separators=(",", ":"))


@attrs.frozen
class ProxyStatus:
    """What a running proxy says of itself, as readiness needs it (``ProxyAdmin.status``)."""

    serving: str = ""  # why it is not serving traffic now (starting, draining); "": it is
    # Why it holds no accepted full configuration from discovery yet; "": it holds one.
    # Only asked for (``full``) until the proxy is first ready.
    config: str = ""
    secrets: frozenset[str] = frozenset()  # the SDS secrets it holds (``full`` only)


class NothingBeside:
    """``ProxyAdmin.serve`` for a proxy that needs nothing served beside it (it counts its
    own metrics, or is the app itself)."""

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]
                    = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await anyio.sleep_forever()


@runtime_checkable
class ProxyAdmin(Protocol):
    """The agent's line to one running proxy (``ProxyBackend.admin``). Methods that ask the
    proxy raise ``ProxyError`` when it does not answer, with what was asked and why."""

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]
                    = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve what the proxy needs beside it while it runs (Envoy: the access-log
        service behind Istio's metrics); report started once listening, run until
        cancelled. Raise ``ProxyError`` if it cannot start."""
        ...

    async def status(self, full: bool) -> ProxyStatus:
        """Whether it is serving; with ``full``, also its configuration and secrets."""
        ...

    async def prometheus(self, query: str = "") -> str:
        """Its metrics in Prometheus text, Istio's standard ones (``istio_requests_total``
        ...) included. ``query`` is the scraper's query string, passed on."""
        ...

    async def config_dump(self) -> dict[str, Any]:
        """What it runs, as Envoy's ``/config_dump`` JSON (``pilotfish proxy-config``
        reads that shape); a ztunnel answers in ztunnel's own shape (workloads, services,
        policies, certificates: what ``pilotfish ztunnel-config`` reads)."""
        ...

    async def drain(self) -> None:
        """Start a graceful drain (inbound listeners for sidecars, all for routers) and
        return once the proxy accepted the request."""
        ...


@runtime_checkable
class ProxyBackend(Protocol):
    """A proxy the agent can run. Returned by the ``pilotfish_proxy_backend`` hook."""

    @property
    def name(self) -> str:
        """The name ``pilotfish agent --proxy`` selects (the entry-point name)."""
        ...

    def bootstrap(self, options: ProxyOptions) -> dict[str, Any]:
        """The bootstrap as plain data (JSON-ready); no IO."""
        ...

    def write_bootstrap(self, options: ProxyOptions) -> Path:
        """Write the bootstrap under ``options.config_dir``; return the file's path."""
        ...

    def check(self, path: Path) -> None:
        """Have the proxy validate ``path``; raise BootstrapError with its error lines,
        or ProxyNotInstalled if the proxy binary cannot be found."""
        ...

    def command(self, options: ProxyOptions, path: Path) -> list[str] | None:
        """The argv that runs the proxy on ``path`` in the foreground; None when there is
        no process to run (proxyless gRPC: the app's own gRPC library is the proxy, and
        the agent serves it a bootstrap, certificates and xDS until told to stop)."""
        ...

    def admin(self, options: ProxyOptions) -> ProxyAdmin:
        """The handle the agent asks about the proxy it runs with ``options``."""
        ...
