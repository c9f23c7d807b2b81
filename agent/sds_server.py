"""The agent's SDS server: ``default`` and ``ROOTCA`` for its proxy, on a unix socket.

``envoy.service.secret.v3.SecretDiscoveryService``: ``StreamSecrets`` (state of the world,
what Envoy uses for the ``api_config_source: GRPC`` the translators and the bootstrap
write) and ``DeltaSecrets``. Each stream gets the sans-IO ``xds.session.Session`` that
discovery's ADS streams use, so ACK, NACK, nonces and "what does the client already hold"
are decided in one place; this module only moves messages and holds the current set.

Two rules of its own:

* **Nothing is sent before the first certificate.** Envoy asked; it waits (the bootstrap
  and generated configs have no initial fetch timeout for these), and gets the secret the
  moment the CA answers. Answering earlier would be wrong either way: an empty state-of-
  the-world response is rejected by Envoy ("Missing SDS resources"), and a delta removal
  lets the cluster or listener finish warming *without* its secret.
* **Unknown names** (anything but ``default`` and ``ROOTCA``) are logged once per stream.
  State of the world: no answer, as Envoy accepts no empty one; the resource stays
  unsupplied. Delta: the protocol's "does not exist" (the name in ``removed_resources``).
  Istio's agent would instead close the stream with an error, which Envoy retries with
  backoff forever; the outcome for the proxy is the same, without the churn.

The socket is created with mode 0600: only the agent's user, which is the proxy's (the
agent starts the proxy), can ask it for the private key.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs
import grpc
from anyio.streams.memory import MemoryObjectSendStream
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2

from pilotfish.core import unix_grpc
from pilotfish.core.security.workload_cert import WorkloadSecret
from pilotfish.core.xds import types
from pilotfish.core.xds.resources import Resource, ResourceSet, encode_delta, encode_sotw
from pilotfish.core.xds.server import read_requests
from pilotfish.core.xds.session import Mode, Outcome, Session, SyncStatus

log = logging.getLogger("pilotfish.sds")

SDS_SERVICE = "envoy.service.secret.v3.SecretDiscoveryService"
WORKLOAD_SECRET = "default"
ROOT_SECRET = "ROOTCA"
SERVED = (WORKLOAD_SECRET, ROOT_SECRET)
REQUEST_QUEUE = 16  # per stream: Envoy sends one request per response at most
_UPDATE = object()  # queue marker: the secrets changed


def secret_resources(secret: WorkloadSecret) -> ResourceSet:
    """The two resources the agent serves, inline (the key never touches a file)."""
    default = secret_pb2.Secret(name=WORKLOAD_SECRET, tls_certificate=common_pb2.TlsCertificate(
        certificate_chain=base_pb2.DataSource(inline_bytes=secret.chain_pem.encode()),
        private_key=base_pb2.DataSource(inline_bytes=secret.key_pem.encode()),
    ))
    root = secret_pb2.Secret(name=ROOT_SECRET, validation_context=(
        common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_bytes=secret.roots_pem.encode()))))
    return ResourceSet.of(types.SECRET, [
        Resource.from_message(WORKLOAD_SECRET, types.SECRET, default),
        Resource.from_message(ROOT_SECRET, types.SECRET, root),
    ])


@attrs.define(eq=False)
class SdsStream:
    id: int
    session: Session
    queue: MemoryObjectSendStream[Any]
    node: str = ""
    marker_queued: bool = False
    warned: set[str] = attrs.field(factory=set)

    def notify(self) -> None:
        if self.marker_queued:
            return
        try:
            self.queue.send_nowait(_UPDATE)
            self.marker_queued = True
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # the loop plans after every request it handles anyway


class SdsServer:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self.current: ResourceSet | None = None  # None until the first certificate
        self.streams: dict[int, SdsStream] = {}
        self._ids = itertools.count(1)
        self._progress = anyio.Event()  # set (and replaced) on every ACK or closed stream

    def update(self, resources: ResourceSet) -> None:
        """Serve ``resources`` from now on and push what changed to every stream."""
        self.current = resources if self.current is None else resources.since(self.current)
        for stream in list(self.streams.values()):
            stream.notify()

    def delivered(self, name: str = WORKLOAD_SECRET) -> bool:
        """Every stream that watches ``name`` has ACKed the current version of it."""
        if self.current is None or name not in self.current.resources:
            return False
        version = self.current.resources[name].version
        for stream in self.streams.values():
            watch = stream.session.watches.get(types.SECRET)
            if watch is None or name not in watch.names:
                continue
            if watch.status is not SyncStatus.SYNCED or watch.known.get(name) != version:
                return False
        return True

    async def wait_delivered(self, name: str = WORKLOAD_SECRET) -> None:
        while not self.delivered(name):
            await self._progress.wait()

    # -- gRPC ----------------------------------------------------------------------------

    def handler(self) -> grpc.GenericRpcHandler:
        raw: Callable[[bytes], bytes] = lambda data: data  # noqa: E731 - prebuilt bytes

        async def sotw(_: Any, context: grpc.aio.ServicerContext) -> None:
            await self._stream(context, Mode.SOTW)

        async def delta(_: Any, context: grpc.aio.ServicerContext) -> None:
            await self._stream(context, Mode.DELTA)

        return grpc.method_handlers_generic_handler(SDS_SERVICE, {
            "StreamSecrets": grpc.stream_stream_rpc_method_handler(
                sotw, request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=raw),
            "DeltaSecrets": grpc.stream_stream_rpc_method_handler(
                delta, request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=raw),
        })

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                    ) -> None:
        """Listen on the socket until cancelled."""
        await unix_grpc.serve(self.path, self.handler(), f"SDS ({', '.join(SERVED)})",
                              task_status=task_status)

    def _tick(self) -> None:
        self._progress.set()
        self._progress = anyio.Event()

    async def _stream(self, context: grpc.aio.ServicerContext, mode: Mode) -> None:
        send, receive = anyio.create_memory_object_stream[Any](REQUEST_QUEUE)
        stream_id = next(self._ids)
        stream = SdsStream(stream_id, Session(mode, nonce_prefix=f"sds{stream_id}/"), send)
        self.streams[stream_id] = stream
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_requests, context, send)
                async with receive:
                    async for item in receive:
                        if item is _UPDATE:
                            stream.marker_queued = False
                        else:
                            self._receive(stream, item)
                        await self._respond(stream, context)
                tg.cancel_scope.cancel()
        finally:
            del self.streams[stream_id]
            self._tick()
            log.debug("SDS stream %d (%s) closed", stream_id, stream.node)

    def _receive(self, stream: SdsStream, request: Any) -> None:
        if request.HasField("node") and request.node.id:
            stream.node = request.node.id
        error = request.error_detail.message if request.HasField("error_detail") else None
        if error is not None and not error:
            error = f"rejected (code {request.error_detail.code})"
        now = self.clock()
        if stream.session.mode is Mode.SOTW:
            decision = stream.session.receive_sotw(
                request.type_url, request.resource_names, request.response_nonce,
                request.version_info, error, now)
        else:
            decision = stream.session.receive_delta(
                request.type_url, request.resource_names_subscribe,
                request.resource_names_unsubscribe, dict(request.initial_resource_versions),
                request.response_nonce, error, now)
        if decision.outcome is Outcome.NACK:
            log.warning("SDS: %s rejected the secrets: %s", stream.node or "the proxy",
                        decision.error)
        elif decision.outcome is Outcome.ACK:
            self._tick()

    async def _respond(self, stream: SdsStream, context: grpc.aio.ServicerContext) -> None:
        current = self.current
        watch = stream.session.watches.get(types.SECRET)
        if current is None or watch is None:
            return  # hold the request until the first certificate arrives
        for name in sorted(watch.names - current.resources.keys() - stream.warned):
            stream.warned.add(name)
            log.warning("SDS: %s asked for secret %r; this agent serves only %s (%s)",
                        stream.node or "the proxy", name, " and ".join(SERVED),
                        "no answer" if stream.session.mode is Mode.SOTW
                        else "answered as not found")
        response = stream.session.plan(current)
        if response is None:
            return
        if stream.session.mode is Mode.SOTW:
            data = encode_sotw(response.type_url, response.version, response.nonce,
                               response.resources)
        else:
            data = encode_delta(response.type_url, response.version, response.nonce,
                                response.resources, response.removed)
        await context.write(data)
        stream.session.sent(response, self.clock())
        log.debug("SDS: sent %s to %s (version %s)",
                  ", ".join(r.name for r in response.resources) or "removals",
                  stream.node or "the proxy", response.version)
