"""The agent's SDS server: ``default``, ``ROOTCA`` and certificate files for its proxy, on
a unix socket.

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
* **Certificate files** named as Istio's agent names them (``file-cert:<chain>~<key>``,
  ``file-root:<bundle>``: a Gateway's or DestinationRule's certificate files, see
  core/security/file_secrets.py) are read when a stream first asks and every
  ``file_poll`` seconds after: a file not there yet is served once it appears (the listener
  or cluster waits meanwhile), a rotated one is pushed, and one that goes bad leaves the
  last good version served.
* **Unknown names** (anything but ``default``, ``ROOTCA`` and files) are logged once per stream.
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
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2

from pilotfish.core import unix_grpc
from pilotfish.core.security import file_secrets
from pilotfish.core.security.workload_cert import WorkloadSecret
from pilotfish.core.xds import types
from pilotfish.core.xds.requests import nack_text
from pilotfish.core.xds.resources import Resource, ResourceSet
from pilotfish.core.xds.session import Mode, Outcome, Session, SyncStatus
from pilotfish.core.xds.stream import (
    PushQueue,
    StreamState,
    WriteSlots,
    hold_until_done,
    serve_requests,
)

log = logging.getLogger("pilotfish.sds")

SDS_SERVICE = "envoy.service.secret.v3.SecretDiscoveryService"
WORKLOAD_SECRET = "default"
ROOT_SECRET = "ROOTCA"
SERVED = (WORKLOAD_SECRET, ROOT_SECRET)
FILE_POLL = 5.0  # seconds between reads of the certificate files streams asked for
PUSH_WORKERS = 4  # one proxy's few streams; a rotation pushes to all of them
SEND_TIMEOUT = 30.0  # seconds the proxy may take to read a response


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
class SdsStream(StreamState):
    id: int
    session: Session
    context: grpc.aio.ServicerContext
    node: str = ""
    warned: set[str] = attrs.field(factory=set)


class SdsServer:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time,
                 file_poll: float = FILE_POLL) -> None:
        self.path = path
        self.clock = clock
        self.file_poll = file_poll
        self.current: ResourceSet | None = None  # None until there is something to serve
        self._workload: ResourceSet | None = None
        self._files: dict[str, Resource] = {}  # file secrets read, by name
        self._file_problems: dict[str, str] = {}  # why a file secret cannot be read now
        self.streams: dict[int, SdsStream] = {}
        self._ids = itertools.count(1)
        self._progress = anyio.Event()  # set (and replaced) on every ACK or closed stream
        self._slots = WriteSlots(PUSH_WORKERS, SEND_TIMEOUT)
        self._pushes: PushQueue[SdsStream] = PushQueue(self._respond, PUSH_WORKERS,
                                                       self._slots)

    def update(self, resources: ResourceSet) -> None:
        """Serve ``resources`` (the workload's secrets) from now on, beside the file secrets,
        and push what changed to every stream."""
        self._workload = resources
        self._publish()

    def _publish(self) -> None:
        workload = self._workload.resources.values() if self._workload is not None else ()
        files = [self._files[name] for name in sorted(self._files)]
        if self._workload is None and not files:
            return
        resources = ResourceSet.of(types.SECRET, [*workload, *files])
        self.current = resources if self.current is None else resources.since(self.current)
        for stream in self.streams.values():
            self._pushes.add(stream)

    def refresh_files(self, *, new_only: bool = False) -> None:
        """Read the certificate files streams ask for (``new_only``: those not read yet);
        publish what changed. A file that cannot be read leaves the last good version."""
        wanted = {name for stream in self.streams.values()
                  if (watch := stream.session.watches.get(types.SECRET)) is not None
                  for name in watch.names if file_secrets.is_file_secret(name)}
        changed = False
        for name in sorted(wanted):
            if new_only and (name in self._files or name in self._file_problems):
                continue
            try:
                secret = file_secrets.FileSecret.parse(name).load()
            except file_secrets.FileSecretError as exc:
                if self._file_problems.get(name) != str(exc):
                    log.warning("SDS: cannot serve %s: %s (%s)", name, exc,
                                "the last good version stays served" if name in self._files
                                else "the proxy waits for it")
                self._file_problems[name] = str(exc)
                continue
            if self._file_problems.pop(name, None) is not None:
                log.info("SDS: serving %s", name)
            resource = Resource.from_message(name, types.SECRET, secret)
            if (known := self._files.get(name)) is None or known.version != resource.version:
                self._files[name] = resource
                changed = True
        for name in set(self._files) - wanted:  # nobody asks any more
            del self._files[name]
            changed = True
        for name in set(self._file_problems) - wanted:
            del self._file_problems[name]
        if changed:
            self._publish()

    async def _poll_files(self) -> None:
        while True:
            await anyio.sleep(self.file_poll)
            self.refresh_files()

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
        async with anyio.create_task_group() as tg:
            await tg.start(self._pushes.run)
            tg.start_soon(self._poll_files)
            await unix_grpc.serve(self.path, self.handler(),
                                  f"SDS ({', '.join(SERVED)}, certificate files)",
                                  task_status=task_status)
            tg.cancel_scope.cancel()

    def _tick(self) -> None:
        self._progress.set()
        self._progress = anyio.Event()

    async def _stream(self, context: grpc.aio.ServicerContext, mode: Mode) -> None:
        stream_id = next(self._ids)
        stream = SdsStream(stream_id, Session(mode, nonce_prefix=f"sds{stream_id}/"), context)
        self.streams[stream_id] = stream
        try:
            await serve_requests(stream, context, lambda r: self._request(stream, r))
        finally:
            stream.closed = True
            del self.streams[stream_id]
            self._tick()
            log.debug("SDS stream %d (%s) closed", stream_id, stream.node)
        if stream.stalled:
            await hold_until_done(context)

    async def _request(self, stream: SdsStream, request: Any) -> None:
        self._receive(stream, request)
        self.refresh_files(new_only=True)
        await self._respond(stream, stream.stop)

    def _receive(self, stream: SdsStream, request: Any) -> None:
        if request.HasField("node") and request.node.id:
            stream.node = request.node.id
        error = nack_text(request)
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

    def _give_up(self, stream: SdsStream) -> None:
        log.warning("SDS: %s did not read its secrets within %gs; its stream is given up",
                    stream.node or "the proxy", SEND_TIMEOUT)
        stream.give_up()

    async def _respond(self, stream: SdsStream, scope: anyio.CancelScope) -> None:
        current = self.current
        watch = stream.session.watches.get(types.SECRET)
        if current is None or watch is None:
            return  # hold the request until the first certificate arrives
        for name in sorted(watch.names - current.resources.keys() - stream.warned):
            stream.warned.add(name)
            if file_secrets.is_file_secret(name):
                continue  # said by refresh_files
            log.warning("SDS: %s asked for secret %r; this agent serves only %s and "
                        "certificate files (%s)",
                        stream.node or "the proxy", name, ", ".join(SERVED),
                        "no answer" if stream.session.mode is Mode.SOTW
                        else "answered as not found")
        response = stream.session.plan(current)
        if response is None:
            return
        await self._slots.write(stream.context.write,
                                lambda: response.encode(stream.session.mode), scope,
                                lambda: self._give_up(stream))
        stream.session.sent(response, self.clock())
        log.debug("SDS: sent %s to %s (version %s)",
                  ", ".join(r.name for r in response.resources) or "removals",
                  stream.node or "the proxy", response.version)
