"""The native proxy's xDS streams over gRPC: the IO around ``client_session``. ADS to
discovery, delta or state of the world (the method says which messages it carries); SDS to
the agent, delta. Reconnects with jittered exponential backoff from 0.5 s to 30 s, as
Envoy's bootstrap asks, and keeps serving the last accepted config meanwhile. ztunnel's WDS
stream is one too. gRPC is ``grpc_client``'s, on the proxy's own HTTP/2."""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from pilotfish.core.native.grpc_client import Channel, GrpcError

log = logging.getLogger("pilotfish.native.xds")

DELTA_METHOD = ("/envoy.service.discovery.v3.AggregatedDiscoveryService/"
                "DeltaAggregatedResources")
SOTW_METHOD = ("/envoy.service.discovery.v3.AggregatedDiscoveryService/"
               "StreamAggregatedResources")
SDS_METHOD = "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets"


def envoy_response_type(method: str) -> type[Any]:
    """Envoy's message for ``method``'s responses (its requests are what the session makes).
    Imported on use: ztunnel's stream names its own slim type and so never loads Envoy's."""
    from envoy.service.discovery.v3 import discovery_pb2

    responses: dict[str, type[Any]] = {DELTA_METHOD: discovery_pb2.DeltaDiscoveryResponse,
                                       SOTW_METHOD: discovery_pb2.DiscoveryResponse,
                                       SDS_METHOD: discovery_pb2.DeltaDiscoveryResponse}
    return responses[method]

BACKOFF = (0.5, 30.0)


class Session(Protocol):
    """A sans-IO session of ``client_session``: requests are Delta/DiscoveryRequests as
    its method carries them."""

    def start(self) -> list[Any]: ...

    def receive(self, response: Any) -> list[Any]: ...


class XdsClient:
    """One stream (ADS to discovery, or SDS to the agent) with its session."""

    def __init__(self, target: str, session: Session,
                 on_change: Callable[[], Awaitable[None]], method: str = DELTA_METHOD,
                 credentials: Callable[[], Awaitable[tuple[ssl.SSLContext, str]]]
                 | None = None, response_type: type[Any] | None = None) -> None:
        self.target = target  # a gRPC target: host:port or unix:PATH
        self.session = session
        self.on_change = on_change
        self.method = method
        # the message ``method``'s responses parse into: Envoy's unless the session's own
        self.response_type = response_type or envoy_response_type(method)
        # mutual TLS: waits for the certificates, then (TLS context, the server's name)
        self.credentials = credentials
        self.connected = False
        self.answered = False  # the current stream has had a response
        self._queue: asyncio.Queue[Any] | None = None

    def send(self, requests: list[Any]) -> None:
        """Requests the session made outside a response (new subscriptions); on the next
        stream ``start`` says them again if this one is down."""
        if self._queue is not None:
            for request in requests:
                self._queue.put_nowait(request)

    async def run(self) -> None:
        """Until cancelled: keep a stream open, apply what comes."""
        delay = BACKOFF[0]
        while True:
            self.answered = False
            try:
                await self._stream()
            except GrpcError as exc:
                log.warning("xDS stream to %s ended: %s %s", self.target, exc.code,
                            exc.details)
            self.connected = False
            if self.answered:  # a stream that worked: the next attempt starts over
                delay = BACKOFF[0]
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, BACKOFF[1])

    async def _stream(self) -> None:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._queue = queue
        for request in self.session.start():
            queue.put_nowait(request)

        async def requests() -> AsyncIterator[Any]:
            while (request := await queue.get()) is not None:
                yield request

        try:
            await self._run(queue, requests())
        finally:
            self._queue = None

    async def _run(self, queue: asyncio.Queue[Any], requests: AsyncIterator[Any]) -> None:
        if self.credentials is not None:
            context, name = await self.credentials()
            channel = Channel(self.target, context, name)
        else:
            channel = Channel(self.target)
        async with channel:
            self.connected = True
            async for response in channel.stream(self.method, requests,
                                                 self.response_type):
                self.answered = True
                for request in self.session.receive(response):
                    if request.error_detail.message:
                        log.warning("NACK %s: %s", response.type_url,
                                    request.error_detail.message)
                    queue.put_nowait(request)
                await self.on_change()
            queue.put_nowait(None)
