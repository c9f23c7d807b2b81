"""The native proxy's event loop: listeners from LDS, HTTP/1.1 and HTTP/2 routing and TCP
proxying to the clusters from CDS and EDS.

A listener's socket is opened when LDS first names it and closed when LDS drops it; a
changed listener keeps its socket, new connections take the new config and connections
already open keep the one they started with, so a push never cuts a stream. Upstream
HTTP/1.1 connections are pooled per host and reused while idle for less than the cluster's
idle timeout (Envoy's hour when it sets none) and not closed by the upstream; HTTP/2 ones
carry many streams each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
from h2 import exceptions as h2_exceptions

from pilotfish.core import istio_metrics, metric_overrides, sniffing
from pilotfish.core.istio_requests import IstioSeries
from pilotfish.core.native import (
    access_log,
    channels,
    ext_authz,
    filter_state,
    hashing,
    http1,
    http1_codec,
    http2,
    http_filters,
    internal,
    rbac,
    routing,
    tls,
)
from pilotfish.core.native.bodies import (
    STREAM_OVER,
    BodyTooLarge,
    DownstreamGone,
    H2Answer,
    H2Body,
    body_received,
    collect_body,
    exchange_streamed,
    long_answer,
    read_h2_answer,
    send_h2_body,
)
from pilotfish.core.native.config import (
    Cluster,
    ConfigState,
    DirectResponse,
    Echo,
    Endpoint,
    HttpManager,
    Listener,
    TcpProxy,
)
from pilotfish.core.native.connection import Http1Connection, Result
from pilotfish.core.native.fast_path import FastServer
from pilotfish.core.native.forwarding import (
    Handed,
    Plan,
    Tried,
    UpstreamFailed,
    speaks_h2,
    try_limit,
)
from pilotfish.core.native.http2 import starts_h2
from pilotfish.core.native.pool import Connecting, Pool, UpstreamBody, pool_key
from pilotfish.core.native.sockets import (
    READ_SIZE,
    Accepted,
    UpstreamSource,
    accept_into,
    address_text,
    close_writer,
    connect_from,
    host_of,
    listening_socket,
    open_streams,
    original_destination,
    peek_first,
    peer_of,
    set_keepalive,
)
from pilotfish.core.native.stats import Stats
from pilotfish.core.native.telemetry import IstioCounts, Outcome
from pilotfish.core.native.upstreams import HASHED, Upstream

log = logging.getLogger("pilotfish.native")

DELAYED_CLOSE = 1.0  # Envoy's delayed_close_timeout default

NO_PEER = rbac.Facts()  # what a request tells of a connection nobody described
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
OVERFLOW = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
TIMEOUT = "upstream request timeout"


# What a request is answered with: the response, how it went, and for an upgrade the
# cluster and request to open the tunnel to (None otherwise).
Answered = tuple[http1.Message, Outcome, "tuple[Cluster, http1.Message] | None"]


def _bad_request(error: Exception) -> bytes:
    return http1_codec.response_bytes(http1.Message(
        [("content-type", "text/plain")], f"{error}\n".encode(), status=400),
        "Bad Request", close=True)


def _header_facts(edits: routing.HeaderEdits, peer: rbac.Facts) -> dict[str, str] | None:
    """What header values' %OPERATOR%s are filled with (None when no value has one)."""
    if not edits.formatted:
        return None
    def joined(host: str, port: int) -> str:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    local_host, local_port = peer.destination
    return {
        "DOWNSTREAM_REMOTE_ADDRESS": joined(peer.source, peer.source_port),
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": peer.source,
        "DOWNSTREAM_LOCAL_ADDRESS": joined(local_host, local_port),
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": local_host,
        "DOWNSTREAM_PEER_URI_SAN": ",".join(n for n in peer.principals if "://" in n),
        "DOWNSTREAM_LOCAL_URI_SAN": peer.identity, "HOSTNAME": socket.gethostname()}


# What the proxy sets on every answer from upstream, in place of the upstream's own (an
# upstream behind another proxy has them already): Envoy's router sets the first, its
# connection manager overwrites the second.
_SET_ON_ANSWERS = frozenset({"x-envoy-upstream-service-time", "server", ":status"})


def _answer_head(headers: Sequence[tuple[str, str]], decision: routing.Decision,
                 peer: rbac.Facts, added: Sequence[tuple[str, str]],
                 started: float) -> list[tuple[str, str]]:
    """An upstream answer's headers as they go downstream: the route's response edits,
    what the filters add, and the proxy's own."""
    head = [(k, v) for k, v in headers if k not in _SET_ON_ANSWERS]
    edits = decision.response_edits
    if edits.add or edits.remove:
        head = edits.apply(head, _header_facts(edits, peer))
    head += added
    head.append(("x-envoy-upstream-service-time",
                 str(int((time.monotonic() - started) * 1000))))
    head.append(("server", "istio-envoy"))
    return head


class _MatchedHeaders(Mapping[str, str]):
    """A request's headers and pseudo-headers as route matches read them, gathered only
    when a match reads one (most routes match on the path alone)."""

    __slots__ = ("_authority", "_found", "_request", "_scheme")

    def __init__(self, request: http1.Message, authority: str, scheme: str) -> None:
        self._request, self._authority, self._scheme = request, authority, scheme
        self._found: dict[str, str] | None = None

    def _all(self) -> dict[str, str]:
        if self._found is None:
            request = self._request
            self._found = {**dict(request.headers), ":method": request.method,
                           ":path": request.target, ":authority": self._authority,
                           ":scheme": self._scheme}
        return self._found

    def __getitem__(self, name: str) -> str:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


def _is_grpc(headers: Sequence[tuple[str, str]]) -> bool:
    return any(k == "content-type" and v.startswith("application/grpc") for k, v in headers)


def _streams_h2(headers: Sequence[tuple[str, str]]) -> bool:
    """Whether a request on an HTTP/2 stream is passed on as it comes: gRPC, and a body
    longer than the proxy collects."""
    if _is_grpc(headers):
        return True
    length = next((v for k, v in headers if k == "content-length"), "")
    return length.isdigit() and int(length) > STREAM_OVER


# a UUID's variant digit (10xx in binary) for a random hex digit
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _attributes(request: http1.Message, outcome: Outcome) -> dict[str, Any]:
    """Envoy's attributes of a finished request, for a Telemetry's CEL expressions."""
    headers = dict(request.headers)
    return metric_overrides.http_attributes(
        request.method, headers.get("host", ""), request.target, "http",
        headers.get("user-agent", ""), headers, outcome.status)


def _request_state(config: HttpManager, request: http1.Message, peer: rbac.Facts,
                   destination: tuple[str, int] | None) -> dict[str, filter_state.Value]:
    """What the connection manager's set_filter_state filter sets for one request."""
    state: dict[str, filter_state.Value] = {}
    if not config.state:
        return state
    authority = request.header("host") or (request.target if request.method == "CONNECT"
                                           else "")
    headers = {name: value for name, value in request.headers}
    headers[":authority"] = authority
    headers[":method"] = request.method
    uri = next((n for n in peer.principals if "://" in n), "")
    filter_state.apply_all(config.state, state, filter_state.Context(
        headers=headers, remote=address_text((peer.source, peer.source_port)),
        local=address_text(destination) if destination else "", peer_uri=uri,
        local_uri=peer.identity))
    return state


def peer_of_facts(peer: rbac.Facts | None) -> tuple[str, int]:
    return (peer.source, peer.source_port) if peer is not None else ("", 0)


def request_id(rng: random.Random) -> str:
    """A random (version 4) UUID for ``x-request-id``, drawn from the proxy's generator
    as Envoy draws its own: no system call per request, as ``uuid.uuid4`` makes. The
    version and variant are set on the text (a digit each), not on a 128-bit number."""
    text = rng.randbytes(16).hex()
    return (f"{text[:8]}-{text[8:12]}-4{text[13:16]}-{_VARIANT[text[16]]}{text[17:20]}-"
            f"{text[20:]}")


def _grpc_status(response: http1.Message) -> str:
    if not (response.header("content-type") or "").startswith("application/grpc"):
        return ""
    for name, value in (*response.trailers, *response.headers):
        if name == "grpc-status":
            return value
    return ""


class NativeProxy:
    def __init__(self, state: ConfigState, contexts: tls.Contexts | None = None,
                 sniffers: Sequence[sniffing.Sniffer] = (), reuse_port: bool = False,
                 worker: int = 0) -> None:
        self.state = state
        self.reuse_port = reuse_port  # listeners shared with other processes (SO_REUSEPORT)
        self.worker = worker  # which of them (Envoy's worker_N in per-worker stats)
        self.contexts = contexts or tls.Contexts()
        self.sniffers = list(sniffers)
        self._accepters: dict[str, asyncio.Task[None]] = {}
        self._connections: set[asyncio.Task[None]] = set()
        self.stats = Stats()
        self.counts = IstioCounts()  # Istio's standard metrics, counted as requests finish
        self.servers: dict[str, socket.socket] = {}
        self.bound: dict[str, tuple[str, int]] = {}
        self.upstreams: dict[str, Upstream] = {}  # by cluster: balancer, breaker, outlier
        # open upstream connections by cluster and host (what max_connections counts)
        self.open: dict[str, dict[tuple[str, int], set[Any]]] = {}  # writers, Connecting
        self._released: dict[str, list[asyncio.Future[None]]] = {}  # pending requests
        self.pool = Pool()
        self.h2_pool: dict[tuple[Any, ...], http2.Connection] = {}
        self.draining = False
        self.rng = random.Random()
        self._log_lines: list[str] = []  # access-log lines not yet written
        # HTTP/1.1 requests the callback path took (`fast_path`), and those of them it
        # handed to the serving task to finish (no pooled connection, a retry, ...)
        self.fast_taken = 0
        self.fast_handed = 0

    @property
    def istio(self) -> IstioSeries:
        """Istio's standard metrics of this process (what workers send the first)."""
        return self.counts.series

    # -- access logs ---------------------------------------------------------------------

    def log(self, format_: access_log.Format | None, entry: access_log.Entry) -> None:
        """One access-log line to stdout, held until ``flush_logs`` (every second, as
        Envoy's ``--file-flush-interval-msec``)."""
        if format_ is not None:
            self._log_lines.append(format_.render(entry))

    def flush_logs(self) -> None:
        lines, self._log_lines = self._log_lines, []
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.write("".join(lines))
            sys.stdout.flush()

    # -- listeners -----------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Open the sockets of new listeners, close those of removed ones. A listener that
        terminates TLS waits unbound until its certificates are there (Envoy's warming)."""
        wanted = {name: listener for name, listener in self.state.listeners.items()
                  if listener.bind}
        for name in [n for n in self.servers if n not in wanted
                     or self.bound[n] != (wanted[n].host, wanted[n].port)]:
            self._unbind(name)
        for name, listener in wanted.items():
            if name in self.servers or self.draining or not self._warm(listener):
                continue
            try:
                server = listening_socket(listener.host, listener.port, listener.transparent,
                                           self.reuse_port)
            except OSError as exc:
                log.error("listener %s: cannot bind %s:%d: %s", name, listener.host,
                          listener.port, exc)
                self.stats.inc("listener_manager.listener_create_failure")
                continue
            self.servers[name] = server
            self.bound[name] = (listener.host, listener.port)
            self._accepters[name] = asyncio.get_running_loop().create_task(
                self._accept(name, server))
        self.stats.gauges["listener_manager.total_listeners_active"] = len(self.servers)

    def _warm(self, listener: Listener) -> bool:
        chains = (*listener.chains, *((listener.default,) if listener.default else ()))
        for chain in chains:
            if chain.tls is not None and not chain.transport:  # a TLS-only listener
                try:
                    self.contexts.server(chain.tls, self.state)
                except tls.Missing:
                    return False
        return True

    def _unbind(self, name: str) -> None:
        server = self.servers.pop(name)
        self.bound.pop(name, None)
        accepter = self._accepters.pop(name, None)
        if accepter is not None:
            accepter.cancel()
        server.close()

    def drain(self) -> None:
        """Stop accepting (Envoy's /drain_listeners); open connections finish."""
        self.draining = True
        for name in list(self.servers):
            self._unbind(name)

    async def _accept(self, name: str, server: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(server)
            except OSError as exc:
                log.warning("listener %s: accept failed: %s", name, exc)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            task = loop.create_task(self._connection(name, conn))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    def _handoff(self, destination: tuple[str, int]) -> Listener | None:
        """The listener a virtualOutbound connection belongs to: the one bound (in name
        only) to its original destination, exact address first, then 0.0.0.0."""
        found = None
        for listener in self.state.listeners.values():
            if listener.bind or listener.port != destination[1]:
                continue
            if listener.host == destination[0]:
                return listener
            if listener.host in ("0.0.0.0", "::"):
                found = listener
        return found

    async def _connection(self, name: str, conn: socket.socket,
                          handoff: internal.Handoff | None = None) -> None:
        writer: asyncio.StreamWriter | Http1Connection | None = None
        try:
            listener = self.state.listeners.get(name)
            if listener is None or (handoff is not None) != listener.internal:
                return
            state: dict[str, filter_state.Value] = {}
            metadata: filter_state.Metadata = {}
            if handoff is not None:  # an internal connection: its addresses came along
                state, metadata = dict(handoff.state), handoff.metadata
                restored_local, restored_remote = handoff.restored()
                destination = restored_local or ("", 0)
                source = restored_remote or handoff.source
            else:
                source = peer_of(conn)
                local = conn.getsockname()
                destination = (str(local[0]), int(local[1]))
                if listener.use_original_dst or listener.original_dst:
                    destination = original_destination(conn) or destination
                if listener.use_original_dst:
                    listener = self._handoff(destination) or listener
            # original_src: this connection's upstream connections leave from its client
            origin = UpstreamSource(source[0], listener.original_src_mark) \
                if listener.original_src else None
            stat = f"listener.{listener.name}" if listener.internal else \
                f"listener.{listener.host}_{listener.port}"
            self.stats.inc(f"{stat}.downstream_cx_total")
            self.stats.inc(f"{stat}.worker_{self.worker}.downstream_cx_total")
            if handoff is not None and not self._may_take(listener, destination, source):
                self.stats.inc(f"{stat}.no_filter_chain_match")
                handoff.answer(False)
                return
            if handoff is not None:
                # The connecting side may wait for bytes only after this (a CONNECT's
                # answer), so an inspector's peek must not hold the verdict.
                handoff.answer(True)
            accepted = await self._inspect(listener, conn, destination)
            chain = listener.chain(destination[1], accepted.server_name, accepted.transport,
                                   accepted.alpn, destination[0], source)
            if chain is None or isinstance(chain.network, DirectResponse):
                if chain is not None and isinstance(chain.network, DirectResponse) and \
                        chain.network.body:
                    await asyncio.get_running_loop().sock_sendall(conn, chain.network.body)
                self.stats.inc(f"{stat}.no_filter_chain_match")
                return
            if chain.state:
                filter_state.apply_all(chain.state, state, filter_state.Context(
                    remote=address_text(source), local=address_text(destination),
                    metadata=metadata))
            context = None
            if chain.tls is not None:
                try:
                    context = self.contexts.server(chain.tls, self.state)
                except tls.Missing:
                    return
            if isinstance(chain.network, HttpManager):  # parsed as it arrives
                parser = http1_codec.Parser()
                parser.stream_over = STREAM_OVER  # longer uploads pass on as they come
                http = Http1Connection(parser, raw=True)
                await accept_into(conn, context, http)
                writer = http
            else:
                reader, writer = await open_streams(conn, context)
            if context is not None:
                self.stats.inc(f"{stat}.ssl.handshake")
            ssl_object = writer.get_extra_info("ssl_object")
            names = tls.peer_names(ssl_object)
            if chain.tls is not None and chain.tls.client is not None and \
                    not chain.tls.client.names_match(names):
                self.stats.inc(f"{stat}.ssl.fail_verify_san")
                return
            remote = writer.get_extra_info("peername")
            if handoff is not None:
                remote = source
            peer = rbac.Facts(
                host_of(remote), int(remote[1]) if isinstance(remote, tuple) else 0,
                destination=destination,
                filter_state={key: value.value for key, value in state.items()},
                principals=tuple(names),
                authenticated=ssl_object is not None and ssl_object.getpeercert() is not None,
                server_name=accepted.server_name,
                identity=self.contexts.identity(chain.tls.secret, self.state)
                if chain.tls is not None else "")
            if not self._guarded(chain.guards, peer):
                return
            if isinstance(writer, Http1Connection):
                assert isinstance(chain.network, HttpManager)
                await self._http(chain.network, writer,
                                 "https" if context is not None else "http", destination, peer,
                                 origin)
            elif isinstance(chain.network, Echo):
                echo = channels.TcpChannel(reader, writer)
                await channels.pipe(echo, echo)
            elif isinstance(chain.network, TcpProxy):
                network = chain.network
                if chain.sni_cluster and accepted.server_name:
                    network = attrs.evolve(network, cluster=accepted.server_name)
                await self._tcp(network, reader, writer, destination, peer, origin, state)
        except (ConnectionError, OSError, ssl.SSLError, TimeoutError):
            pass
        except Exception:  # one connection's bug must not take the proxy down
            log.exception("listener %s: connection failed", name)
        finally:
            if handoff is not None:
                handoff.answer(False)  # failed before its verdict: refused
            if writer is not None:
                await close_writer(writer)
            else:
                conn.close()

    @staticmethod
    def _may_take(listener: Listener, destination: tuple[str, int],
                  source: tuple[str, int]) -> bool:
        """Whether some chain other than a refusal could take a connection, whatever its
        first bytes turn out to be (an internal listener answers before it reads them)."""
        for transport, alpn in (("", ()), ("raw_buffer", ("http/1.1",)),
                                ("raw_buffer", ("h2c",))):
            chain = listener.chain(destination[1], "", transport, alpn, destination[0], source)
            if chain is not None and not isinstance(chain.network, DirectResponse):
                return True
        return False

    def _guarded(self, guards: Sequence[rbac.Filter], peer: rbac.Facts) -> bool:
        """The network RBAC filters' verdict on a new connection (denied: closed)."""
        for guard in guards:
            allowed, counters = guard.decide(peer)
            for counter in counters:
                self.stats.inc(counter)
            if not allowed:
                return False
        return True

    async def _inspect(self, listener: Listener, conn: socket.socket,
                       destination: tuple[str, int]) -> Accepted:
        """What the listener filters learn from the first bytes (peeked, not consumed)."""
        wanted = {i.protocol for i in listener.inspectors if i.applies(destination[1])}
        sniffers = [s for s in self.sniffers if
                    (sniffing.TLS in s.protocols and "tls" in wanted) or
                    (sniffing.TLS not in s.protocols and "http" in wanted)]
        if not sniffers:
            return Accepted()
        def enough(data: bytes) -> bool:
            return sniffing.detect(sniffers, data).verdict is not sniffing.Verdict.NEED_MORE

        prefix = await peek_first(conn, sniffing.read_bound(sniffers), enough)
        found = sniffing.detect(sniffers, prefix, complete=True)
        if found.protocol == sniffing.TLS:
            return Accepted("tls", found.alpn, found.server_name)
        if found.detected:
            return Accepted("raw_buffer", (found.protocol,))
        return Accepted()

    # -- TCP -----------------------------------------------------------------------------

    async def _tcp(self, config: TcpProxy, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter,
                   destination: tuple[str, int] | None = None,
                   peer: rbac.Facts | None = None, origin: UpstreamSource | None = None,
                   state: filter_state.State | None = None) -> None:
        cluster = self.state.clusters.get(config.cluster)
        if cluster is None:
            self.stats.inc(f"tcp.{config.stat_prefix}.downstream_cx_no_route")
            return
        key = hashing.request_key(config.hash_policy, (), source=address_text(
            writer.get_extra_info("peername"))).hash if cluster.lb in HASHED else None
        authority = config.tunnel if config.tunnel_render is None else \
            config.tunnel_render(filter_state.Context(
                local=address_text(destination) if destination else "",
                remote=address_text(peer_of_facts(peer))))
        up_writer: asyncio.StreamWriter | None = None
        try:
            if config.tunnel and cluster.protocol == "h2":
                # a stream of a pooled HTTP/2 connection, as Envoy's tunnels share them
                connection, upstream = await self._h2_connection(
                    cluster, set(), destination, origin=origin, shared=state)
                upstream_channel: channels.Channel = channels.StreamChannel(
                    connection, await connection.connect(authority))
            else:
                up_reader, up_writer, upstream = await self._connect(
                    cluster, set(), destination, hash_key=key, origin=origin, shared=state,
                    client=peer_of_facts(peer))
                upstream_channel = channels.TcpChannel(up_reader, up_writer)
        except UpstreamFailed:
            return
        except (OSError, ConnectionError, http2.StreamError) as exc:
            log.debug("tunnel to %s through %s: %s", authority, cluster.name, exc)
            self.stats.inc(f"cluster.{cluster.name}.upstream_cx_connect_fail")
            self._release(cluster.name)
            return
        if config.tunnel and up_writer is not None:
            try:
                upstream_channel = await self._open_tunnel(cluster, up_reader, up_writer,
                                                           authority)
            except (UpstreamFailed, OSError, ConnectionError, http2.StreamError) as exc:
                log.debug("tunnel to %s through %s: %s", authority, cluster.name, exc)
                self.stats.inc(f"cluster.{cluster.name}.upstream_cx_connect_fail")
                await close_writer(up_writer)
                self._release(cluster.name)
                return
        stat = f"cluster.{cluster.name}"
        started = time.time()
        moved = [0, 0]  # received from downstream, sent to it

        def received(n: int) -> None:
            moved[0] += n
            self.stats.inc(f"{stat}.upstream_cx_tx_bytes_total", n)

        def sent(n: int) -> None:
            moved[1] += n
            self.stats.inc(f"{stat}.upstream_cx_rx_bytes_total", n)

        metrics = config.logging.metrics
        self.counts.tcp(cluster.name, metrics, opened=True, peer=peer)
        try:
            await channels.splice(channels.TcpChannel(reader, writer), upstream_channel,
                                  received, sent)
        finally:
            if up_writer is not None:
                await close_writer(up_writer)
            elif isinstance(upstream_channel, channels.StreamChannel):
                await upstream_channel.close()  # the stream only: its connection is pooled
            self._release(cluster.name)
            self.counts.tcp(cluster.name, metrics, received=moved[0], sent=moved[1],
                           peer=peer)
            self.log(config.logging.access if not config.logging.access_when else None,
                     access_log.Entry(
                started, received=moved[0], sent=moved[1],
                duration_ms=int((time.time() - started) * 1000), cluster=cluster.name,
                upstream=f"{upstream[0]}:{upstream[1]}",
                downstream_remote=address_text(writer.get_extra_info("peername")),
                downstream_local=address_text(writer.get_extra_info("sockname"))))

    async def _open_tunnel(self, cluster: Cluster, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter, authority: str) -> channels.Channel:
        """``CONNECT authority`` over a new upstream connection (Envoy's tunneling_config):
        an HTTP/2 stream for an HTTP/2 cluster, else HTTP/1.1; the tunnel once answered 2xx."""
        if cluster.protocol == "h2":
            connection = http2.Connection(reader, writer, client=True)
            connection.run()
            return channels.StreamChannel(connection, await connection.connect(authority))
        writer.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        await writer.drain()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise UpstreamFailed(f"CONNECT {authority}: no answer ({exc})", sent=True) \
                from None
        status = head.split(b" ", 2)[1:2]
        if not status or not status[0].startswith(b"2"):
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            raise UpstreamFailed(f"CONNECT {authority}: {line}", sent=True)
        return channels.TcpChannel(reader, writer)  # bytes past the head stay buffered

    # -- clusters: picking hosts, breakers, outlier detection --------------------------------

    def _upstream(self, cluster: Cluster) -> Upstream:
        """The cluster's balancer, breaker and detector (new ones when it changed)."""
        found = self.upstreams.get(cluster.name)
        if found is not None and found.cluster is cluster:
            return found
        if found is None or found.cluster != cluster:
            found = self.upstreams[cluster.name] = Upstream.of(cluster, self.rng)
        found.cluster = cluster  # the same cluster pushed again: compared once, not per request
        return found

    def _pick(self, cluster: Cluster, avoid: set[tuple[str, int]],
              destination: tuple[str, int] | None,
              hash_key: int | None = None, upstream: Upstream | None = None
              ) -> Endpoint | None:
        """``upstream``: the cluster's, when the caller has it already."""
        if cluster.kind == "ORIGINAL_DST":
            if destination is None:
                return None
            return Endpoint(destination[0], cluster.port_override or destination[1])
        return (upstream or self._upstream(cluster)).pick(
            self.state.endpoints_of(cluster), time.monotonic(), avoid, self.rng, hash_key)

    def _open_count(self, cluster: str, host: tuple[str, int]) -> tuple[int, int]:
        """Open connections of the cluster, and to ``host``, forgetting closed ones."""
        total = mine = 0
        hosts = self.open.get(cluster, {})
        for key in list(hosts):
            writers = hosts[key]
            writers -= {w for w in writers if w.is_closing()}
            if not writers:
                del hosts[key]
            total += len(writers)
            if key == host:
                mine = len(writers)
        return total, mine

    def _release(self, cluster: str) -> None:
        """A connection or request came free: pending requests look again."""
        for waiter in self._released.pop(cluster, ()):
            if not waiter.done():
                waiter.set_result(None)

    async def _wait_connection(self, cluster: Cluster, upstream: Upstream,
                               endpoint: Endpoint, origin: UpstreamSource | None = None
                               ) -> Http1Connection | None:
        """Wait, as a pending request, until the breaker lets ``endpoint`` have a
        connection: an idle one of its own (returned), or room for a new one (None)."""
        host = (endpoint.host, endpoint.port)
        counted = False
        while not upstream.breaker.may_connect(*self._open_count(cluster.name, host)):
            if not counted:
                self.stats.inc(f"cluster.{cluster.name}.upstream_cx_overflow")
                counted = True
            if not upstream.breaker.start_pending():
                self.stats.inc(f"cluster.{cluster.name}.upstream_rq_pending_overflow")
                raise UpstreamFailed(OVERFLOW, sent=False, flag="UO")
            waiter = asyncio.get_running_loop().create_future()
            self._released.setdefault(cluster.name, []).append(waiter)
            try:
                await waiter
            finally:
                upstream.breaker.end_pending()
            pooled = self.pool.take(pool_key(cluster.name, host, origin), cluster.idle_timeout)
            if pooled is not None:
                return pooled
        return None

    def _outlier(self, cluster: Cluster, host: tuple[str, int], status: int = 0,
                 failed: str = "") -> None:
        """Tell outlier detection how a request to ``host`` went: its status, or a local
        failure ("connect", "reset", "timeout"; "" with no status: connected)."""
        upstream = self.upstreams.get(cluster.name)
        detector = upstream.detector if upstream is not None else None
        if detector is None or cluster.kind == "ORIGINAL_DST":
            return
        size = len(self.state.endpoints_of(cluster))
        now = time.monotonic()
        if status:
            detector.http_status(host, status, now, size)
        elif failed:
            detector.local_failure(host, now, size, timeout=failed == "timeout")
        else:
            detector.local_success(host)
        prefix = f"cluster.{cluster.name}.outlier_detection"
        for name, value in detector.statistics().items():
            if name == "ejections_active":
                self.stats.gauges[f"{prefix}.{name}"] = value
            else:
                self.stats.counters[f"{prefix}.{name}"] = value

    def refresh_gauges(self) -> None:
        """The circuit breakers' gauges, brought up to date when they are read (not on
        every request)."""
        for name, upstream in self.upstreams.items():
            total = sum(len(w) for w in self.open.get(name, {}).values())
            prefix = f"cluster.{name}.circuit_breakers.default"
            for gauge, value in upstream.breaker.statistics(total).items():
                self.stats.gauges[f"{prefix}.{gauge}"] = value

    async def _connect(self, cluster: Cluster, avoid: set[tuple[str, int]],
                       destination: tuple[str, int] | None = None,
                       endpoint: Endpoint | None = None, hash_key: int | None = None,
                       origin: UpstreamSource | None = None,
                       shared: filter_state.State | None = None,
                       client: tuple[str, int] = ("", 0)
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, tuple[str, int]]:
        """A connection to a host of ``cluster``. ``shared``: the downstream's filter state
        (an internal listener gets what of it is shared with the upstream; the upstream TLS
        checks the SAN ``envoy.network.upstream_subject_alt_names`` names); ``client``:
        the downstream's address (an internal listener's client when nothing restores it)."""
        endpoint = endpoint or self._pick(cluster, avoid, destination, hash_key)
        if endpoint is None:
            self.stats.inc(f"cluster.{cluster.name}.upstream_cx_none_healthy")
            raise UpstreamFailed("no healthy upstream", sent=False)
        if endpoint.internal:
            return await self._connect_internal(cluster, endpoint, shared or {}, client)
        upstream = self._upstream(cluster)
        if not upstream.breaker.may_connect(*self._open_count(
                cluster.name, (endpoint.host, endpoint.port))):
            self.stats.inc(f"cluster.{cluster.name}.upstream_cx_overflow")
            raise UpstreamFailed(OVERFLOW, sent=False, flag="UO")
        host = (endpoint.host, endpoint.port)
        avoid.add(host)
        self.stats.inc(f"cluster.{cluster.name}.upstream_cx_total")
        origination = cluster.origination(endpoint)
        options: dict[str, Any] = {}
        if origination is not None:
            try:
                options["ssl"] = self.contexts.client(origination, self.state)
            except tls.Missing as exc:
                raise UpstreamFailed(f"upstream TLS: no secret {exc} yet", sent=False) from None
            # No SNI to send: the host's address names it, or, on a socket already bound
            # to the client's address (original_src, below), "" says there is none.
            options["server_hostname"] = origination.sni or (None if origin is None else "")
        source = origin
        if cluster.bind_address and source is None:  # original_src wins, as on Envoy
            options["local_addr"] = (cluster.bind_address, 0)
        connecting = Connecting()
        opened = self.open.setdefault(cluster.name, {}).setdefault(host, set())
        opened.add(connecting)
        try:
            if source is not None:
                sock = await asyncio.wait_for(connect_from(source, host),
                                              cluster.connect_timeout)
                opening = asyncio.open_connection(sock=sock, limit=READ_SIZE, **options)
            else:
                opening = asyncio.open_connection(endpoint.host, endpoint.port,
                                                  limit=READ_SIZE, **options)
            reader, writer = await asyncio.wait_for(opening, cluster.connect_timeout)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self.stats.inc(f"cluster.{cluster.name}.upstream_cx_connect_fail")
            self._outlier(cluster, host, failed="connect")
            opened.discard(connecting)
            self._release(cluster.name)  # its place is free again
            raise UpstreamFailed("upstream connect error or disconnect/reset before "
                                 f"headers. reset reason: connection failure ({exc})",
                                 sent=False) from None
        finally:
            connecting.done = True
            opened.discard(connecting)
        opened.add(writer)
        wanted_san = filter_state.shared_value(shared or {}, filter_state.UPSTREAM_SANS)
        shown = tls.peer_names(writer.get_extra_info("ssl_object")) \
            if origination is not None else []
        if origination is not None and (not origination.server.names_match(shown) or (
                wanted_san and wanted_san not in shown)):
            writer.close()
            self.stats.inc(f"cluster.{cluster.name}.ssl.fail_verify_san")
            raise UpstreamFailed("upstream connect error or disconnect/reset before headers. "
                                 "reset reason: TLS error: certificate SAN mismatch",
                                 sent=False)
        if origination is not None:
            self.stats.inc(f"cluster.{cluster.name}.ssl.handshake")
        self._outlier(cluster, host)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if cluster.keepalive is not None:
                    set_keepalive(sock, cluster.keepalive)
        return reader, writer, host

    async def _connect_internal(self, cluster: Cluster, endpoint: Endpoint,
                                shared: filter_state.State, source: tuple[str, int]
                                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                           tuple[str, int]]:
        """A connection to one of this proxy's internal listeners (`internal`): served by
        that listener in this process, once it has a chain for it."""
        host = (endpoint.host, endpoint.port)
        self.stats.inc(f"cluster.{cluster.name}.upstream_cx_total")
        listener = self.state.listeners.get(endpoint.internal)
        if listener is None or not listener.internal:
            self.stats.inc(f"cluster.{cluster.name}.upstream_cx_connect_fail")
            raise UpstreamFailed("upstream connect error or disconnect/reset before headers. "
                                 f"reset reason: no internal listener {endpoint.internal}",
                                 sent=False)
        handoff = internal.handoff(cluster, endpoint, shared, source)
        mine, theirs = internal.pair()
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._connection(listener.name, theirs, handoff))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        if not await handoff.wait_accepted(cluster.connect_timeout):
            mine.close()
            self.stats.inc(f"cluster.{cluster.name}.upstream_cx_connect_fail")
            raise UpstreamFailed("upstream connect error or disconnect/reset before headers. "
                                 "reset reason: remote connection failure", sent=False)
        reader, writer = await asyncio.open_connection(sock=mine, limit=READ_SIZE)
        self.open.setdefault(cluster.name, {}).setdefault(host, set()).add(writer)
        return reader, writer, host

    # -- HTTP ----------------------------------------------------------------------------

    async def _http(self, config: HttpManager, connection: Http1Connection,
                    scheme: str = "http", destination: tuple[str, int] | None = None,
                    peer: rbac.Facts | None = None, origin: UpstreamSource | None = None) -> None:
        first = b""
        while starts_h2(first) is None:
            data = await connection.first(len(first) + 1)
            if len(data) == len(first):
                return  # closed before saying anything
            first = data
        if starts_h2(first):
            reader, writer = connection.streams()
            await self._http2(config, reader, writer, scheme, destination, peer, b"", origin)
            return
        connection.parse()
        total = f"http.{config.stat_prefix}.downstream_rq_total"
        remote = address_text(connection.get_extra_info("peername"))
        local = address_text(connection.get_extra_info("sockname"))
        # Plain requests are served from the connection's callbacks while this task
        # waits; it serves what they leave (`fast_path`).
        fast = FastServer(self, config, connection, scheme, destination, peer, origin,
                          remote, local)
        while True:
            connection.serve = fast
            connection.pump()  # what is parsed already: the first request, pipelined ones
            try:
                request = await connection.next()
            except http1.ParseError as exc:
                connection.write(_bad_request(exc))
                return
            finally:
                connection.serve = None
            if request is None:
                return
            handed = connection.take_handed()
            assert handed is None or isinstance(handed, Handed)
            if handed is None:
                self.stats.inc(total)
                started = time.time()
            else:
                started = handed.started
            outcome = await self._exchange(config, request, connection, scheme,
                                           destination, peer or NO_PEER, origin, handed)
            connection.busy = False
            self._finished(config, request, outcome, started, remote, local, peer)
            if connection.parser.streaming:  # the rest of an upload nobody read
                await connection.linger(DELAYED_CLOSE)
                return
            if not outcome.keep or not request.keep_alive:
                return

    def _table(self, config: HttpManager) -> routing.RouteTable | None:
        return config.inline or self.state.routes.get(config.route_name)

    async def _exchange(self, config: HttpManager, request: http1.Message,
                        connection: Http1Connection, scheme: str = "http",
                        destination: tuple[str, int] | None = None,
                        peer: rbac.Facts = NO_PEER, origin: UpstreamSource | None = None,
                        handed: Handed | None = None) -> Outcome:
        """Answer one HTTP/1.1 request (an upgrade becomes a tunnel); ``handed``: one the
        callback path began."""
        response, outcome, upgrade = await self._respond(config, request, scheme,
                                                         destination, peer, origin=origin,
                                                         handed=handed)
        if upgrade is not None:
            await self._upgrade(*upgrade, *connection.streams(), destination, origin)
            return outcome
        if response.body_source is not None:
            return await self._stream_answer(connection, response, outcome)
        # an upload answered before it was all read: the connection ends with the answer
        connection.write(http1_codec.response_bytes(response, "", request.method == "HEAD",
                                                    close=connection.parser.streaming))
        if connection.must_drain:
            await connection.drain()
        return outcome

    @staticmethod
    async def _stream_answer(connection: Http1Connection, response: http1.Message,
                             outcome: Outcome) -> Outcome:
        """A streamed answer passed on as it comes: its length kept when the upstream gave
        one, else chunked. One that breaks off closes the downstream connection too (the
        only way HTTP/1.1 can say so)."""
        source = response.body_source
        assert source is not None
        head, chunked = http1_codec.streamed_head(response)
        connection.write(head)
        sent = 0
        try:
            while data := await source.chunk():
                sent += len(data)
                connection.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
                await connection.drain()
            if chunked:
                connection.write(b"0\r\n\r\n")
            await connection.drain()
        except (OSError, EOFError, http1.ParseError):
            source.close()
            # the client went away (Envoy's DC), or the upstream's body broke off (UPE)
            outcome.flags = "DC" if connection.is_closing() else "UPE"
            outcome.keep = False
        outcome.sent = sent
        return outcome

    async def _http2(self, config: HttpManager, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, scheme: str,
                     destination: tuple[str, int] | None, peer: rbac.Facts | None,
                     received: bytes, origin: UpstreamSource | None = None) -> None:
        """Serve an HTTP/2 connection (h2c, or h2 by ALPN): each stream one request."""
        connection = http2.Connection(reader, writer, client=False)
        prefix = config.stat_prefix
        remote = address_text(writer.get_extra_info("peername"))
        local = address_text(writer.get_extra_info("sockname"))

        async def handle(stream: http2.Stream) -> None:
            request = http2.request_message(stream)
            self.stats.inc(f"http.{prefix}.downstream_rq_total")
            self.stats.inc(f"http.{prefix}.downstream_rq_http2_total")
            started = time.time()
            streamed = (connection, stream) if stream.tunnel is not None and \
                request.method != "CONNECT" else None
            response, outcome, tunnel = await self._respond(config, request, scheme,
                                                            destination, peer or NO_PEER,
                                                            streamed, origin)
            if tunnel is not None:
                outcome = await self._terminate(
                    connection, stream, tunnel[0], outcome, destination, origin,
                    _request_state(config, request, peer or NO_PEER, destination))
            elif response.body_source is not None:
                await self._stream_answer_h2(connection, stream, response, outcome)
            elif not outcome.streamed:
                await connection.respond(stream.id, response, request.method == "HEAD")
            self._finished(config, request, outcome, started, remote, local, peer)

        # gRPC goes on message by message (streams may never end), and long uploads as
        # they come; the rest whole
        connection.streamed = _streams_h2

        self.stats.inc(f"http.{prefix}.downstream_cx_http2_total")
        await connection.serve(handle, received)

    @staticmethod
    async def _stream_answer_h2(connection: http2.Connection, stream: http2.Stream,
                                response: http1.Message, outcome: Outcome) -> None:
        """A streamed answer from an HTTP/1.1 upstream on an HTTP/2 stream, as it comes;
        one that breaks off resets the stream."""
        source = response.body_source
        assert source is not None
        head = [(k, v) for k, v in response.headers if k not in http1.HOP_BY_HOP]
        try:
            await connection.accept(stream.id, response.status, head)
            while data := await source.chunk():
                outcome.sent += len(data)
                await connection.write(stream.id, data)
            await connection.finish(stream.id)
        except http2.StreamError:  # the client reset the stream (Envoy's DR)
            source.close()
            outcome.flags = "DR"
        except (OSError, EOFError, http1.ParseError):
            source.close()
            outcome.flags = "UPE"
            connection.end(stream.id, reset=True)
        finally:
            connection.release(stream.id)

    async def _relay(self, config: HttpManager, cluster: Cluster, request: http1.Message,
                     decision: routing.Decision, added: Sequence[tuple[str, str]],
                     flags: str, started: float, peer: rbac.Facts,
                     connection: http2.Connection, stream: http2.Stream,
                     origin: UpstreamSource | None = None) -> Answered:
        """A streamed request (gRPC) to an HTTP/2 cluster: its messages upstream and the
        answer's back as they come, head, data and trailers, with no retry (what was sent
        cannot be sent again). It counts against the cluster's circuit breaker and tells
        outlier detection how it went, as a request collected whole does."""
        route = decision.route.name
        state = self._upstream(cluster)
        if not state.breaker.start_request():
            self.stats.inc(f"cluster.{cluster.name}.upstream_rq_pending_overflow")
            return self._local(config, routing.Respond(503, OVERFLOW.encode()), cluster.name,
                               "UO", route)
        try:
            return await self._relay_stream(config, cluster, request, decision, added, flags,
                                            started, peer, connection, stream, origin)
        finally:
            state.breaker.end_request()
            self._release(cluster.name)

    async def _relay_stream(self, config: HttpManager, cluster: Cluster,
                            request: http1.Message, decision: routing.Decision,
                            added: Sequence[tuple[str, str]], flags: str, started: float,
                            peer: rbac.Facts, connection: http2.Connection,
                            stream: http2.Stream, origin: UpstreamSource | None = None) -> Answered:
        route = decision.route.name
        try:
            upstream, host = await self._h2_connection(cluster, set(), None, origin=origin)
            out = upstream.open(request, "https" if cluster.origination(None) else "http")
        except (UpstreamFailed, http2.StreamError, OSError) as exc:
            return self._local(config, routing.Respond(503, str(exc).encode()), cluster.name,
                               "UF", route)
        balancer = self._upstream(cluster).balancer
        balancer.started(host)
        sent = [0]
        status = ""

        async def upward() -> None:
            try:
                while data := await connection.read(stream):
                    await upstream.write(out.id, data)
                if stream.error:
                    upstream.end(out.id, reset=True)
                else:
                    await upstream.finish(out.id, stream.trailers)
            except http2.StreamError:
                upstream.end(out.id, reset=True)

        pumping = asyncio.get_running_loop().create_task(upward())
        try:
            await out.responded.wait()
            status = out.pseudo(":status")
            if out.error or not status.isdigit():
                pumping.cancel()
                self._outlier(cluster, host, failed="reset")
                return self._local(config, routing.Respond(503, out.error.encode()),
                                   cluster.name, "UF", route)
            self._outlier(cluster, host, status=int(status))
            head = _answer_head(out.headers, decision, peer, added, started)
            assert out.tunnel is not None
            only_head = out.ended.is_set() and out.tunnel.qsize() == 1  # trailers-only
            await connection.accept(stream.id, int(status), head, end=only_head)
            if not only_head:
                while data := await upstream.read(out):
                    sent[0] += len(data)
                    await connection.write(stream.id, data)
                if out.error:
                    connection.end(stream.id, reset=True)
                else:
                    await connection.finish(stream.id, out.trailers)
            await pumping
        except http2.StreamError:
            connection.end(stream.id, reset=True)
            upstream.end(out.id, reset=True)
        finally:
            pumping.cancel()
            upstream.release(out.id)
            connection.release(stream.id)
            balancer.finished(host)
        code = int(status) if status.isdigit() else 502
        self.stats.request_done(cluster.name, config.stat_prefix, code)
        grpc = next((v for k, v in (*out.trailers, *out.headers) if k == "grpc-status"), "")
        return (http1.Message([], status=code),
                Outcome(code, cluster.name, address_text(host), sent[0], route=route,
                        flags=flags, grpc_status=grpc, streamed=True), None)

    async def _terminate(self, connection: http2.Connection, stream: http2.Stream,
                         cluster: Cluster, outcome: Outcome,
                         destination: tuple[str, int] | None,
                         origin: UpstreamSource | None = None,
                         shared: filter_state.State | None = None) -> Outcome:
        """An HTTP/2 CONNECT ended here: its stream's payload to and from the cluster
        (``shared``: the filter state the request set, for an internal listener)."""
        try:
            up_reader, up_writer, host = await self._connect(cluster, set(), destination,
                                                             origin=origin, shared=shared)
        except UpstreamFailed as exc:
            await connection.accept(stream.id, 503, [("content-type", "text/plain")])
            connection.release(stream.id)
            return attrs.evolve(outcome, status=503, flags="UF", upstream=str(exc))
        try:
            await connection.accept(stream.id)
            await channels.splice(channels.StreamChannel(connection, stream),
                                  channels.TcpChannel(up_reader, up_writer))
        finally:
            await close_writer(up_writer)
            connection.release(stream.id)
        return attrs.evolve(outcome, upstream=address_text(host))

    def _finished(self, config: HttpManager, request: http1.Message, outcome: Outcome,
                  started: float, remote: str, local: str, peer: rbac.Facts | None) -> None:
        """One request done: the access log and Istio's metrics."""
        seconds = time.time() - started
        received = body_received(request)
        logging = config.logging
        attributes = _attributes(request, outcome) \
            if logging.access_when or logging.metrics.tags else {}
        if logging.access is not None and (not logging.access_when or all(
                metric_overrides.passes(e, attributes) for e in logging.access_when)):
            # (positional, in the fields' order: named, they cost a third more)
            self._log_lines.append(logging.access.render(access_log.Entry(
                started, request.method, request.target, f"HTTP/{request.version}",
                outcome.status, outcome.flags, "-", received, outcome.sent,
                int(seconds * 1000), outcome.cluster, outcome.upstream, remote, local, "",
                outcome.route, request.headers)))
        self.counts.request(outcome, received, seconds, peer, request,
                           logging.metrics, attributes)

    def _route(self, config: HttpManager, request: http1.Message, scheme: str
               ) -> routing.Decision | None:
        """The route ``request`` takes (None: no route matches)."""
        connect = request.method == "CONNECT"  # routed with no path (connect_matcher)
        authority = request.header("host") or (request.target if connect else "")
        table = self._table(config)
        if table is None:
            return None
        return table.route(authority, "" if connect else request.target,
                           _MatchedHeaders(request, authority, scheme))

    async def _respond(self, config: HttpManager, request: http1.Message,
                       scheme: str = "http", destination: tuple[str, int] | None = None,
                       peer: rbac.Facts = NO_PEER,
                       streamed: tuple[http2.Connection, http2.Stream] | None = None,
                       origin: UpstreamSource | None = None, handed: Handed | None = None
                       ) -> Answered:
        """What to answer one request with, whichever protocol carried it; an upgrade
        (WebSocket) comes back as the cluster and request to open the tunnel to.
        ``handed``: one the callback path routed already, perhaps tried once."""
        if handed is not None:
            plan = handed.plan
        else:
            planned = await self._filter_and_plan(config, request, scheme, peer, origin)
            if not isinstance(planned, Plan):
                return planned
            plan = planned
        cluster, outgoing, action = plan.cluster, plan.outgoing, plan.action
        cluster_name, route, connect = cluster.name, plan.route, request.method == "CONNECT"
        if connect or request.upgrade is not None:
            allowed = (config.connect or action.connect) if connect else \
                (config.websocket or action.websocket)
            if not allowed:
                return self._local(config, routing.Respond(403, b"upgrade not allowed"),
                                   cluster_name, route=route)
            status = 200 if connect else 101
            return (http1.Message([], status=status),
                    Outcome(status, cluster_name, keep=False, route=route),
                    (cluster, outgoing))
        if streamed is not None:
            if speaks_h2(cluster, outgoing):  # passed on as it comes, both ways
                return await self._relay(config, cluster, outgoing, plan.decision,
                                         plan.added, plan.flags, plan.started, peer,
                                         *streamed, origin=origin)
            if not _is_grpc(request.headers):  # a long upload: to stream to HTTP/1.1
                request.body_source = outgoing.body_source = H2Body(*streamed)
                request.streamed = outgoing.streamed = True
            else:
                try:
                    outgoing.body, outgoing.trailers = await collect_body(*streamed)
                except http2.StreamError as exc:
                    return self._local(config, routing.Respond(400, str(exc).encode()),
                                       cluster_name, "DPE", route)
        try:
            response, host = await self._forward(
                cluster, outgoing, action, destination, peer.source, origin=origin,
                handed=handed)
        except UpstreamFailed as exc:
            return self._failed(config, plan, exc)
        return (*self._answered(config, plan, response, host, peer), None)

    def _failed(self, config: HttpManager, plan: Plan, exc: UpstreamFailed) -> Answered:
        """The local answer to a request no upstream answered."""
        timeout = str(exc) == TIMEOUT
        return self._local(config, routing.Respond(504 if timeout else 503, str(exc).encode()),
                           plan.cluster.name, "UT" if timeout else exc.flag, plan.route)

    def _answered(self, config: HttpManager, plan: Plan, response: http1.Message,
                  host: tuple[str, int], peer: rbac.Facts
                  ) -> tuple[http1.Message, Outcome]:
        """An upstream's answer as it goes downstream, and how the request went."""
        response.headers = _answer_head(response.headers, plan.decision, peer, plan.added,
                                        plan.started)
        cluster = plan.cluster.name
        self.stats.request_done(cluster, config.stat_prefix, response.status)
        # (positional: Outcome's fields in order, status to grpc_status)
        return response, Outcome(response.status, cluster, address_text(host),
                                 len(response.body), plan.flags, True, plan.route,
                                 _grpc_status(response))

    async def _filter_and_plan(self, config: HttpManager, request: http1.Message,
                               scheme: str, peer: rbac.Facts,
                               origin: UpstreamSource | None) -> Plan | Answered:
        """The route's filters, then its plan, or the answer the proxy gives itself."""
        started = time.monotonic()
        decision = self._route(config, request, scheme)
        added: Sequence[tuple[str, str]] = ()  # what the filters add to the answer
        flags = "-"
        if config.filters and not http_filters.idle(
                config.filters, decision.per_filter if decision else {}):
            call = http_filters.Request(request.method, request.target, request.headers, peer,
                                        decision.per_filter if decision else {})
            result = http_filters.run(config.filters, call, self.rng)
            if result.check is not None:
                result = await self._authorize(config, call, result)
            for counter in result.counters:
                self.stats.inc(f"http.{config.stat_prefix}.{counter}")
            if result.delay:
                await asyncio.sleep(result.delay)
            added, flags = call.response_headers, result.delay_flag or flags
            if result.answer is not None:
                refused = result.answer
                return self._local(
                    config, routing.Respond(refused.status, refused.body,
                                            (*refused.headers, *added)),
                    flags=refused.flags,
                    route=decision.route.name if decision is not None else "")
            request.headers = call.headers
        return self._plan(config, request, decision, scheme, peer, added, flags, started,
                          origin)

    def _plan(self, config: HttpManager, request: http1.Message,
              decision: routing.Decision | None, scheme: str, peer: rbac.Facts,
              added: Sequence[tuple[str, str]], flags: str, started: float,
              origin: UpstreamSource | None) -> Plan | Answered:
        """Where a routed request goes and as what (mirrors sent their copy); or the
        answer the proxy gives itself (no route, a redirect, a direct response, no such
        cluster)."""
        if decision is None:
            return self._local(config, routing.Respond(404), flags="NR")
        route = decision.route.name
        action = decision.route.action
        if isinstance(action, (routing.Redirect, routing.Respond)):
            if isinstance(action, routing.Redirect):
                prefix = decision.route.match.value \
                    if decision.route.match.kind == "prefix" else ""
                authority = request.header("host") or (
                    request.target if request.method == "CONNECT" else "")
                answer = action.answer(scheme, authority, request.target, prefix)
            else:
                answer = action
            # the route's and virtual host's response headers go on direct answers too
            edited = decision.response_edits.apply(
                answer.headers, _header_facts(decision.response_edits, peer))
            return self._local(config, attrs.evolve(answer, headers=(*edited, *added)),
                               route=route, flags=flags)
        cluster_name, edits = action.choose(self.rng)
        cluster = self.state.clusters.get(cluster_name)
        if cluster is None:
            return self._local(config, routing.Respond(503, b"no healthy upstream"),
                               cluster_name, "NC", route)
        outgoing = self._outgoing(request, decision, edits, action, scheme, peer)
        for mirror, portion in action.mirrors:
            if portion >= 1.0 or self.rng.random() < portion:
                self._shadow(mirror, outgoing, action.timeout, origin)
        return Plan(decision, action, cluster, outgoing, added, flags, started)

    async def _authorize(self, config: HttpManager, call: http_filters.Request,
                         result: http_filters.Outcome) -> http_filters.Outcome:
        """The ext_authz checks the filters asked for, each answer applied by its filter,
        then the rest of the filters."""
        counters = list(result.counters)
        while result.check is not None and result.checker is not None:
            verdict = result.checker.judge(await self._ask(result.check), call.headers,
                                           call.response_headers)
            counters.append(verdict.counter)
            if verdict.allowed:
                call.headers = verdict.headers
            denial = verdict.denial
            if denial is not None:
                return http_filters.Outcome(result.delay, http_filters.Answer(
                    denial.status, denial.body, denial.headers, ext_authz.DENIED_FLAG),
                    result.delay_flag, tuple(counters))
            delay, flag = result.delay, result.delay_flag
            result = http_filters.run(config.filters, call, self.rng, start=result.resume)
            counters += result.counters
            if not result.delay:
                result = attrs.evolve(result, delay=delay, delay_flag=flag)
        return attrs.evolve(result, counters=tuple(counters))

    async def _ask(self, check: ext_authz.Check) -> http1.Message | None:
        """The authorization service's answer (its body up to ``MAX_BODY``); None when it
        could not be asked."""
        cluster = self.state.clusters.get(check.cluster)
        if cluster is None:
            return None
        request = http1.Message(list(check.headers), check.body, check.method, check.target)
        try:
            response, _ = await self._attempt(cluster, request, set(), check.timeout, 0.0)
            source = response.body_source
            if source is not None:
                parts = []
                while data := await source.chunk():
                    parts.append(data)
                    if sum(map(len, parts)) > http1.MAX_BODY:
                        source.close()
                        return None
                response.body, response.body_source = b"".join(parts), None
                if isinstance(source, H2Answer):  # a gRPC check's status is in them
                    response.trailers = list(source.stream.trailers)
        except (UpstreamFailed, OSError, EOFError, http1.ParseError):
            return None
        return response

    def _shadow(self, cluster_name: str, request: http1.Message, timeout: float,
                origin: UpstreamSource | None = None) -> None:
        """Send a copy of ``request`` to ``cluster_name`` and forget it (request mirroring:
        the authority gets ``-shadow``, the answer is dropped)."""
        cluster = self.state.clusters.get(cluster_name)
        if cluster is None or request.upgrade is not None or request.streamed:
            return  # (a streamed body goes once, to the route's cluster)
        host, colon, port = (request.header("host") or "").rpartition(":") \
            if not (request.header("host") or "").endswith("]") else ("", "", "")
        if not colon or not port.isdigit():
            host, port = request.header("host") or "", ""
        shadow = attrs.evolve(request, headers=[(k, v) for k, v in request.headers
                                                if k != "host"] +
                              [("host", f"{host}-shadow" + (f":{port}" if port else ""))])

        async def send() -> None:
            with contextlib.suppress(UpstreamFailed):
                answer, _ = await self._attempt(cluster, shadow, set(), timeout, 0.0,
                                                origin=origin)
                if answer.body_source is not None:  # dropped, so not read either
                    answer.body_source.close()
            self.stats.inc(f"cluster.{cluster_name}.upstream_rq_shadowed")

        task = asyncio.get_running_loop().create_task(send())
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    def _outgoing(self, request: http1.Message, decision: routing.Decision,
                  edits: routing.HeaderEdits, action: routing.Forward,
                  scheme: str = "http", peer: rbac.Facts = NO_PEER) -> http1.Message:
        request_edits = decision.request_edits.then(edits)
        headers = request_edits.apply(request.headers, _header_facts(request_edits, peer))
        target = request.target
        if action.prefix_rewrite or action.regex_rewrite:
            match = decision.route.match
            target = routing.rewrite_path(
                target, match.value if match.kind in ("prefix", "separated") else "",
                action.prefix_rewrite, action.regex_rewrite)
        if action.host_rewrite:
            headers = [(k, v) for k, v in headers if k != "host"] + [
                ("host", action.host_rewrite)]
        names = dict(headers)  # (built in C: faster than a set of the names)
        if "x-request-id" not in names:
            generated = ("x-request-id", request_id(self.rng))
            headers.append(generated)
            request.headers.append(generated)  # Envoy's access log shows the id it made
        if "x-forwarded-proto" not in names:
            headers.append(("x-forwarded-proto", scheme))
        return http1.Message(headers, request.body, request.method, target,
                             version=request.version, upgrade=request.upgrade,
                             trailers=request.trailers, streamed=request.streamed,
                             body_source=request.body_source)

    async def _forward(self, cluster: Cluster, request: http1.Message,
                       action: routing.Forward, destination: tuple[str, int] | None = None,
                       source: str = "", local: str = "", origin: UpstreamSource | None = None,
                       handed: Handed | None = None
                       ) -> tuple[http1.Message, tuple[str, int]]:
        """Send ``request`` with the route's retries; ``source`` (the client's IP) and
        ``local`` (the address it reached; else ``destination``'s) are for hash policies.
        ``handed``: the callback path's first try, when it made one, taken as this
        loop's first."""
        retry = action.retry
        # A streamed body cannot be sent twice: no retry (as Envoy, past its buffer limit).
        attempts = 1 + (retry.num_retries if retry and not request.streamed else 0)
        tried: set[tuple[str, int]] = handed.tried if handed is not None else set()
        first: Tried | None = handed.first if handed is not None else None
        key = hashing.request_key(
            action.hash_policy, request.headers, request.target, source,
            local or (address_text(destination) if destination else "")) \
            if cluster.lb in HASHED else None
        # a hashed request stays on its host unless the retry policy says otherwise
        sticky = key is not None and key.hash is not None and not (
            retry is not None and retry.other_hosts)
        breaker = self._upstream(cluster).breaker
        last: UpstreamFailed | None = None
        response: tuple[http1.Message, tuple[str, int]] | None = None
        for attempt in range(attempts):
            if attempt and not breaker.start_retry():
                self.stats.inc(f"cluster.{cluster.name}.upstream_rq_retry_overflow")
                break
            failed = False  # (no `continue` in the handler: mypyc compiles no continue
            try:            # inside try/finally)
                if first is not None:  # the callback path's try
                    tried_once, first = first, None
                    if isinstance(tried_once, UpstreamFailed):
                        raise tried_once
                    response = tried_once
                else:
                    response = await self._attempt(
                        cluster, request, set() if sticky else tried, action.timeout,
                        retry.per_try_timeout if retry else 0.0, destination,
                        key.hash if key is not None else None, origin)
            except UpstreamFailed as exc:
                last = exc
                self.stats.inc(f"cluster.{cluster.name}.upstream_rq_retry")
                may_retry = retry is not None and retry.retries_connect_failure and (
                    not exc.sent or request.method in IDEMPOTENT) and exc.flag != "UO"
                if str(exc) == TIMEOUT or not may_retry:
                    raise
                failed = True
            finally:
                if attempt:
                    breaker.end_retry()
            if failed:
                continue
            assert response is not None  # this try answered
            if retry is not None and attempt + 1 < attempts and \
                    retry.retries_status(response[0].status):
                if response[0].body_source is not None:
                    response[0].body_source.close()
                continue
            break
        if response is None:
            assert last is not None
            raise last
        if key is not None and key.set_cookie:
            response[0].headers.append(("set-cookie", key.set_cookie))
        return response

    async def _attempt(self, cluster: Cluster, request: http1.Message,
                       tried: set[tuple[str, int]], timeout: float, per_try: float,
                       destination: tuple[str, int] | None = None,
                       hash_key: int | None = None, origin: UpstreamSource | None = None
                       ) -> tuple[http1.Message, tuple[str, int]]:
        limit = try_limit(timeout, per_try)
        upstream = self._upstream(cluster)
        if not upstream.breaker.start_request():
            self.stats.inc(f"cluster.{cluster.name}.upstream_rq_pending_overflow")
            raise UpstreamFailed(OVERFLOW, sent=False, flag="UO")
        try:
            if speaks_h2(cluster, request):
                return await self._attempt_h2(cluster, request, tried, limit, destination,
                                              hash_key, origin)
            return await self._exchange_upstream(cluster, upstream, request, tried, limit,
                                                 destination, hash_key, origin)
        finally:
            upstream.breaker.end_request()
            self._release(cluster.name)

    async def _exchange_upstream(self, cluster: Cluster, upstream: Upstream,
                                 request: http1.Message, tried: set[tuple[str, int]],
                                 limit: float, destination: tuple[str, int] | None,
                                 hash_key: int | None, origin: UpstreamSource | None = None
                                 ) -> tuple[http1.Message, tuple[str, int]]:
        """One try: a host, a pooled or new connection (waiting as a pending request when
        the breaker says so), the request, its response."""
        balancer = upstream.balancer
        endpoint = self._pick(cluster, tried, destination, hash_key, upstream)
        key = pool_key(cluster.name, (endpoint.host, endpoint.port), origin) \
            if endpoint else ()
        pooled = self.pool.take(key, cluster.idle_timeout, cluster.max_connection_duration) \
            if endpoint else None
        if pooled is None and endpoint is not None and cluster.kind != "ORIGINAL_DST":
            waiting = self._wait_connection(cluster, upstream, endpoint, origin)
            try:
                pooled = await (asyncio.wait_for(waiting, limit) if limit else waiting)
            except TimeoutError:
                raise UpstreamFailed(TIMEOUT, sent=False) from None
        if pooled is not None and endpoint is not None:
            connection = pooled
            host = (endpoint.host, endpoint.port)
            tried.add(host)
        else:
            _, writer, host = await self._connect(cluster, tried, destination, endpoint,
                                                  origin=origin)
            connection = Http1Connection.adopt(writer, http1_codec.Parser(response=True))
            key = pool_key(cluster.name, host, origin)
        balancer.started(host)
        result: Result
        try:
            if request.streamed:
                result = await exchange_streamed(connection, request, limit)
            else:
                result = await connection.exchange(
                    http1_codec.request_bytes(request), request.method == "HEAD", limit,
                    STREAM_OVER)
        except (DownstreamGone, OSError, http1.ParseError, EOFError) as exc:
            result = exc
        finally:
            balancer.finished(host)
        return self._exchanged(cluster, upstream, request, connection, key, host,
                               result), host

    def _exchanged(self, cluster: Cluster, upstream: Upstream, request: http1.Message,
                   connection: Http1Connection, key: tuple[Any, ...], host: tuple[str, int],
                   result: Result) -> http1.Message:
        """A try's answer, after what it means for outlier detection and the connection
        (pooled again, kept by a streamed body, or closed); a failure raised as
        `UpstreamFailed`. Both ways of serving a request end their tries here."""
        if isinstance(result, Exception):
            self.pool.forget(connection)
            connection.close()
            if isinstance(result, DownstreamGone):
                raise UpstreamFailed("downstream closed the connection in the request body",
                                     sent=True, flag="DC")
            if isinstance(result, TimeoutError):
                self._outlier(cluster, host, failed="timeout")
                raise UpstreamFailed(TIMEOUT, sent=True)
            if not isinstance(result, (OSError, http1.ParseError, EOFError)):
                raise result
            self._outlier(cluster, host, failed="reset")
            raise UpstreamFailed("upstream connect error or disconnect/reset before headers. "
                                 f"reset reason: connection termination ({result})",
                                 sent=True)
        response = result
        if upstream.detector is not None:
            self._outlier(cluster, host, status=response.status)
        if response.streamed:  # the connection is the body's until it has all come
            response.body_source = UpstreamBody(
                self.pool, key, connection, response.keep_alive,
                cluster.max_requests_per_connection)
        elif not (response.keep_alive and request.method != "HEAD" and self.pool.give(
                key, connection, cluster.max_requests_per_connection)):
            self.pool.forget(connection)
            connection.close()
        return response

    async def _h2_connection(self, cluster: Cluster, tried: set[tuple[str, int]],
                             destination: tuple[str, int] | None,
                             endpoint: Endpoint | None = None, origin: UpstreamSource | None = None,
                             shared: filter_state.State | None = None
                             ) -> tuple[http2.Connection, tuple[str, int]]:
        """A pooled HTTP/2 connection to a host of ``cluster`` that takes another stream
        (a new one when there is none). A connection whose server was checked for the SAN
        the filter state asks (``shared``) serves only connections asking the same."""
        endpoint = endpoint or self._pick(cluster, tried, destination)
        san = filter_state.shared_value(shared or {}, filter_state.UPSTREAM_SANS)
        key = (*pool_key(cluster.name, (endpoint.host, endpoint.port), origin), san) \
            if endpoint else None
        connection = self.h2_pool.get(key) if key else None
        if connection is not None and connection.usable and endpoint is not None:
            host = (endpoint.host, endpoint.port)
            tried.add(host)
            return connection, host
        reader, writer, host = await self._connect(cluster, tried, destination, endpoint,
                                                   origin=origin, shared=shared)
        connection = http2.Connection(reader, writer, client=True)
        connection.run()
        self.h2_pool[(*pool_key(cluster.name, host, origin), san)] = connection
        return connection, host

    async def _attempt_h2(self, cluster: Cluster, request: http1.Message,
                          tried: set[tuple[str, int]], limit: float,
                          destination: tuple[str, int] | None = None,
                          hash_key: int | None = None, origin: UpstreamSource | None = None
                          ) -> tuple[http1.Message, tuple[str, int]]:
        """One try over HTTP/2: a stream on the host's pooled connection (opened when
        there is none that takes another stream)."""
        balancer = self._upstream(cluster).balancer
        endpoint = self._pick(cluster, tried, destination, hash_key)
        connection, host = await self._h2_connection(cluster, tried, destination, endpoint,
                                                     origin)
        balancer.started(host)
        scheme = "https" if cluster.origination(endpoint) is not None else "http"
        stream: http2.Stream | None = None
        streamed = False
        try:
            async with asyncio.timeout(limit or None):
                stream = connection.open(request, scheme)
                await send_h2_body(connection, stream.id, request)
                await stream.responded.wait()
                if stream.error:
                    raise http2.StreamError(stream.error)
                response = http2.response_message(stream)
                if request.method != "HEAD" and long_answer(response, STREAM_OVER):
                    response.streamed, streamed = True, True  # the rest as it comes
                    response.body_source = H2Answer(connection, stream)
                else:
                    response.body = await read_h2_answer(connection, stream)
                    response.trailers = list(stream.trailers)
        except TimeoutError:
            self._outlier(cluster, host, failed="timeout")
            raise UpstreamFailed(TIMEOUT, sent=True) from None
        except BodyTooLarge as exc:
            raise UpstreamFailed(str(exc), sent=True, flag="UPE") from None
        except DownstreamGone:
            raise UpstreamFailed("downstream closed the connection in the request body",
                                 sent=True, flag="DC") from None
        except (http2.StreamError, OSError, h2_exceptions.ProtocolError) as exc:
            self._outlier(cluster, host, failed="reset")
            raise UpstreamFailed("upstream connect error or disconnect/reset before headers. "
                                 f"reset reason: remote reset ({exc})", sent=True) from None
        finally:
            balancer.finished(host)
            if stream is not None and not streamed:
                connection.release(stream.id)
        self._outlier(cluster, host, status=response.status)
        return response, host

    async def _upgrade(self, cluster: Cluster, request: http1.Message,
                       reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       destination: tuple[str, int] | None = None,
                       origin: UpstreamSource | None = None) -> None:
        """An upgrade (WebSocket): the head upstream, the answer back, then bytes both ways."""
        try:
            up_reader, up_writer, _ = await self._connect(cluster, set(), destination,
                                                          origin=origin)
        except UpstreamFailed as exc:
            writer.write(http1_codec.response_bytes(http1.Message(
                [], str(exc).encode(), status=503), "", close=True))
            return
        try:
            if request.method == "CONNECT":  # terminated here: the payload goes upstream
                writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
                if request.upgrade:
                    up_writer.write(request.upgrade)
            else:
                up_writer.write(http1_codec.request_bytes(request) + (request.upgrade or b""))
            await channels.splice(channels.TcpChannel(reader, writer),
                                  channels.TcpChannel(up_reader, up_writer))
        finally:
            await close_writer(up_writer)
            self._release(cluster.name)

    def _local(self, config: HttpManager, answer: routing.Respond, cluster: str = "",
               flags: str = "-", route: str = "") -> Answered:
        """An answer the proxy makes itself."""
        headers = list(answer.headers)
        if answer.body:
            headers.append(("content-type", "text/plain"))
        headers.append(("server", "istio-envoy"))
        self.stats.inc(f"http.{config.stat_prefix}.downstream_rq_{answer.status // 100}xx")
        if cluster:
            self.stats.inc(f"cluster.{cluster}.upstream_rq_{answer.status}")
        return (http1.Message(headers, answer.body, status=answer.status),
                Outcome(answer.status, cluster, "", len(answer.body), flags=flags,
                        route=route), None)

    def prometheus(self, workload: istio_metrics.Workload, stats: Stats | None = None,
                   istio: IstioSeries | None = None) -> str:
        """Envoy-named counters, then Istio's standard metrics (this process's, or the
        totals given)."""
        return self.counts.prometheus(workload, stats or self.stats, self.state.clusters,
                                      istio)

    # -- what admin shows ----------------------------------------------------------------

    def _ejected(self, cluster: str) -> frozenset[tuple[str, int]]:
        upstream = self.upstreams.get(cluster)
        detector = upstream.detector if upstream is not None else None
        return detector.ejected() if detector is not None else frozenset()

    def clusters_text(self) -> str:
        lines = []
        for name, cluster in sorted(self.state.clusters.items()):
            ejected = self._ejected(name)
            for endpoint in self.state.endpoints_of(cluster):
                flags = "/failed_outlier_check" if (endpoint.host, endpoint.port) in ejected \
                    else "healthy" if endpoint.healthy else "/failed_eds_health"
                at = f"{name}::{endpoint.host}:{endpoint.port}"
                lines.append(f"{at}::health_flags::{flags}")
                lines.append(f"{at}::weight::{endpoint.weight}")
                lines.append(f"{at}::priority::{endpoint.priority}")
                if endpoint.locality:
                    region, zone, sub_zone = [*endpoint.locality.split("/"), "", ""][:3]
                    lines.append(f"{at}::region::{region}")
                    lines.append(f"{at}::zone::{zone}")
                    lines.append(f"{at}::sub_zone::{sub_zone}")
        return "\n".join(lines) + "\n"

    def clusters_json(self) -> dict[str, Any]:
        """Envoy's ``/clusters?format=json``: every cluster's hosts and their health."""
        statuses = []
        for name, cluster in sorted(self.state.clusters.items()):
            ejected = self._ejected(name)
            hosts = []
            for e in self.state.endpoints_of(cluster):
                health: dict[str, Any] = {"eds_health_status": "HEALTHY" if e.healthy
                                          else "UNHEALTHY"}
                if (e.host, e.port) in ejected:
                    health["failed_outlier_check"] = True
                hosts.append({
                    "address": {"socket_address": {"address": e.host, "port_value": e.port}},
                    "health_status": health, "weight": e.weight, "priority": e.priority})
            statuses.append({"name": name, "host_statuses": hosts})
        return {"cluster_statuses": statuses}

    def listeners_text(self) -> str:
        return "".join(f"{name}::{host}:{port}\n" for name, (host, port) in
                       sorted(self.bound.items()))
