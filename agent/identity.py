"""The agent's workload identity: flags, and the SDS server, CSR loop and xDS relay.

With ``--token-file`` the agent gets its proxy a certificate: it asks discovery's CA
(``--ca-address``, TLS checked against ``--root-cert``) with the pod token, serves the
result over SDS on ``CONFIG_DIR/SDS`` and renews it at about half its lifetime
(``cert_manager``). Without it the agent serves no secrets, as before this existed.

``--xds-tls`` (implied by a ``--discovery`` address on port 15012) also puts the proxy's
own xDS connection under mTLS: Envoy dials the agent's relay on ``CONFIG_DIR/XDS`` and
runs TLS through it to discovery with the ``default`` and ``ROOTCA`` secrets this agent
serves (see ``xds_relay`` for why the relay, and ``plugins/envoy/bootstrap.py``). A proxy
that speaks plaintext to the relay (``relay_tls``: proxyless gRPC) has the relay run that
mTLS for it.

``--output-certs DIR`` (or ``OUTPUT_CERTS``, as pilot-agent reads it) also writes the
certificate there as files (``cert_files``).
"""

from __future__ import annotations

import argparse
import os
import ssl
from pathlib import Path

import anyio.abc
import attrs

from pilotfish.agent.cert_manager import CertManager, CertRequest
from pilotfish.agent.sds_server import SdsServer
from pilotfish.agent.xds_relay import XdsRelay, client_context
from pilotfish.core import meshconfig
from pilotfish.core.proxy_backend import ProxyOptions, split_host_port
from pilotfish.core.security import workload_cert
from pilotfish.core.security.ca_client import SERVER_NAME, CaClient

SECURE_XDS_PORT = 15012
DEFAULT_TTL = "24h"  # Istio's SECRET_TTL
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


class IdentityError(ValueError):
    """A flag is wrong; the message names it."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--token-file", type=Path, metavar="PATH",
        help="the pod token the node wrote; with it the agent gets a workload certificate "
             "from discovery's CA and serves it to the proxy over SDS (re-read per request)")
    add("--root-cert", type=Path, metavar="PATH",
        help="PEM roots discovery's certificate must chain to (discovery's root-cert.pem); "
             "also trusted as ROOTCA; required with --token-file")
    add("--ca-address", metavar="HOST:PORT",
        help="discovery's CA (default: the --discovery host, port 15012)")
    add("--cert-ttl", default=DEFAULT_TTL,
        help=f"lifetime to ask for; renewed at about half of it (default: {DEFAULT_TTL})")
    add("--key-type", choices=workload_cert.KEY_TYPES, default="ec",
        help="workload key: ec (ECDSA P-256, default) or rsa (RSA 2048)")
    add("--xds-tls", action="store_true",
        help="proxy's xDS over mTLS with the workload certificate (implied when "
             "--discovery is on port 15012); needs --token-file")
    add("--output-certs", type=Path, metavar="DIR",
        default=Path(os.environ["OUTPUT_CERTS"]) if os.environ.get("OUTPUT_CERTS") else None,
        help="also write the workload certificate there as key.pem, cert-chain.pem and "
             "root-cert.pem, renewed (default: $OUTPUT_CERTS; unset: not written); "
             "needs --token-file")


@attrs.frozen
class IdentitySettings:
    ca_address: str
    token_file: Path
    root_cert: Path
    cert_ttl: float
    key_type: str
    spiffe_id: str
    xds_tls: bool


def wants_xds_tls(args: argparse.Namespace) -> bool:
    if args.xds_tls:
        return True
    try:
        return split_host_port(args.discovery or "", "--discovery")[1] == SECURE_XDS_PORT
    except ValueError:
        return False


def settings_from_args(args: argparse.Namespace, trust_domain: str) -> IdentitySettings | None:
    """None without ``--token-file``; IdentityError for flags that cannot work."""
    xds_tls = wants_xds_tls(args)
    if args.token_file is None:
        if args.output_certs is not None:
            raise IdentityError(f"--output-certs {args.output_certs} (or OUTPUT_CERTS) needs "
                                "--token-file: "
                                "the certificate written there is the one the agent gets "
                                "with the pod token")
        if xds_tls:
            why = "--xds-tls" if args.xds_tls else f"--discovery {args.discovery} (port 15012)"
            raise IdentityError(f"{why} needs --token-file: the proxy authenticates to "
                                "discovery with a workload certificate the agent gets with "
                                "the pod token; use port 15010 for plaintext xDS")
        return None
    if args.root_cert is None:
        raise IdentityError("--token-file needs --root-cert: the root discovery's "
                            "certificate chains to (the node copies discovery's "
                            "root-cert.pem)")
    try:
        roots = workload_cert.load_pems(args.root_cert.read_bytes(), "--root-cert")
    except OSError as exc:
        raise IdentityError(f"--root-cert {args.root_cert}: {exc.strerror or exc}") from None
    except workload_cert.CertificateError as exc:
        raise IdentityError(f"--root-cert {args.root_cert}: {exc}") from None
    if not roots:
        raise IdentityError(f"--root-cert {args.root_cert}: holds no certificate")
    ca_address = args.ca_address
    if ca_address is None:
        host, _ = split_host_port(args.discovery, "--discovery")
        ca_address = f"[{host}]:{SECURE_XDS_PORT}" if ":" in host else (
            f"{host}:{SECURE_XDS_PORT}")
    try:
        split_host_port(ca_address, "--ca-address")
        ttl = meshconfig.parse_duration(args.cert_ttl, "--cert-ttl")
    except (ValueError, meshconfig.MeshConfigError) as exc:
        raise IdentityError(str(exc)) from None
    if ttl < 1:
        raise IdentityError(f"--cert-ttl {args.cert_ttl}: expected at least 1s")
    return IdentitySettings(
        ca_address=ca_address, token_file=args.token_file, root_cert=args.root_cert,
        cert_ttl=ttl, key_type=args.key_type, xds_tls=xds_tls,
        spiffe_id=workload_cert.spiffe_id(trust_domain, args.namespace, args.service_account))


def check_socket_paths(options: ProxyOptions) -> None:
    for path in (options.sds_socket, options.xds_socket):
        if len(str(path).encode()) > MAX_SOCKET_PATH:
            raise IdentityError(f"--config-dir {options.config_dir}: the socket path {path} "
                                f"is longer than {MAX_SOCKET_PATH} bytes, the limit for unix "
                                "sockets; choose a shorter directory")


class AgentIdentity:
    """What runs beside the proxy when the agent has an identity to serve."""

    def __init__(self, settings: IdentitySettings, options: ProxyOptions,
                 sds: SdsServer, *, relay_tls: bool = False) -> None:
        """``sds``: the agent's SDS server (running already), which serves the certificate.
        ``relay_tls``: the proxy speaks plaintext to the xDS relay, which runs the mTLS."""
        self.settings = settings
        self.sds = sds
        self.relay: XdsRelay | None = None
        server_name = options.discovery_san or SERVER_NAME
        if settings.xds_tls:
            host, port = split_host_port(options.discovery_address, "--discovery")
            self.relay = XdsRelay(options.xds_socket, host, port,
                                  tls=self._relay_context if relay_tls else None,
                                  server_name=server_name)
        client = CaClient(settings.ca_address, settings.root_cert, settings.token_file,
                          server_name=server_name)
        request = CertRequest(settings.spiffe_id, settings.cert_ttl, settings.key_type)
        self.manager = CertManager(request, client, self.sds, self.relay,
                                   output_certs=options.output_certs)

    async def _relay_context(self) -> ssl.SSLContext:
        return client_context(await self.manager.wait_secret())

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Bind the relay's socket (before the proxy starts, so it never dials nothing),
        then start asking for the certificate; returns at once."""
        if self.relay is not None:
            await tg.start(self.relay.serve)
        try:
            await tg.start(self.manager.run)
        except workload_cert.CertificateError as exc:  # the root file went bad since the check
            raise OSError(f"--root-cert {self.settings.root_cert}: {exc}") from exc
