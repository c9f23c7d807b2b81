"""TLS for 15012, with client certificates optional: the one thing grpcio cannot do.

grpcio's server credentials either never ask for a client certificate or require one. 15012
needs Go's ``VerifyClientCertIfGiven``: a workload's first ``CreateCertificate`` has only a
token, while renewals and ADS present the workload certificate. So TLS ends here, in
Python's ``ssl`` with ``CERT_OPTIONAL`` (a certificate that is given must chain to the
root and be valid, or the handshake fails), and the bytes go on to discovery's gRPC server
on a unix socket in a private folder (0700): no other local user can reach the plaintext
side. Each hop connects from an abstract socket address of its own, which gRPC reports as
the call's peer (``unix-abstract:NAME``), so the handlers learn who is calling: each hop is
registered in ``peers`` under that name before its first byte is sent and dropped when it
closes. A peer address may hold at most ``max_per_peer`` connections at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import ssl
import tempfile
from pathlib import Path

import anyio
import anyio.abc
import attrs
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.tls import TLSAttribute, TLSStream

from pilotfish.core.security.provider import ServingCert

log = logging.getLogger("pilotfish.secure_xds")

HANDSHAKE_TIMEOUT = 10.0
CHUNK = 64 * 1024  # one read; a slow side back-pressures the other (no unbounded buffer)
MAX_PER_PEER = 1024  # connections one client address may hold at once


@attrs.frozen
class TlsPeer:
    address: str  # the real client, "ip:port"
    certificate: bytes | None  # DER of the client leaf the handshake verified


def server_context(serving: ServingCert, roots_pem: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(cadata=roots_pem)
    context.set_alpn_protocols(["h2"])  # gRPC clients refuse a server that picks no ALPN
    load_serving(context, serving)
    return context


def load_serving(context: ssl.SSLContext, serving: ServingCert) -> None:
    """Give ``context`` this certificate and key (again, on renewal: connections from then
    on get the new one)."""
    # ssl loads keys from files only: a private scratch file, gone once loaded.
    with tempfile.TemporaryDirectory(prefix="pilotfish-tls-") as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert.write_text(serving.chain_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(serving.key_pem)
        context.load_cert_chain(cert, key)


def split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{address!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


class TlsFront:
    def __init__(self, context: ssl.SSLContext, max_per_peer: int = MAX_PER_PEER) -> None:
        self.context = context  # swapped when discovery renews its certificate
        self.peers: dict[str, TlsPeer] = {}  # by the hop's abstract socket name
        self.handshake_failures = 0
        self.max_per_peer = max_per_peer
        self.refused = 0  # connections over max_per_peer
        self._per_host: dict[str, int] = {}
        self._hops = itertools.count(1)

    def peer(self, grpc_peer: str) -> TlsPeer | None:
        """The client behind a gRPC peer string (``unix-abstract:NAME`` for a hop)."""
        return self.peers.get(grpc_peer)

    async def serve(self, address: str, upstream: Path, *,
                    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                    ) -> None:
        host, port = split_host_port(address)
        try:
            listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        except OSError as exc:
            raise OSError(f"cannot listen for secure xDS on {address}: {exc.strerror}") from exc

        async def handle(client: anyio.abc.SocketStream) -> None:
            await self._handle(client, upstream)

        async with listener:
            task_status.started()
            await listener.serve(handle)

    async def _handle(self, client: anyio.abc.SocketStream, upstream_path: Path) -> None:
        remote = client.extra(SocketAttribute.remote_address)
        where = f"{remote[0]}:{remote[1]}" if isinstance(remote, tuple) else str(remote)
        host = str(remote[0]) if isinstance(remote, tuple) else where
        if self._per_host.get(host, 0) >= self.max_per_peer:
            self.refused += 1
            log.warning("15012: %s already holds %d connections; refused", host,
                        self.max_per_peer)
            await client.aclose()
            return
        self._per_host[host] = self._per_host.get(host, 0) + 1
        try:
            await self._relay(client, where, upstream_path)
        finally:
            self._per_host[host] -= 1
            if not self._per_host[host]:
                del self._per_host[host]

    async def _relay(self, client: anyio.abc.SocketStream, where: str,
                     upstream_path: Path) -> None:
        async with client:
            try:
                with anyio.fail_after(HANDSHAKE_TIMEOUT):
                    tls = await TLSStream.wrap(client, server_side=True,
                                               ssl_context=self.context,
                                               standard_compatible=False)
            except (ssl.SSLError, OSError, TimeoutError, anyio.BrokenResourceError,
                    anyio.EndOfStream) as exc:
                self.handshake_failures += 1
                log.info("15012: TLS handshake with %s failed: %s", where, exc)
                return
            certificate = tls.extra(TLSAttribute.peer_certificate_binary, None)
            name = f"pilotfish-15012-{os.getpid()}-{next(self._hops)}"
            try:
                upstream = await _connect_unix_as(name, upstream_path)
            except OSError as exc:
                log.warning("15012: cannot reach the gRPC server for %s: %s", where, exc)
                return
            key = f"unix-abstract:{name}"
            self.peers[key] = TlsPeer(where, certificate)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_pump, tls, upstream, tg.cancel_scope)
                    await _pump(upstream, tls, tg.cancel_scope)
            finally:
                # Forget the hop before its port is released, never after.
                self.peers.pop(key, None)
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await upstream.aclose()
                    await tls.aclose()


async def _connect_unix_as(name: str, path: Path) -> anyio.abc.SocketStream:
    """A unix connection to ``path`` from the abstract address ``name`` (what gRPC reports
    as the peer of the calls on it)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind("\0" + name)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, str(path))
    except BaseException:
        sock.close()
        raise
    return await anyio.abc.UNIXSocketStream.from_socket(sock)


async def _pump(source: ByteStream, sink: ByteStream, scope: anyio.CancelScope) -> None:
    """Copy until either side closes, then end the other direction too."""
    try:
        while True:
            data = await source.receive(CHUNK)
            await sink.send(data)
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
            ssl.SSLError, OSError):
        pass
    finally:
        scope.cancel()
