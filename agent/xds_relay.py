"""A byte relay for the proxy's xDS connection: unix socket ``CONFIG_DIR/XDS`` → discovery.

With xDS over mTLS, Envoy's ``xds-grpc`` cluster dials this socket (the path pilot-agent
uses for its xDS proxy) and runs TLS *through* the relay, end to end with discovery, with
the workload certificate the agent serves it over SDS. The relay sees only ciphertext.

It exists for one reason: Envoy uses a certificate pushed over SDS for *new* connections
only, and keeps a long-lived ADS connection for as long as it lives. After a rotation the
agent calls ``reconnect()``; the relay closes what it carries, and Envoy reconnects (its
ADS backoff starts at 0.5 s), handshaking with the new certificate. Envoy keeps serving
its configuration meanwhile and asks again for what it holds, so traffic is unaffected.
(pilot-agent terminates the xDS stream itself and re-dials discovery; a relay gets the
same effect without a second xDS implementation in the path.)

A proxy that cannot run TLS through the relay with secrets from SDS — proxyless gRPC, whose
bootstrap names this socket with insecure credentials, as pilot-agent's does — speaks
plaintext to it, and the relay originates the mTLS to discovery itself (``tls``): the
workload certificate as client certificate, discovery's checked against the agent's roots
and the name ``istiod.istio-system.svc``, ALPN ``h2``. It still relays bytes (HTTP/2 frames
now), and ``reconnect()`` after a renewal has the app's xDS client redial, through a
handshake with the new certificate.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import anyio.abc
from anyio.abc import ByteStream
from anyio.streams.tls import TLSStream

from pilotfish.core.security.workload_cert import WorkloadSecret

log = logging.getLogger("pilotfish.xds_relay")

CONNECT_TIMEOUT = 5.0  # pilot-agent's dial timeout to discovery
CHUNK = 64 * 1024  # one read; a slow side back-pressures the other, nothing is buffered


def client_context(secret: WorkloadSecret) -> ssl.SSLContext:
    """TLS to discovery as this workload: its chain and key as client certificate, the
    roots it trusts. The key goes through a memory file, never to the disk."""
    context = ssl.create_default_context(cadata=secret.roots_pem)
    context.set_alpn_protocols(["h2"])
    descriptor = os.memfd_create("workload-certificate", os.MFD_CLOEXEC)
    try:
        os.write(descriptor, (secret.chain_pem + secret.key_pem).encode())
        context.load_cert_chain(f"/proc/self/fd/{descriptor}")
    finally:
        os.close(descriptor)
    return context


class XdsRelay:
    def __init__(self, path: Path, host: str, port: int, *,
                 tls: Callable[[], Awaitable[ssl.SSLContext]] | None = None,
                 server_name: str = "") -> None:
        """``tls``: originate TLS to discovery with the context it gives (waiting for the
        first certificate), checking ``server_name``; None relays the proxy's own TLS."""
        self.path, self.host, self.port = path, host, port
        self.tls, self.server_name = tls, server_name
        self._open: set[anyio.CancelScope] = set()
        self.connections = 0  # accepted so far
        self.reconnects = 0  # connections cut by reconnect()

    def reconnect(self) -> int:
        """Close every relayed connection (Envoy reconnects); returns how many."""
        scopes, self._open = self._open, set()
        for scope in scopes:
            scope.cancel()
        self.reconnects += len(scopes)
        return len(scopes)

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                    ) -> None:
        self.path.unlink(missing_ok=True)
        try:
            listener = await anyio.create_unix_listener(self.path)
        except OSError as exc:
            raise OSError(f"cannot listen for the proxy's xDS on {self.path}: "
                          f"{exc.strerror or exc}") from exc
        os.chmod(self.path, 0o600)
        log.info("relaying the proxy's xDS from %s to %s:%d", self.path, self.host, self.port)
        try:
            async with listener:
                task_status.started()
                await listener.serve(self._handle)
        finally:
            self.path.unlink(missing_ok=True)

    async def _handle(self, downstream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        async with downstream:
            context = await self.tls() if self.tls is not None else None
            try:
                with anyio.fail_after(CONNECT_TIMEOUT):
                    upstream: ByteStream = await anyio.connect_tcp(self.host, self.port)
                    if context is not None:
                        tcp = upstream
                        try:
                            upstream = await TLSStream.wrap(
                                tcp, hostname=self.server_name, ssl_context=context,
                                standard_compatible=False)
                        except BaseException:
                            await anyio.aclose_forcefully(tcp)
                            raise
            except (OSError, TimeoutError, ssl.SSLError, anyio.BrokenResourceError) as exc:
                log.warning("cannot reach discovery at %s:%d for the proxy's xDS: %s",
                            self.host, self.port, exc)
                return
            with anyio.CancelScope() as scope:
                self._open.add(scope)
                try:
                    async with upstream, anyio.create_task_group() as tg:
                        tg.start_soon(_pump, downstream, upstream, tg.cancel_scope)
                        await _pump(upstream, downstream, tg.cancel_scope)
                finally:
                    self._open.discard(scope)


async def _pump(source: ByteStream, sink: ByteStream, scope: anyio.CancelScope) -> None:
    """Copy until either side closes, then end the other direction too."""
    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError,
                             anyio.ClosedResourceError, OSError):
        while True:
            await sink.send(await source.receive(CHUNK))
    scope.cancel()
