"""``pilotfish ztunnel``: ambient mode's node proxy, one per node.

It takes pods from the node agent over ZDS (``--zds-socket``), learns the mesh from
discovery over Workload Discovery (``--discovery``), gets each served pod's certificate from
the CA in that pod's name (its own token, ``--token-file``, says who is asking), and serves
Istio's ztunnel ports: admin ``/config_dump`` on 15000 (localhost), metrics on 15020,
readiness on 15021. In each pod it serves 15001/15006/15008 and the DNS proxy on 15053, which
forwards what the mesh does not know to the nameservers of ``--dns-resolv-conf``. The
runtime is ``pilotfish.core.ztunnel``; this module assembles it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import linecache
import logging
import signal
import ssl
import time
from pathlib import Path
from typing import Any

from pilotfish.core.ambient import zds
from pilotfish.core.ambient.dns import nameservers
from pilotfish.core.ambient.state import WorkloadState
from pilotfish.core.http import HttpServer, Request, Response
from pilotfish.core.native import loop
from pilotfish.core.native.grpc_client import client_tls
from pilotfish.core.native.xds_client import DELTA_METHOD, XdsClient
from pilotfish.core.output import CommandError
from pilotfish.core.security.ca_client import CaClient
from pilotfish.core.tasks import Tasks, shielded
from pilotfish.core.version import VERSION
from pilotfish.core.ztunnel import discovery_wire
from pilotfish.core.ztunnel.certs import IdentityCerts
from pilotfish.core.ztunnel.dns import DnsProxy
from pilotfish.core.ztunnel.metrics import Metrics
from pilotfish.core.ztunnel.proxy import Ztunnel
from pilotfish.core.ztunnel.wds import WdsSession

log = logging.getLogger("pilotfish.ztunnel")

DEFAULT_ZDS_SOCKET = Path("/var/run/ztunnel/ztunnel.sock")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--discovery", metavar="HOST:PORT", required=True,
        help="discovery's xDS address (15012: mutual TLS with ztunnel's own certificate; "
             "15010: plaintext)")
    add("--ca-address", metavar="HOST:PORT",
        help="discovery's CA (default: the --discovery host, port 15012)")
    add("--root-cert", type=Path, metavar="PATH", required=True,
        help="PEM roots discovery's certificate chains to (discovery's root-cert.pem)")
    add("--token-file", type=Path, metavar="PATH", required=True,
        help="ztunnel's own service-account token, re-read for every CA call")
    add("--node", default="", help="the node's name (ztunnel serves the pods on it)")
    add("--ip", default="127.0.0.1", help="ztunnel's own address, in its node id")
    add("--name", default="ztunnel", help="ztunnel's pod name (default: ztunnel)")
    add("--namespace", default="istio-system", help="its namespace (default: istio-system)")
    add("--service-account", default="ztunnel",
        help="its service account (default: ztunnel, the CA's trusted node account)")
    add("--trust-domain", default="cluster.local")
    add("--cluster-id", default="Kubernetes")
    add("--zds-socket", type=Path, default=DEFAULT_ZDS_SOCKET,
        help=f"the node agent's ZDS socket (default: {DEFAULT_ZDS_SOCKET})")
    add("--dns-resolv-conf", type=Path, metavar="PATH", default=Path("/etc/resolv.conf"),
        help="the resolv.conf whose nameservers the DNS proxy forwards other names to, "
             "from inside each pod (default: /etc/resolv.conf, ztunnel's own, as Istio's)")
    add("--cluster-domain", default="cluster.local",
        help="the cluster's DNS domain, for the pods' search path (default: cluster.local)")
    add("--admin-address", default="127.0.0.1:15000")
    add("--metrics-address", default="0.0.0.0:15020")
    add("--readiness-address", default="0.0.0.0:15021")


def _upstreams(path: Path) -> tuple[str, ...]:
    try:
        return nameservers(path.read_text())
    except OSError as exc:
        raise CommandError(f"--dns-resolv-conf {path}: cannot read it: "
                           f"{exc.strerror or exc}") from exc


def node(args: argparse.Namespace) -> discovery_wire.Node:
    metadata = {"NAME": args.name, "NAMESPACE": args.namespace, "NODE_NAME": args.node,
                "CLUSTER_ID": args.cluster_id, "SERVICE_ACCOUNT": args.service_account,
                "ISTIO_VERSION": VERSION}
    return discovery_wire.Node(
        id=f"ztunnel~{args.ip}~{args.name}.{args.namespace}~{args.namespace}.svc.cluster.local",
        cluster=args.cluster_id, metadata=discovery_wire.Struct(fields={
            key: discovery_wire.Value(string_value=value) for key, value in metadata.items()}))


class Process:
    """One ztunnel: its streams, its pods and its HTTP endpoints."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        host = args.discovery.rsplit(":", 1)[0]
        self.ca = CaClient(args.ca_address or f"{host}:15012", args.root_cert, args.token_file)
        self.own_identity = (f"spiffe://{args.trust_domain}/ns/{args.namespace}/sa/"
                             f"{args.service_account}")
        self.certs = IdentityCerts(self._sign)
        self.state = WorkloadState()
        self.metrics = Metrics()
        self.ztunnel = Ztunnel(self.state, self.certs, self.metrics, args.trust_domain,
                               DnsProxy(self.state, _upstreams(args.dns_resolv_conf),
                                        args.cluster_domain))
        self.session = WdsSession(node(args), self.state)
        secure = args.discovery.endswith(":15012")
        self.xds = XdsClient(args.discovery, self.session, self._changed, DELTA_METHOD,
                             credentials=self._credentials if secure else None,
                             response_type=discovery_wire.DeltaDiscoveryResponse)
        self.stopping = asyncio.Event()

    async def _sign(self, csr: str, ttl: float, identity: str) -> list[str]:
        impersonate = "" if identity == self.own_identity else identity
        return await self.ca.create_certificate(csr, ttl, None, time.time(),
                                                impersonate=impersonate)

    async def _credentials(self) -> tuple[ssl.SSLContext, str]:
        secret = await self.certs.get(self.own_identity, timeout=60.0)
        roots = self.args.root_cert.read_bytes()
        return (client_tls(roots, secret.chain_pem.encode(), secret.key_pem.encode()),
                self.ca.server_name)

    async def _changed(self) -> None:
        self.ztunnel.changed.set()
        self.ztunnel.recheck()

    # -- HTTP ------------------------------------------------------------------------

    async def _config_dump(self, request: Request) -> Response:
        dump: dict[str, Any] = dict(self.state.dump())
        dump["certificates"] = self.certs.dump()
        dump["pods"] = {uid: {"name": pod.info.name, "namespace": pod.info.namespace,
                              "serviceAccount": pod.info.service_account}
                        for uid, pod in sorted(self.ztunnel.pods.items())}
        dump["connections"] = list(self.ztunnel.connections.values())
        dns = self.ztunnel.dns
        dump["dns"] = {"upstreams": list(dns.upstreams), "domain": dns.domain,
                       "statistics": dns.statistics()}
        return Response.json(dump)

    async def _quit(self, request: Request) -> Response:
        if request.method != "POST":
            return Response.text("this endpoint needs POST\n", 400)
        self.stopping.set()
        return Response.text("OK\n")

    async def _metrics(self, request: Request) -> Response:
        return Response(200, self.metrics.render().encode(), "text/plain; version=0.0.4")

    async def _ready(self, request: Request) -> Response:
        why = self.session.ready()
        return Response.text(f"not ready: {why}\n", 503) if why else Response.text("ready\n")

    async def run(self) -> None:
        admin = HttpServer({"/config_dump": self._config_dump, "/quitquitquit": self._quit})
        metrics = HttpServer({"/metrics": self._metrics, "/stats/prometheus": self._metrics})
        ready = HttpServer({"/healthz/ready": self._ready})
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        try:
            async with Tasks() as group:
                group.start_soon(admin.serve(self.args.admin_address))
                group.start_soon(metrics.serve(self.args.metrics_address))
                group.start_soon(ready.serve(self.args.readiness_address))
                group.start_soon(self.xds.run())
                group.start_soon(zds.run_client(self.args.zds_socket, self.ztunnel))
                await self.stopping.wait()
                group.cancel()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            await shielded(self._close())

    async def _close(self) -> None:
        await self.ztunnel.close()
        await self.certs.close()


def main(args: argparse.Namespace) -> int:
    if not args.root_cert.exists():
        raise CommandError(f"--root-cert {args.root_cert}: no such file")
    # attrs keeps the source of every method it generates for debuggers (linecache: 0.3 MiB
    # of Python objects in ztunnel's process); freed before serving, its room holds the
    # pods' state instead of new memory (issue 13's 30 MB).
    linecache.clearcache()
    with contextlib.suppress(KeyboardInterrupt):
        loop.run(Process(args).run())  # the native proxy's loop: uvloop
    return 0
