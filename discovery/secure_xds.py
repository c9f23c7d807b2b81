"""15012: ADS and the CA on one TLS port, as istiod serves them.

Set-up is synchronous and fails early with a ``CaSetupError`` (bad CA files, no token key,
an unwritable state directory): the cert provider is created, its root is written to
``<state-dir>/root-cert.pem`` for the node to hand to pods, and discovery's own serving
certificate is issued. ``serve`` then runs the gRPC server (ADS with a caller check, and
``IstioCertificateService``) behind the TLS front, renewing the serving certificate at
half its life.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import attrs
import grpc

from pilotfish.core.plugins import PluginError, Plugins
from pilotfish.core.proxy import Proxy
from pilotfish.core.security import files
from pilotfish.core.security.provider import (
    CaSetupError,
    CertError,
    CertProvider,
    CertSettings,
    ServingCert,
)
from pilotfish.core.xds.server import SERVER_OPTIONS, XdsServer
from pilotfish.discovery.authn import Authenticator, Credentials, check_proxy_identity
from pilotfish.discovery.ca_service import STATUS, CertificateService, PodSource
from pilotfish.discovery.tls_front import TlsFront, server_context, split_host_port

if TYPE_CHECKING:
    from pilotfish.plugins.kube.client import Client

log = logging.getLogger("pilotfish.secure_xds")

ROOT_CERT = "root-cert.pem"
RENEW_AT = 0.5  # of the serving certificate's lifetime


def serving_names(address: str, namespace: str = "istio-system", revision: str = ""
                  ) -> tuple[list[str], list[str]]:
    """istiod's DNS names (``istiod[-REV].NAMESPACE.svc``: the webhooks' Service name, which
    the API server checks), ours, and the address clients dial (an IP SAN, or a DNS one)."""
    dns = [f"istiod.{namespace}.svc", f"istiod.{namespace}.svc.cluster.local",
           "pilotfish-discovery"]
    if revision:
        dns += [f"istiod-{revision}.{namespace}.svc",
                f"istiod-{revision}.{namespace}.svc.cluster.local"]
    host, _ = split_host_port(address)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return [*dns, host], []
    # A wildcard bind is dialled as loopback from this host.
    return dns, ["127.0.0.1"] if ip.is_unspecified else [str(ip)]


def read_token_key(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CaSetupError(f"--token-key {path}: cannot read ({exc.strerror})") from exc
    if b"-----BEGIN PUBLIC KEY-----" not in data:
        raise CaSetupError(f"--token-key {path}: expected the node's PEM public key "
                           "(-----BEGIN PUBLIC KEY-----)")
    return data


class SecureXds:
    def __init__(self, xds: XdsServer, provider: CertProvider, settings: CertSettings,
                 authenticator: Authenticator, address: str, namespace: str = "istio-system",
                 clock: Callable[[], float] = time.time, revision: str = "",
                 pods: PodSource = tuple) -> None:
        self.xds = xds
        self.provider = provider
        self.settings = settings
        self.address = address
        self.clock = clock
        self.names = serving_names(address, namespace, revision)
        # Told the new certificate when it is renewed (the webhook server's TLS).
        self.on_renew: list[Callable[[ServingCert], None]] = []
        self.serving = self._issue_serving()
        self.front = TlsFront(server_context(self.serving, provider.trust_bundle()))
        self.authenticator = authenticator
        self.ca = CertificateService(provider, settings, authenticator, self.front.peer, clock,
                                     pods)

    @classmethod
    def create(cls, plugins: Plugins, xds: XdsServer, address: str, settings: CertSettings,
               token_key: Path | None, namespace: str = "istio-system", revision: str = "",
               cluster: Client | None = None, pods: PodSource = tuple) -> SecureXds:
        """``cluster``: the Kubernetes API server discovery runs against, if any: the root
        then lives in its Secrets (``cluster_ca``) and pod tokens are checked by it.
        ``pods``: the pods discovery knows, which say which node a node agent and the
        identities it asks for run on."""
        key = read_token_key(token_key)
        reviewer = None
        if cluster is not None:
            from pilotfish.discovery.cluster_ca import SecretRootStore
            from pilotfish.discovery.token_review import TokenReviewer
            if settings.ca_dir is None:
                settings = attrs.evolve(settings, root_store=SecretRootStore(cluster, namespace))
            reviewer = TokenReviewer(cluster).review
        try:
            provider = plugins.cert_provider(settings)
        except PluginError as exc:
            raise CaSetupError(str(exc)) from exc
        if provider is None:
            raise CaSetupError("secure xDS needs a cert provider and none is active: add "
                               "istio-ca (or file) to plugins.certs, or pass "
                               "--secure-xds-address '' to serve plaintext 15010 only")
        state = files.ensure_dir(settings.state_dir)
        if files.write_if_changed(state / ROOT_CERT, provider.trust_bundle(), files.PUBLIC_MODE):
            log.info("wrote the mesh root to %s", state / ROOT_CERT)
        return cls(xds, provider, settings,
                   Authenticator(settings.trust_domain, key, reviewer=reviewer), address,
                   namespace, revision=revision, pods=pods)

    @property
    def root_cert_path(self) -> Path:
        return self.settings.state_dir / ROOT_CERT

    def _issue_serving(self) -> ServingCert:
        dns, ips = self.names
        return self.provider.serving_certificate(dns, ips, self.clock())

    async def check_ads_caller(self, context: grpc.aio.ServicerContext, proxy: Proxy
                               ) -> tuple[str, str]:
        """ADS on 15012 requires a proven identity that matches the proxy it claims to be."""
        peer = self.front.peer(context.peer())
        if peer is None:  # only the front can reach this server: a bug if it happens
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "connections to 15012 come through its TLS front")
            raise AssertionError("abort returned")
        credentials = Credentials.from_metadata(context.invocation_metadata(),
                                                peer.certificate)
        try:
            identity = await self.authenticator.authenticate_async(credentials, self.clock())
            check_proxy_identity(identity, proxy.namespace, proxy.metadata)
        except CertError as exc:
            log.warning("ADS from %s as %s refused: %s", peer.address, proxy.id, exc)
            await context.abort(STATUS[exc.refusal], str(exc))
            raise AssertionError("abort returned") from None
        return identity.spiffe_id(self.settings.trust_domain), peer.address

    def client_host(self, grpc_peer: str) -> str:
        """The host of the TLS client behind a hop (streams per address count it, not the
        hop, which is one per connection)."""
        peer = self.front.peer(grpc_peer)
        return split_host_port(peer.address)[0] if peer is not None else grpc_peer

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                    ) -> None:
        server = grpc.aio.server(options=SERVER_OPTIONS)
        server.add_generic_rpc_handlers((self.xds.handler(check=self.check_ads_caller,
                                                          client_host=self.client_host),))
        self.ca.add_to(server)
        # TLS and the caller's certificate are handled by the front; behind it, a unix
        # socket in a folder only discovery's user may enter.
        remove_stale_socket_folders()
        folder = Path(tempfile.mkdtemp(prefix=f"{SOCKET_FOLDER_PREFIX}{os.getpid()}-"))
        socket_path = folder / "grpc.sock"
        if not server.add_insecure_port(f"unix:{socket_path}"):
            raise OSError(f"cannot listen for secure xDS's gRPC server on {socket_path}")
        await server.start()
        socket_path.chmod(0o600)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.front.serve, self.address, socket_path)
                tg.start_soon(self._renew)
                log.info("secure xDS and CA on %s (TLS, serving cert for %s)", self.address,
                         ", ".join(self.names[0] + self.names[1]))
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True):
                self.xds.end_streams()  # ADS streams end at once; CA calls have grace
                await server.stop(grace=1.0)
            shutil.rmtree(folder, ignore_errors=True)

    async def _renew(self) -> None:
        while True:
            now = self.clock()
            lifetime = max(self.serving.not_after - now, 0.0)
            await anyio.sleep(max(lifetime * RENEW_AT, 60.0))
            try:
                self.serving = self._issue_serving()
                self.front.context = server_context(self.serving, self.provider.trust_bundle())
                for listener in self.on_renew:
                    listener(self.serving)
                log.info("renewed discovery's serving certificate")
            except Exception:
                log.exception("could not renew discovery's serving certificate; retrying")
                await anyio.sleep(30)


SOCKET_FOLDER_PREFIX = "pilotfish-15012-"


def remove_stale_socket_folders() -> None:
    """Socket folders of discovery processes that died without cleaning up (SIGKILL)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{SOCKET_FOLDER_PREFIX}*"):
        pid = folder.name.removeprefix(SOCKET_FOLDER_PREFIX).split("-", 1)[0]
        try:
            info = folder.lstat()  # never follow a link someone else put there
        except OSError:
            continue
        if not pid.isdigit() or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass
