"""The native proxy's ADS stream to discovery over gRPC (delta): the IO around
``client_session``. Reconnects with jittered exponential backoff from 0.5 s to 30 s, as
Envoy's bootstrap asks, and keeps serving the last accepted config meanwhile."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from pilotfish.core.native.client_session import DeltaClientSession

log = logging.getLogger("pilotfish.native.xds")

DELTA_METHOD = ("/envoy.service.discovery.v3.AggregatedDiscoveryService/"
                "DeltaAggregatedResources")
BACKOFF = (0.5, 30.0)


class XdsClient:
    def __init__(self, target: str, session: DeltaClientSession,
                 on_change: Callable[[], Awaitable[None]]) -> None:
        self.target = target  # a gRPC target: host:port or unix:PATH
        self.session = session
        self.on_change = on_change
        self.connected = False

    async def run(self) -> None:
        """Until cancelled: keep a stream open, apply what comes."""
        delay = BACKOFF[0]
        while True:
            try:
                await self._stream()
                delay = BACKOFF[0]
            except grpc.aio.AioRpcError as exc:
                log.warning("xDS stream to %s ended: %s %s", self.target, exc.code().name,
                            exc.details())
            self.connected = False
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, BACKOFF[1])

    async def _stream(self) -> None:
        queue: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest | None] = asyncio.Queue()
        for request in self.session.start():
            queue.put_nowait(request)

        async def requests() -> AsyncIterator[discovery_pb2.DeltaDiscoveryRequest]:
            while (request := await queue.get()) is not None:
                yield request

        async with grpc.aio.insecure_channel(self.target) as channel:
            call = channel.stream_stream(
                DELTA_METHOD,
                request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString)
            stream = call(requests())
            self.connected = True
            async for response in stream:
                for request in self.session.receive(response):
                    if request.error_detail.message:
                        log.warning("NACK %s: %s", response.type_url,
                                    request.error_detail.message)
                    queue.put_nowait(request)
                await self.on_change()
            queue.put_nowait(None)
