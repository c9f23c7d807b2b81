"""The xDS transport: ADS over gRPC (SotW and delta), one `Connection` per stream.

Thin by design. Each stream gets a sans-IO `Session`. Its requests are handled in the
stream's own task as they arrive; pushes the discovery server asks for are made by the
push workers (`pilotfish.core.xds.stream`: a push asked for while one waits merges into
it); a lock per stream keeps the two apart. Responses are assembled from pre-serialized
resources and written as raw bytes (the RPC's response serializer is the identity), a
bounded number at once.

What a client may hold is bounded (`Limits`): a stream that sends no request within the
first-request deadline is closed, and so is one that does not take a response within the
send timeout; one peer address may hold only so many streams, one stream only so many
resource types, and a NACK's text is kept and logged truncated, its log lines rate-limited
per stream.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import attrs
import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from pilotfish.core.meshconfig import PUSH_CONCURRENCY
from pilotfish.core.proxy import NodeIdError, Proxy, parse_node
from pilotfish.core.xds import types
from pilotfish.core.xds.generator import GenerationError
from pilotfish.core.xds.limits import DEFAULT_LIMITS, Limits, LogThrottle
from pilotfish.core.xds.requests import SotwRequest, nack_text
from pilotfish.core.xds.resources import ResourceSet
from pilotfish.core.xds.session import Decision, Mode, Outcome, Response, Session
from pilotfish.core.xds.stream import (
    PushQueue,
    StreamState,
    WriteSlots,
    hold_until_done,
    serve_requests,
)

log = logging.getLogger("pilotfish.xds")

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
ALL_TYPES: frozenset[str] = frozenset({"*"})


def peer_host(peer: str) -> str:
    """The address part of a gRPC peer string (``ipv4:10.0.0.1:4321`` → ``10.0.0.1``)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition(":")[0].replace("%5B", "").replace("%5D", "")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return peer  # unix sockets: the name is the peer


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


# (type_url, proxy) → current resources of that type for that proxy.
ResourceSource = Callable[[str, Proxy], ResourceSet]
# Secure ports authenticate the caller of each stream: (context, proxy) → (identity, peer
# address), or the check aborts the RPC. Plaintext 15010 has none (Istio skips it there).
CallerCheck = Callable[[grpc.aio.ServicerContext, Proxy], Awaitable[tuple[str, str]]]


@attrs.define(eq=False)
class Connection(StreamState):
    id: str
    proxy: Proxy
    mode: Mode
    session: Session
    peer: str
    connected_at: float
    write: Callable[[bytes], Awaitable[None]]
    pending: set[str] = attrs.field(factory=set)  # type URLs a queued push is for
    bytes_sent: int = 0
    responses_sent: int = 0
    identity: str = ""  # the caller's SPIFFE ID on 15012; empty on plaintext
    abort: Callable[[grpc.StatusCode, str], Awaitable[None]] | None = None
    nack_log: LogThrottle = attrs.field(
        factory=lambda: LogThrottle(DEFAULT_LIMITS.nack_log_interval))


class XdsServer:
    """Serves ADS streams; the discovery app tells it when resources changed."""

    def __init__(
        self,
        resources: ResourceSource,
        *,
        push_concurrency: int = PUSH_CONCURRENCY,
        clock: Callable[[], float] = time.time,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._resources = resources
        self._clock = clock
        self.limits = limits
        self.connections: dict[str, Connection] = {}
        self._ids = itertools.count(1)
        # Responses being encoded and written at once, pushes or answers to requests; as
        # many push workers, so a push keeps them all busy.
        self._slots = WriteSlots(push_concurrency, limits.send_timeout)
        self._pushes: PushQueue[Connection] = PushQueue(self._push, push_concurrency,
                                                        self._slots)
        self._streams_per_host: dict[str, int] = {}
        self.refused = {"first_request": 0, "per_peer": 0, "types": 0, "send_timeout": 0}
        self._refusal_log = {reason: LogThrottle(limits.nack_log_interval)
                             for reason in self.refused}
        self.on_connect: list[Callable[[Connection], None]] = []
        self.on_disconnect: list[Callable[[Connection], None]] = []

    # -- what the discovery app calls ------------------------------------------------------

    def push(self, type_urls: frozenset[str]) -> None:
        """Push these types to every connection (merged with any push still waiting)."""
        for connection in self.connections.values():
            connection.pending |= type_urls
            self._pushes.add(connection)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """The push workers, until cancelled: run it beside the servers of `handler`."""
        await self._pushes.run(task_status=task_status)

    def end_streams(self) -> None:
        """End every open stream now (this replica is stopping): each proxy sees its
        stream closed and reconnects at once, to a replica that stays, rather than when
        the gRPC server's grace is over."""
        for connection in list(self.connections.values()):
            connection.stop.cancel()

    def handler(self, check: CallerCheck | None = None,
                client_host: Callable[[str], str] = peer_host) -> grpc.GenericRpcHandler:
        """gRPC handlers for ADS. ``client_host`` names the client behind a gRPC peer
        string (a front that relays connections knows the real one), for the per-address
        stream limit."""
        identity: Callable[[bytes], bytes] = lambda data: data  # noqa: E731 - bytes are prebuilt

        async def sotw(request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
            await self._stream(context, Mode.SOTW, check, client_host)

        async def delta(request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
            await self._stream(context, Mode.DELTA, check, client_host)

        return grpc.method_handlers_generic_handler(ADS_SERVICE, {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                sotw,
                request_deserializer=SotwRequest,
                response_serializer=identity,
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                delta,
                request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=identity,
            ),
        })

    # -- streams -----------------------------------------------------------------------------

    async def _stream(self, context: grpc.aio.ServicerContext, mode: Mode,
                      check: CallerCheck | None = None,
                      client_host: Callable[[str], str] = peer_host) -> None:
        host = client_host(context.peer())
        held = self._streams_per_host.get(host, 0)
        if held >= self.limits.streams_per_peer:
            self.refused["per_peer"] += 1
            unsaid = self._refusal_log["per_peer"].due(self._clock())
            if unsaid is not None:
                log.warning("%s already holds %d xDS streams; one more refused%s", host, held,
                            f" ({unsaid} more refused since the last one logged)"
                            if unsaid else "")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{host} holds {held} streams, the most one address may "
                                "(discovery.xdsLimits.streamsPerPeer)")
        self._streams_per_host[host] = held + 1
        try:
            await self._serve_stream(context, mode, check, host)
        finally:
            self._streams_per_host[host] -= 1
            if not self._streams_per_host[host]:
                del self._streams_per_host[host]

    async def _serve_stream(self, context: grpc.aio.ServicerContext, mode: Mode,
                            check: CallerCheck | None, host: str) -> None:
        first = grpc.aio.EOF
        with anyio.move_on_after(self.limits.first_request_timeout) as deadline:
            first = await context.read()
        if deadline.cancelled_caught:
            self.refused["first_request"] += 1
            unsaid = self._refusal_log["first_request"].due(self._clock())
            if unsaid is not None:
                log.warning("%s sent no request within %gs of opening a stream; closed%s",
                            host, self.limits.first_request_timeout,
                            f" ({unsaid} more refused since the last one logged)"
                            if unsaid else "")
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"no request within {self.limits.first_request_timeout:g}s "
                                "of opening the stream")
        if first is grpc.aio.EOF:
            return
        opening = first.message if mode is Mode.SOTW else first
        if not opening.HasField("node") or not opening.node.id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "missing node information")
        try:
            metadata = json_format.MessageToDict(opening.node.metadata)
            where = opening.node.locality
            locality = "/".join((where.region, where.zone, where.sub_zone)).rstrip("/")
            proxy = parse_node(opening.node.id, metadata, locality if where.region else "")
        except (NodeIdError, ValueError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        caller, peer = await check(context, proxy) if check else ("", context.peer())
        if caller:
            proxy = attrs.evolve(proxy, verified_identity=caller)
        conn_id = f"{proxy.id}-{next(self._ids)}"
        connection = Connection(
            id=conn_id,
            proxy=proxy,
            mode=mode,
            session=Session(mode, nonce_prefix=f"{conn_id}/"),
            peer=peer,
            connected_at=self._clock(),
            write=context.write,
            identity=caller,
            abort=context.abort,
            nack_log=LogThrottle(self.limits.nack_log_interval),
        )
        self.connections[conn_id] = connection
        log.info("%s connected (%s, %s%s)", conn_id, mode.value, connection.peer,
                 f", {caller}" if caller else "")
        for callback in self.on_connect:
            callback(connection)
        try:
            # The first request stays referenced here: it opens the stream (Envoy's is the
            # clusters' wildcard subscription, a few bytes); later ones are let go.
            await serve_requests(connection, context,
                                 lambda r: self._handle(connection, r, connection.stop),
                                 first)
        finally:
            connection.closed = True
            self.connections.pop(conn_id, None)
            for callback in self.on_disconnect:
                callback(connection)
            log.info("%s disconnected", conn_id)
        if connection.stalled:
            await hold_until_done(context)

    # -- requests and pushes ---------------------------------------------------------------

    async def _handle(self, connection: Connection, request: Any,
                      scope: anyio.CancelScope) -> None:
        """``scope``: the calling task's, cancelled if a response it writes is not read
        within the send timeout (`WriteSlots.write`)."""
        now = self._clock()
        session = connection.session
        if (request.type_url not in session.watches
                and len(session.watches) >= self.limits.types_per_stream):
            self.refused["types"] += 1
            if connection.abort is not None:
                await connection.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"a stream may subscribe to {self.limits.types_per_stream} resource types "
                    f"at most; {types.short(request.type_url)} would be one more")
            return
        error = request.error if connection.mode is Mode.SOTW else nack_text(request)
        if error is not None:
            error = truncate(error, self.limits.error_text)
        decision: Decision
        if connection.mode is Mode.SOTW:
            # The names are read (parsed) only if their fingerprint is new to the session.
            decision = session.receive_sotw(
                request.type_url, request.names, request.response_nonce,
                request.version_info, error, now, request.names_key)
        else:
            decision = session.receive_delta(
                request.type_url, request.resource_names_subscribe,
                request.resource_names_unsubscribe, dict(request.initial_resource_versions),
                request.response_nonce, error, now,
            )
        if decision.outcome is Outcome.NACK:
            self._log_nack(connection, decision, now)
        if decision.respond:
            await self._respond(connection, decision.type_url, scope)

    def _log_nack(self, connection: Connection, decision: Decision, now: float) -> None:
        """One line per stream per interval; NACKs in between are counted, then said."""
        unsaid = connection.nack_log.due(now)
        if unsaid is None:
            return
        more = f" ({unsaid} more NACKs since the last one logged)" if unsaid else ""
        log.warning("%s NACK %s: %s%s", connection.id, types.short(decision.type_url),
                    decision.error, more)

    async def _push(self, connection: Connection, scope: anyio.CancelScope) -> None:
        wanted, connection.pending = connection.pending, set()
        for type_url in connection.session.watched_types():
            watch = connection.session.watches.get(type_url)
            if watch is None:
                continue
            if "*" in wanted or type_url in wanted or watch.pending:
                await self._respond(connection, type_url, scope)

    async def _respond(self, connection: Connection, type_url: str,
                       scope: anyio.CancelScope) -> None:
        if connection.closed:
            return
        try:
            current = self._resources(type_url, connection.proxy)
        except GenerationError:
            return  # reported where it happened; the proxy keeps what it holds
        response = connection.session.plan(current)
        if response is None:
            return
        await self._send(connection, response, scope)
        dependent = types.WARMING_DEPENDENCIES.get(type_url)
        if dependent and response.resources:
            connection.session.invalidate(dependent, (r.name for r in response.resources))
            await self._respond(connection, dependent, scope)

    async def _send(self, connection: Connection, response: Response,
                    scope: anyio.CancelScope) -> None:
        data = await self._slots.write(connection.write,
                                       lambda: response.encode(connection.mode), scope,
                                       lambda: self._give_up(connection))
        connection.session.sent(response, self._clock())
        connection.bytes_sent += len(data)
        connection.responses_sent += 1
        log.debug("%s sent %s %d resources, %d removed (%d bytes)", connection.id,
                  types.short(response.type_url), len(response.resources),
                  len(response.removed), len(data))

    def _give_up(self, connection: Connection) -> None:
        """The proxy did not take a response within the send timeout: give up its stream
        rather than hold a write slot for it (see `hold_until_done`)."""
        connection.give_up()
        self.refused["send_timeout"] += 1
        unsaid = self._refusal_log["send_timeout"].due(self._clock())
        if unsaid is not None:
            log.warning("%s did not read a response within %gs; its stream is given up%s",
                        connection.id, self.limits.send_timeout,
                        f" ({unsaid} more since the last one logged)" if unsaid else "")


SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    # Streams gRPC has accepted but the event loop has not taken up yet. Past 1,000 (gRPC's
    # default) gRPC cancels new ones at random, and after 30 s it cancels them all: every
    # proxy of a mesh reconnecting at once (discovery restarted under 2,000 sidecars) lost
    # ~8 % of its streams before their first request. The limits on what a client may
    # hold are discovery.xdsLimits, enforced once a stream is taken up.
    ("grpc.server.max_pending_requests", 50_000),
    ("grpc.server.max_pending_requests_hard_limit", 100_000),
    ("grpc.server_max_unrequested_time_in_server", 300),
    ("grpc.max_concurrent_streams", 100_000),
    # As istiod: a connection lives 30 minutes at most (then GOAWAY, and closed after 10 s
    # of grace), which spreads proxies over replicas and ends streams given up on a proxy
    # that stopped reading (see hold_until_done).
    ("grpc.max_connection_age_ms", 30 * 60 * 1000),
    ("grpc.max_connection_age_grace_ms", 10_000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 15_000),
    ("grpc.so_reuseport", 0),
    # Each stream may send 256 KiB ahead of what discovery read, no more and no less: SotW
    # ACKs name every resource the proxy holds (~50 kB for 1,000 clusters), and with gRPC's
    # 64 KiB the window was updated after nearly every ACK (at 2,000 proxies, ~10 % of a
    # push's CPU). Window growth from bandwidth probes is off: the bound stays fixed.
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 256 * 1024),
]


async def serve(
    server: XdsServer, address: str, *, extra_handlers: tuple[grpc.GenericRpcHandler, ...] = (),
    task_status: anyio.abc.TaskStatus[grpc.aio.Server] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run a plaintext gRPC server for ADS on ``address`` until cancelled."""
    grpc_server = grpc.aio.server(options=SERVER_OPTIONS)
    grpc_server.add_generic_rpc_handlers((server.handler(), *extra_handlers))
    port = grpc_server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen for xDS on {address}")
    await grpc_server.start()
    task_status.started(grpc_server)
    try:
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            server.end_streams()  # ADS streams end at once; a CA call in flight has grace
            await grpc_server.stop(grace=1.0)
