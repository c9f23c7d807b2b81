"""The ``grpc`` proxy backend: proxyless gRPC with an agent and no proxy.

Registered through the entry point ``grpc`` in group ``pilotfish.proxies``; it is what
pilot-agent does with ``DISABLE_ENVOY=true`` and ``ISTIO_META_GENERATOR=grpc`` (Istio's
``grpc-agent`` injection template). The app's own gRPC library is the proxy: it reads the
bootstrap this backend writes (``CONFIG_DIR/grpc-bootstrap.json``, the app's
``GRPC_XDS_BOOTSTRAP``) and talks xDS to discovery itself, through the agent:

- ``xds_servers``: the agent's relay socket (``unix://CONFIG_DIR/XDS``) with insecure
  credentials, as pilot-agent's xDS proxy socket; with xDS over mTLS the relay runs the mTLS
  to discovery with the workload certificate (``plaintext_xds``). Without it the bootstrap
  names discovery's plaintext address directly;
- ``node``: Istio's node id and the agent's metadata, with ``GENERATOR: grpc`` so discovery
  answers with its ``grpc`` generators;
- ``certificate_providers.default``: gRPC's ``file_watcher`` on the files the agent writes
  (``--output-certs``), for apps that use xDS credentials;
- ``server_listener_resource_name_template``: Istio's, for xDS-enabled gRPC servers.

There is no process to run (``command`` gives None) and nothing to check it with. Ready
means the workload certificate files are there (with xDS over mTLS); the app's own xDS
state is the app's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.proxy_backend import (
    CERT_CHAIN_FILE,
    KEY_FILE,
    ROOT_CERT_FILE,
    BootstrapError,
    NothingBeside,
    ProxyError,
    ProxyOptions,
    ProxyStatus,
)
from pilotfish.plugins.envoy.backend import _version
from pilotfish.plugins.envoy.bootstrap import node_metadata

BOOTSTRAP_FILE = "grpc-bootstrap.json"  # pilot-agent's name, under /etc/istio/proxy
GENERATOR = "grpc"
# Istio's: the name an xDS-enabled gRPC server asks LDS for, by its listening address.
SERVER_LISTENER_TEMPLATE = "xds.istio.io/grpc/lds/inbound/%s"
CERT_PROVIDER = "default"
CERT_REFRESH = "900s"  # Istio's file watcher interval; the files change at renewal only
WORKLOAD_SECRETS = frozenset({"default", "ROOTCA"})


def certificate_files(directory: Path) -> dict[str, str]:
    """gRPC's ``file_watcher`` config for the certificate files in ``directory``."""
    return {"certificate_file": str(directory / CERT_CHAIN_FILE),
            "private_key_file": str(directory / KEY_FILE),
            "ca_certificate_file": str(directory / ROOT_CERT_FILE),
            "refresh_interval": CERT_REFRESH}


def bootstrap(options: ProxyOptions, version: str) -> dict[str, Any]:
    """gRPC's xDS bootstrap for the app beside this agent, as pilot-agent writes it."""
    server_uri = (f"unix://{options.xds_socket}" if options.xds_tls
                  else options.discovery_address)
    metadata = node_metadata(options, version)
    metadata.pop("PILOTFISH_ADMIN")  # no admin API to reach: the app is the proxy
    metadata["GENERATOR"] = GENERATOR
    node: dict[str, Any] = {"id": options.node_id, "metadata": metadata}
    if options.locality:
        region, zone, subzone = [*options.locality.split("/"), "", ""][:3]
        node["locality"] = {"region": region, "zone": zone, "sub_zone": subzone}
    out: dict[str, Any] = {
        "xds_servers": [{"server_uri": server_uri, "channel_creds": [{"type": "insecure"}],
                         "server_features": ["xds_v3"]}],
        "node": node,
    }
    if options.output_certs is not None:
        out["certificate_providers"] = {CERT_PROVIDER: {
            "plugin_name": "file_watcher", "config": certificate_files(options.output_certs)}}
    out["server_listener_resource_name_template"] = SERVER_LISTENER_TEMPLATE
    return out


class ProxylessAdmin(NothingBeside):
    """What the agent can ask of an app that is its own proxy: whether its certificate is
    there. Its metrics and configuration are the app's."""

    def __init__(self, options: ProxyOptions) -> None:
        self.options = options

    async def status(self, full: bool) -> ProxyStatus:
        directory = self.options.output_certs
        if directory is None:
            return ProxyStatus()
        names = (CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE)
        present = [await anyio.Path(directory / name).is_file() for name in names]
        return ProxyStatus(secrets=WORKLOAD_SECRETS if all(present) else frozenset())

    async def prometheus(self, query: str = "") -> str:
        return ""  # no proxy stats: the app's own metrics come through --app-metrics

    async def config_dump(self) -> dict[str, Any]:
        raise ProxyError("proxyless gRPC: the app holds its xDS configuration and has no "
                         "admin API; pilotfish proxy-status shows what discovery sent it")

    async def drain(self) -> None:
        return None  # no listeners of the agent's to drain


class ProxylessGrpcBackend:
    """Writes the gRPC bootstrap; runs nothing."""

    name = "grpc"
    plaintext_xds = True  # the app's xDS client dials the relay with insecure credentials

    def bootstrap(self, options: ProxyOptions) -> dict[str, Any]:
        return bootstrap(options, _version())

    def write_bootstrap(self, options: ProxyOptions) -> Path:
        options.config_dir.mkdir(parents=True, exist_ok=True)
        path = options.config_dir / BOOTSTRAP_FILE
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(self.bootstrap(options), indent=2) + "\n")
        temporary.replace(path)  # an app starting now never reads half a file
        return path

    def check(self, path: Path) -> None:
        """No proxy to ask: check what gRPC needs in the file is there."""
        try:
            data = json.loads(path.read_text())
            servers = data["xds_servers"]
            ok = bool(servers and servers[0]["server_uri"] and data["node"]["id"])
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise BootstrapError(f"{path}: not a gRPC xDS bootstrap: {exc}") from exc
        if not ok:
            raise BootstrapError(f"{path}: no xDS server or node id")

    def command(self, options: ProxyOptions, path: Path) -> None:
        return None  # the app is the proxy

    def admin(self, options: ProxyOptions) -> ProxylessAdmin:
        return ProxylessAdmin(options)


@hookimpl
def pilotfish_proxy_backend() -> ProxylessGrpcBackend:
    return ProxylessGrpcBackend()
