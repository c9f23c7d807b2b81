"""ztunnel's traffic: each served pod's listeners and what a connection on each does.

- **15001, outbound**: where the pod's connection was going (``SO_ORIGINAL_DST``) goes
  through ``ambient.outbound.route``: HBONE (to the destination pod's 15008, or to a
  waypoint) on a pooled tunnel made with the pod's own certificate, plain TCP to a workload
  outside the mesh, or passthrough to an unknown destination. Connections leave from the
  pod's network namespace, so they carry the pod's address.
- **15008, inbound HBONE**: mutual TLS with the pod's certificate; each CONNECT is checked
  (``ambient.inbound.hbone_target``), authorized (``ambient.l4_authz``) with the client's
  SPIFFE identity, and delivered to the app from the client's address.
- **15006, inbound plaintext**: the same without an identity (a STRICT PeerAuthentication
  denies it).
- **15053, DNS** (UDP and TCP): the mesh's names answered from discovery's state, others
  forwarded from the pod to the upstream resolvers (``dns``).

Every connection is counted in Istio's TCP metrics (``metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import attrs

from pilotfish.core.ambient import inbound, l4_authz, outbound
from pilotfish.core.ambient.model import Workload
from pilotfish.core.ambient.state import WorkloadState
from pilotfish.core.ambient.zds import WorkloadInfo
from pilotfish.core.native import channels, hbone
from pilotfish.core.native.channels import Channel, SocketChannel
from pilotfish.core.native.sockets import address_text, original_destination, peer_of
from pilotfish.core.security.node_secret import NodeSecret
from pilotfish.core.ztunnel.certs import IdentityCerts
from pilotfish.core.ztunnel.dns import DnsProxy
from pilotfish.core.ztunnel.inpod import (
    INBOUND,
    INBOUND_PLAINTEXT,
    OUTBOUND,
    Dialer,
    open_dns_sockets,
    open_listeners,
)
from pilotfish.core.ztunnel.metrics import Flow, Metrics, Series

log = logging.getLogger("pilotfish.ztunnel")

WORKLOAD_WAIT = 5.0  # a pod handed over before discovery has told of it: wait this long


@attrs.define
class Pod:
    """One pod ztunnel serves: what ZDS said of it and its network namespace."""

    uid: str
    info: WorkloadInfo
    netns_fd: int
    listeners: dict[int, socket.socket] = attrs.field(factory=dict)
    dns_sockets: tuple[socket.socket, ...] = ()  # 15053: (UDP, TCP listener), when served
    task: asyncio.Task[None] | None = None

    @property
    def dialer(self) -> Dialer:
        return Dialer(self.netns_fd)

    def close(self) -> None:
        for sock in [*self.listeners.values(), *self.dns_sockets]:
            sock.close()
        self.listeners.clear()
        self.dns_sockets = ()
        with contextlib.suppress(OSError):
            os.close(self.netns_fd)


def _pod_ended(pod: Pod, task: asyncio.Task[None]) -> None:
    """A pod's listeners stop only when ztunnel lets the pod go; anything else is a bug to
    see in the log, not a pod silently left without its sockets."""
    if not task.cancelled() and task.exception() is not None:
        log.error("pod %s/%s: its listeners stopped", pod.info.namespace, pod.info.name,
                  exc_info=task.exception())


class _Counting(channels.Counted):
    """A channel whose bytes are counted in a series as they pass: what is read from it
    under ``read_as``, what is written to it under ``written_as``."""

    def __init__(self, inner: Channel, metrics: Metrics, labels: Series,
                 read_as: str = "istio_tcp_received_bytes",
                 written_as: str = "istio_tcp_sent_bytes") -> None:
        super().__init__(inner, partial(metrics.add, read_as, labels),
                         partial(metrics.add, written_as, labels))
        self.metrics, self.labels = metrics, labels


class _Open(_Counting):
    """A connection's counted side that, when closed, counts the connection closed and
    forgets it (``ztunnel-config connections``)."""

    def __init__(self, inner: Channel, metrics: Metrics, labels: Series,
                 forget: Callable[[], object], **names: str) -> None:
        super().__init__(inner, metrics, labels, **names)
        self.forget = forget
        self.closed = False
        metrics.add("istio_tcp_connections_opened", labels)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.metrics.add("istio_tcp_connections_closed", self.labels)
            self.forget()
        await super().close()


async def _tcp(sock: socket.socket) -> SocketChannel:
    return await SocketChannel.of(sock)


class Contexts:
    """TLS contexts per identity, made once per certificate."""

    def __init__(self, certs: IdentityCerts) -> None:
        self.certs = certs
        self._made: dict[tuple[str, str], tuple[ssl.SSLContext, ssl.SSLContext]] = {}

    async def _pair(self, identity: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        secret = await self.certs.get(identity)
        key = (identity, secret.leaf.serial)
        pair = self._made.get(key)
        if pair is None:
            self._made = {k: v for k, v in self._made.items() if k[0] != identity}
            pair = self._made[key] = _contexts(secret)
        return pair

    async def server(self, identity: str) -> ssl.SSLContext:
        return (await self._pair(identity))[0]

    async def client(self, identity: str) -> ssl.SSLContext:
        return (await self._pair(identity))[1]


def _contexts(secret: NodeSecret) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    chain, key, roots = (secret.chain_pem.encode(), secret.key_pem.encode(),
                         secret.roots_pem.encode())
    return (hbone.server_context(chain, key, roots), hbone.client_context(chain, key, roots))


class Ztunnel:
    """The pods served and their traffic."""

    def __init__(self, state: WorkloadState, certs: IdentityCerts, metrics: Metrics,
                 trust_domain: str = "cluster.local", dns: DnsProxy | None = None) -> None:
        self.state = state
        # Every pod's 15053; with no upstream resolver given, only the mesh's names resolve.
        self.dns = dns if dns is not None else DnsProxy(state)
        self.certs = certs
        self.contexts = Contexts(certs)
        self.metrics = metrics
        self.trust_domain = trust_domain
        self.pool = hbone.HbonePool()
        self.pods: dict[str, Pod] = {}
        self.changed = asyncio.Event()  # set whenever discovery's state changes
        # The connections being carried, for ``ztunnel-config connections``.
        self.connections: dict[int, dict[str, str]] = {}
        self._next_connection = itertools.count()
        # Inbound connections as authorized, checked again when policies change: the pod,
        # what was authorized, and how to cut it.
        self.authorized: dict[int, tuple[Pod, l4_authz.Connection, Callable[[], None]]] = {}
        self._checked_revision = -1

    def recheck(self) -> int:
        """Authorize every inbound connection again after the policies may have changed (as
        ztunnel's connection manager does); cut those now denied. Returns how many."""
        if self.state.revision == self._checked_revision:
            return 0
        self._checked_revision = self.state.revision
        cut = 0
        for key, (pod, connection, abort) in list(self.authorized.items()):
            local = self.state.find_pod(pod.info.namespace, pod.info.name)
            verdict = None if local is None else l4_authz.authorize(
                self.state.policies_for(local), connection, local)
            if verdict is not None and verdict.allowed:
                continue
            log.info("pod %s/%s: connection from %s (%s) cut: now denied by %s",
                     pod.info.namespace, pod.info.name, connection.source_ip,
                     connection.source_identity or "no identity",
                     (verdict.policy if verdict else None) or "the policies")
            self.authorized.pop(key, None)
            abort()
            cut += 1
        return cut

    def _forget(self, key: int) -> None:
        self.connections.pop(key, None)
        self.authorized.pop(key, None)

    def track(self, pod: Pod, direction: str, source: tuple[str, int],
              destination: tuple[str, int], source_identity: str | None,
              destination_identity: str | None, protocol: str) -> int:
        key = next(self._next_connection)
        self.connections[key] = {
            "pod": f"{pod.info.namespace}/{pod.info.name}", "direction": direction,
            "src": address_text(source), "dst": address_text(destination),
            "srcIdentity": source_identity or "", "dstIdentity": destination_identity or "",
            "protocol": protocol}
        return key

    # -- the pods, as ZDS hands them over -------------------------------------------------

    def identity(self, info: WorkloadInfo) -> str:
        return f"spiffe://{self.trust_domain}/ns/{info.namespace}/sa/{info.service_account}"

    async def start_pod(self, pod: Pod, listeners: dict[int, socket.socket]) -> None:
        old = self.pods.get(pod.uid)
        if old is not None:
            await self.stop_pod(pod.uid)
        pod.listeners = listeners
        self.pods[pod.uid] = pod
        pod.task = asyncio.get_running_loop().create_task(self._serve_pod(pod))
        pod.task.add_done_callback(partial(_pod_ended, pod))
        # Ask for the pod's certificate now: its first connection should not wait for it.
        if pod.info.service_account:
            self.certs.warm(self.identity(pod.info))

    async def stop_pod(self, uid: str) -> None:
        pod = self.pods.pop(uid, None)
        if pod is None:
            return
        if pod.task is not None:
            pod.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pod.task
        pod.close()
        identity = self.identity(pod.info)
        if not any(self.identity(p.info) == identity for p in self.pods.values()):
            self.certs.forget(identity)

    async def close(self) -> None:
        for uid in list(self.pods):
            await self.stop_pod(uid)
        await self.pool.close()

    async def _serve_pod(self, pod: Pod) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._accept(pod, OUTBOUND, self._outbound))
            group.create_task(self._accept(pod, INBOUND_PLAINTEXT, self._inbound_plaintext))
            group.create_task(hbone.serve(
                pod.listeners[INBOUND], lambda local: self._server_context(pod),
                lambda request: self._inbound_hbone(pod, request)))
            if pod.dns_sockets:
                udp, tcp = pod.dns_sockets
                group.create_task(self.dns.serve_udp(udp, pod.info.namespace, pod.netns_fd))
                group.create_task(self.dns.serve_tcp(tcp, pod.info.namespace, pod.netns_fd))

    async def _accept(self, pod: Pod, port: int,
                      handle: Callable[[Pod, socket.socket], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        listener = pod.listeners[port]
        async with asyncio.TaskGroup() as group:
            while True:
                conn, _ = await loop.sock_accept(listener)
                group.create_task(self._guarded(handle, pod, conn))

    @staticmethod
    async def _guarded(handle: Callable[[Pod, socket.socket], Awaitable[None]], pod: Pod,
                       conn: socket.socket) -> None:
        try:
            await handle(pod, conn)
        except Exception:  # one connection's failure is that connection's
            log.exception("pod %s/%s: connection failed", pod.info.namespace, pod.info.name)
        finally:
            conn.close()

    async def workload_of(self, pod: Pod) -> Workload | None:
        """The pod's Workload from discovery (waiting a little for a pod just started)."""
        deadline = asyncio.get_running_loop().time() + WORKLOAD_WAIT
        while True:
            found = self.state.find_pod(pod.info.namespace, pod.info.name)
            if found is not None:
                return found
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return None
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    async def _server_context(self, pod: Pod) -> ssl.SSLContext:
        return await self.contexts.server(self.identity(pod.info))

    # -- 15001 -------------------------------------------------------------------------

    async def _outbound(self, pod: Pod, conn: socket.socket) -> None:
        destination = original_destination(conn)
        source = await self.workload_of(pod)
        if destination is None or source is None:
            log.warning("pod %s/%s: outbound connection %s dropped (%s)", pod.info.namespace,
                        pod.info.name, destination,
                        "not redirected" if destination is None else
                        "discovery has not told of this pod")
            return
        route = outbound.route(self.state, source, destination)
        client = peer_of(conn)
        if isinstance(route, outbound.Refused):
            log.info("pod %s/%s: outbound to %s:%d refused: %s", pod.info.namespace,
                     pod.info.name, *destination, route.reason)
            return
        own_identity = self.identity(pod.info)
        peer_identity = route.identities[0] if isinstance(route, outbound.Hbone) and \
            route.identities else None
        labels = self._flow("source", source, own_identity, getattr(route, "workload", None),
                            peer_identity, getattr(route, "service", None),
                            mutual_tls=isinstance(route, outbound.Hbone))
        try:
            if isinstance(route, outbound.Hbone):
                context = await self.contexts.client(own_identity)
                upstream: Channel = await self.pool.open(
                    hbone.PoolKey(own_identity, route.identities,
                                  source.addresses[0] if source.addresses else "",
                                  route.address),
                    route.authority, self._headers(source, client), lambda: context,
                    pod.dialer.connect)
            else:
                upstream = await _tcp(await pod.dialer.connect(route.address))
        except (hbone.HboneError, OSError, LookupError) as exc:
            self.metrics.add("istio_tcp_connections_failed", labels)
            log.info("pod %s/%s: to %s:%d via %s failed: %s", pod.info.namespace,
                     pod.info.name, *destination, route.address, exc)
            return
        tracked = self.track(pod, "outbound", client, destination, own_identity, peer_identity,
                             "HBONE" if isinstance(route, outbound.Hbone) else "TCP")
        # The app's side is the one counted: what it sends is sent to the destination.
        downstream = _Open(await _tcp(conn), self.metrics, labels,
                           lambda: self.connections.pop(tracked, None),
                           read_as="istio_tcp_sent_bytes",
                           written_as="istio_tcp_received_bytes")
        try:
            if isinstance(upstream, channels.StreamChannel):
                await hbone.relay(upstream, downstream)
            else:
                await channels.splice(downstream, upstream)
        finally:
            with contextlib.suppress(Exception):
                await upstream.close()
            await downstream.close()

    @staticmethod
    def _headers(source: Workload, client: tuple[str, int]) -> list[tuple[str, str]]:
        kind = source.workload_type.lower()
        facts = hbone.baggage(
            cluster_id=source.cluster_id or "Kubernetes", namespace=source.namespace,
            workload_name=source.workload_name or source.name,
            workload_type=kind if kind in ("deployment", "cronjob", "pod", "job") else "",
            service_name=source.canonical_name, revision=source.canonical_revision,
            region=source.locality.region, zone=source.locality.zone)
        return [("forwarded", hbone.forwarded(client)), ("baggage", facts),
                ("traceparent", hbone.traceparent())]

    def _flow(self, reporter: str, source: Workload | None, source_principal: str | None,
              destination: Workload | None, destination_principal: str | None,
              service: Any, mutual_tls: bool) -> Series:
        """The metrics series of a connection between these two."""
        return self.metrics.series(Flow(
            reporter, source, source_principal, destination, destination_principal,
            service_host=getattr(service, "hostname", "") if service else "",
            service_name=getattr(service, "name", "") if service else "",
            service_namespace=getattr(service, "namespace", "") if service else "",
            mutual_tls=mutual_tls).labels())

    # -- 15008 and 15006 ---------------------------------------------------------------

    async def _inbound_hbone(self, pod: Pod, request: hbone.TunnelRequest) -> Channel | int:
        target = inbound.hbone_target(self.state, request.authority, request.local[0])
        if isinstance(target, int):
            return target
        identity = request.peer_identities[0] if request.peer_identities else None
        found = await self._deliver(pod, request.peer, identity, target, mutual_tls=True)
        if isinstance(found, int):
            return found
        channel, labels, connection = found
        tracked = self.track(pod, "inbound", request.peer, target, identity,
                             self.identity(pod.info), "HBONE")
        self.authorized[tracked] = (pod, connection, channel.abort)
        # The server relays and closes it; what the client sends is received here.
        return _Open(channel, self.metrics, labels, lambda: self._forget(tracked),
                     read_as="istio_tcp_sent_bytes", written_as="istio_tcp_received_bytes")

    async def _inbound_plaintext(self, pod: Pod, conn: socket.socket) -> None:
        destination = original_destination(conn)
        if destination is None or destination[1] in (OUTBOUND, INBOUND_PLAINTEXT, INBOUND):
            return  # not redirected, or a self call (ztunnel's own ports)
        client = peer_of(conn)
        found = await self._deliver(pod, client, None, destination, mutual_tls=False)
        if not isinstance(found, int):
            app, labels, connection = found
            tracked = self.track(pod, "inbound", client, destination, None,
                                 self.identity(pod.info), "TCP")
            upstream = _Open(app, self.metrics, labels, lambda: self._forget(tracked),
                             read_as="istio_tcp_sent_bytes",
                             written_as="istio_tcp_received_bytes")
            downstream = await _tcp(conn)

            def abort() -> None:
                app.abort()
                downstream.abort()

            self.authorized[tracked] = (pod, connection, abort)
            try:
                await channels.splice(downstream, upstream)
            finally:
                await upstream.close()
                await downstream.close()

    async def _deliver(self, pod: Pod, client: tuple[str, int], identity: str | None,
                       target: tuple[str, int], mutual_tls: bool
                       ) -> tuple[SocketChannel, Series, l4_authz.Connection] | int:
        """Authorize a connection to the pod and connect it to the app: the app's channel,
        the series' labels and what was authorized, or the refusal's status (401 denied,
        503 unreachable)."""
        local = await self.workload_of(pod)
        if local is None:
            return 503
        source = self.state.workload_by_ip(client[0])
        connection = l4_authz.Connection(client[0], identity, target[0], target[1])
        verdict = l4_authz.authorize(self.state.policies_for(local), connection, local)
        labels = self._flow("destination", source, identity, local, self.identity(pod.info),
                            None, mutual_tls)
        if not verdict.allowed:
            log.info("pod %s/%s: connection from %s (%s) to port %d denied by %s",
                     pod.info.namespace, pod.info.name, client[0], identity or "no identity",
                     target[1], verdict.policy or "the ALLOW policies")
            self.metrics.add("istio_tcp_connections_failed", labels)
            return 401
        try:
            sock = await pod.dialer.connect(target, source=client[0])
        except OSError as exc:
            log.info("pod %s/%s: cannot reach the app on %s: %s", pod.info.namespace,
                     pod.info.name, target, exc)
            self.metrics.add("istio_tcp_connections_failed", labels)
            return 503
        return await _tcp(sock), labels, connection

    # -- ZDS: the node agent hands pods over (``ambient.zds.WorkloadHandler``) ------------

    async def add(self, uid: str, info: WorkloadInfo, netns_fd: int) -> None:
        try:
            listeners = await open_listeners(netns_fd)
            try:
                dns_sockets = await open_dns_sockets(netns_fd)
            except OSError:
                for sock in listeners.values():
                    sock.close()
                raise
        except OSError:
            os.close(netns_fd)
            raise
        await self.start_pod(Pod(uid, info, netns_fd, dns_sockets=dns_sockets), listeners)
        log.info("serving pod %s/%s (%s)", info.namespace, info.name, uid)

    async def keep(self, uid: str) -> None:
        if uid not in self.pods:
            log.info("pod %s kept by the node agent, but not held here", uid)

    async def delete(self, uid: str) -> None:
        pod = self.pods.get(uid)
        await self.stop_pod(uid)
        if pod is not None:
            log.info("no longer serving pod %s/%s", pod.info.namespace, pod.info.name)

    async def snapshot_sent(self, known: frozenset[str]) -> None:
        for uid in set(self.pods) - known:
            await self.delete(uid)
