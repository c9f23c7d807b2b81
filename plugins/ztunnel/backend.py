"""The ``ztunnel`` proxy backend: ambient mode's node proxy, ``pilotfish ztunnel``.

Registered through the entry point ``ztunnel`` in group ``pilotfish.proxies``; the local node
runs the backend its mesh config names (``ztunnel:``, default this one), so another ztunnel
is another backend. No agent sits beside a ztunnel (it gets its certificates from the CA
itself), so its "bootstrap" is its settings as data — discovery, CA, root certificate,
token, ZDS socket, names, trust domain, addresses — written as ``ztunnel.json`` in the
config dir for the record, and the command passes the same settings as
``pilotfish ztunnel``'s flags. Its interpreter runs bytecode without docstrings, asserts
or column tables, compiled into the config dir's ``pycache`` as the bootstrap is written
(``bytecode.py``). The admin talks to Istio's ztunnel ports: ``/config_dump`` on
15000, ``/stats/prometheus`` on 15020, ``/healthz/ready`` on 15021.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pilotfish.core import http_client
from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.model import is_ip
from pilotfish.core.proxy_backend import (
    ZTUNNEL_TYPE,
    BootstrapError,
    NothingBeside,
    ProxyError,
    ProxyOptions,
    ProxyStatus,
    ZtunnelOptions,
    config_dump_object,
    split_host_port,
)
from pilotfish.core.security.files import write_atomic
from pilotfish.plugins.ztunnel import bytecode

BOOTSTRAP_FILE = "ztunnel.json"
PROGRAM = ["-m", "pilotfish.cli", "ztunnel"]  # after the interpreter (bytecode.interpreter)
PYCACHE = "pycache"  # in the config dir: ztunnel's bytecode
ADMIN_TIMEOUT = 5.0
# Each setting and the ``pilotfish ztunnel`` flag that takes it, in the order passed.
FLAGS = {
    "discovery": "--discovery", "caAddress": "--ca-address", "rootCert": "--root-cert",
    "tokenFile": "--token-file", "zdsSocket": "--zds-socket", "node": "--node", "ip": "--ip",
    "name": "--name", "namespace": "--namespace", "serviceAccount": "--service-account",
    "trustDomain": "--trust-domain", "clusterId": "--cluster-id",
    "clusterDomain": "--cluster-domain", "dnsResolvConf": "--dns-resolv-conf",
    "adminAddress": "--admin-address", "metricsAddress": "--metrics-address",
    "readinessAddress": "--readiness-address",
}
REQUIRED = ("discovery", "rootCert", "tokenFile", "zdsSocket", "ip", "name", "namespace",
            "adminAddress", "metricsAddress", "readinessAddress")
ADDRESSES = ("discovery", "caAddress", "adminAddress", "metricsAddress", "readinessAddress")
FILES = ("rootCert", "tokenFile")  # read as ztunnel starts: missing ones stop it at once


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def local_url(address: str) -> str:
    """``http://`` for a listening address, a wildcard one asked on loopback."""
    host, port = split_host_port(address)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{_host_port(host, port)}"


def ztunnel_options(options: ProxyOptions) -> ZtunnelOptions:
    if options.ztunnel is None:  # ProxyOptions holds these only with proxy type ztunnel
        raise ProxyError(f"{options.name}.{options.namespace}: the ztunnel backend runs "
                         f"proxy type {ZTUNNEL_TYPE!r} with ztunnel options, got proxy type "
                         f"{options.proxy_type!r} and none")
    return options.ztunnel


def bootstrap(options: ProxyOptions) -> dict[str, Any]:
    """ztunnel's settings, one key per ``pilotfish ztunnel`` flag (``FLAGS``)."""
    own = ztunnel_options(options)
    data: dict[str, Any] = {
        "discovery": options.discovery_address,
        "rootCert": str(own.root_cert), "tokenFile": str(own.token_file),
        "zdsSocket": str(own.zds_socket), "node": own.node_name, "ip": options.ip,
        "name": options.name, "namespace": options.namespace,
        "serviceAccount": options.service_account, "trustDomain": own.trust_domain,
        "clusterId": own.cluster_id, "clusterDomain": options.domain,
        "dnsResolvConf": str(own.dns_resolv_conf),
        "adminAddress": _host_port(options.admin_address, options.admin_port),
        "metricsAddress": own.metrics_address, "readinessAddress": own.readiness_address,
    }
    if own.ca_address:  # else ztunnel's own default: the discovery host, port 15012
        data["caAddress"] = own.ca_address
    return data


def flags(settings: dict[str, Any]) -> list[str]:
    """The settings as ``pilotfish ztunnel`` flags, in ``FLAGS`` order."""
    out = []
    for key, flag in FLAGS.items():
        if key in settings:
            out += [flag, str(settings[key])]
    return out


def problems(settings: Any) -> list[str]:
    """What is wrong with a settings object, each naming the field; [] if nothing."""
    if not isinstance(settings, dict):
        return [f"expected a JSON object of ztunnel settings, got {type(settings).__name__}"]
    found = [f"{key}: unknown setting; expected one of {', '.join(FLAGS)}"
             for key in settings if key not in FLAGS]
    found += [f"{key}: required" for key in REQUIRED if key not in settings]
    for key, value in settings.items():
        if key in FLAGS and not isinstance(value, str):
            found.append(f"{key}: expected a string, got {value!r}")
    strings = {k: v for k, v in settings.items() if k in FLAGS and isinstance(v, str)}
    for key in (k for k in REQUIRED if k in strings and not strings[k]):
        found.append(f"{key}: empty")
    for key in (k for k in ADDRESSES if strings.get(k)):
        try:
            split_host_port(strings[key], key)
        except ValueError as exc:
            found.append(str(exc))
    if strings.get("ip") and not is_ip(strings["ip"]):
        found.append(f"ip: {strings['ip']!r} is not an IP address")
    for key in (k for k in FILES if strings.get(k)):
        if not Path(strings[key]).is_file():
            found.append(f"{key}: {strings[key]}: no such file")
    return found


class ZtunnelAdmin(NothingBeside):
    """One running ztunnel, asked on its admin (15000), metrics (15020) and readiness
    (15021) ports."""

    def __init__(self, admin_url: str, metrics_url: str, readiness_url: str) -> None:
        self.admin_url, self.metrics_url = admin_url, metrics_url
        self.readiness_url = readiness_url

    async def request(self, url: str, method: str = "GET") -> http_client.HttpReply:
        try:
            return await http_client.request(url, method, timeout=ADMIN_TIMEOUT)
        except http_client.HttpClientError as exc:
            raise ProxyError(f"ztunnel: {exc}") from exc

    async def status(self, full: bool) -> ProxyStatus:
        """Ready once its Workload Discovery is synced (its own ``/healthz/ready``); a 503
        says why not."""
        url = f"{self.readiness_url}/healthz/ready"
        reply = await self.request(url)
        if reply.status == 200:
            return ProxyStatus()
        if reply.status == 503:
            why = reply.text.strip().removeprefix("not ready:").strip()
            return ProxyStatus(config=why or "not ready")
        raise ProxyError(f"ztunnel: {url}: HTTP {reply.status}: {reply.text.strip()}")

    async def prometheus(self, query: str = "") -> str:
        url = f"{self.metrics_url}/stats/prometheus" + (f"?{query}" if query else "")
        reply = await self.request(url)
        if reply.status != 200:
            raise ProxyError(f"ztunnel: {url}: HTTP {reply.status}")
        return reply.text

    async def config_dump(self) -> dict[str, Any]:
        url = f"{self.admin_url}/config_dump"
        reply = await self.request(url)
        if reply.status != 200:
            raise ProxyError(f"ztunnel: {url}: HTTP {reply.status}: {reply.text.strip()}")
        return config_dump_object(reply.body, "ztunnel")

    async def drain(self) -> None:
        """Nothing to ask: like Istio's, a ztunnel drains its pods' connections when it
        is stopped (SIGTERM), and has no drain that leaves it running."""
        return None


class ZtunnelBackend:
    """Settings as data, ``pilotfish ztunnel`` as the process, its three ports as admin."""

    name = "ztunnel"

    def bootstrap(self, options: ProxyOptions) -> dict[str, Any]:
        return bootstrap(options)

    def write_bootstrap(self, options: ProxyOptions) -> Path:
        data = self.bootstrap(options)
        options.config_dir.mkdir(parents=True, exist_ok=True)
        path = options.config_dir / BOOTSTRAP_FILE
        write_atomic(path, json.dumps(data, indent=2) + "\n", 0o644)
        bytecode.fill(options.config_dir / PYCACHE)
        return path

    def check(self, path: Path) -> None:
        """Every setting ``pilotfish ztunnel`` needs is there and well formed, and the
        files it reads at start exist; ``BootstrapError`` names each field that is not."""
        try:
            settings = json.loads(path.read_text())
        except OSError as exc:
            raise BootstrapError(f"{path}: cannot read it: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise BootstrapError(f"{path}: not JSON: {exc}") from None
        found = problems(settings)
        if found:
            raise BootstrapError("\n".join(f"{path}: {problem}" for problem in found))

    def command(self, options: ProxyOptions, path: Path) -> list[str]:
        return [*bytecode.interpreter(path.parent / PYCACHE), *PROGRAM,
                *flags(self.bootstrap(options))]

    def admin(self, options: ProxyOptions) -> ZtunnelAdmin:
        own = ztunnel_options(options)
        return ZtunnelAdmin(local_url(_host_port(options.admin_address, options.admin_port)),
                            local_url(own.metrics_address), local_url(own.readiness_address))


@hookimpl
def pilotfish_proxy_backend() -> ZtunnelBackend:
    return ZtunnelBackend()
