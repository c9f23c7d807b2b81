"""A plain ADS client for tests: one stream to discovery, driven a request at a time.

    with AdsStream("127.0.0.1:15010") as stream:
        stream.request(types.CLUSTER)
        reply = stream.response(timeout=1)
        stream.ack(reply)

``fetch`` is the one-shot form: does discovery answer this request, within this time?
``request``, ``ack`` and ``nack`` speak state of the world; ``send`` writes any message as
it is, on a SotW or (``delta=True``) a delta stream, so tests can send what no proxy would
(unknown type URLs, NACKs with long messages, garbage node ids).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
DELTA_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
PROBE_NODE = "sidecar~10.0.0.1~probe.default~default.svc.cluster.local"
_END = object()


def node(node_id: str = PROBE_NODE, metadata: Mapping[str, Any] | None = None) -> base_pb2.Node:
    packed = struct_pb2.Struct()
    packed.update(dict(metadata or {}))
    return base_pb2.Node(id=node_id, metadata=packed)


class AdsStream:
    def __init__(self, address: str, node_id: str = PROBE_NODE,
                 metadata: Mapping[str, Any] | None = None,
                 channel: grpc.Channel | None = None, *, delta: bool = False) -> None:
        self.node = node(node_id, metadata)
        # A channel of its own (a distinct option) gets a connection of its own.
        self._own = channel is None
        self.channel = channel or grpc.insecure_channel(
            address, options=[("grpc.pilotfish_test_stream", str(id(self)))])
        self._requests: queue.Queue[Any] = queue.Queue()
        self._responses: queue.Queue[Any] = queue.Queue()
        request, response = ((discovery_pb2.DeltaDiscoveryRequest,
                              discovery_pb2.DeltaDiscoveryResponse) if delta else
                             (discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse))
        call = self.channel.stream_stream(
            DELTA_METHOD if delta else METHOD, request_serializer=request.SerializeToString,
            response_deserializer=response.FromString)
        self._call = call(self._outgoing())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.first = True

    def _outgoing(self) -> Iterator[discovery_pb2.DiscoveryRequest]:
        while (item := self._requests.get()) is not _END:
            yield item

    def _read(self) -> None:
        try:
            for response in self._call:
                self._responses.put(response)
        except grpc.RpcError as exc:
            self._responses.put(exc)
        self._responses.put(_END)

    def request(self, type_url: str, names: Sequence[str] = (), *, version: str = "",
                nonce: str = "", error: str | None = None) -> None:
        message = discovery_pb2.DiscoveryRequest(
            type_url=type_url, resource_names=list(names), version_info=version,
            response_nonce=nonce)
        if self.first:
            message.node.CopyFrom(self.node)
            self.first = False
        if error is not None:
            message.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self._requests.put(message)

    def send(self, message: Any) -> None:
        """Write a request as it is: no node is added, nothing is checked."""
        self._requests.put(message)

    def response(self, timeout: float = 5.0) -> Any:
        """The next response (a DeltaDiscoveryResponse on a delta stream); TimeoutError if
        none came, the RpcError if the stream ended."""
        try:
            item = self._responses.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no response within {timeout:g}s") from None
        if item is _END:
            raise EOFError("the stream ended")
        if isinstance(item, grpc.RpcError):
            raise item
        return item

    def ack(self, response: discovery_pb2.DiscoveryResponse,
            names: Sequence[str] = ()) -> None:
        self.request(response.type_url, names, version=response.version_info,
                     nonce=response.nonce)

    def nack(self, response: discovery_pb2.DiscoveryResponse, message: str,
             names: Sequence[str] = ()) -> None:
        self.request(response.type_url, names, nonce=response.nonce, error=message)

    def ended(self, timeout: float) -> BaseException | None:
        """How the stream ended within ``timeout`` (EOFError or the RpcError), else None."""
        try:
            self.response(timeout)
        except (EOFError, grpc.RpcError) as exc:
            return exc
        except TimeoutError:
            return None
        return None

    def half_close(self) -> None:
        """End the requests, as a client that is done asking; responses may still come."""
        self._requests.put(_END)

    def close(self) -> None:
        self._requests.put(_END)
        self._call.cancel()
        if self._own:
            self.channel.close()

    def __enter__(self) -> AdsStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fetch(address: str, type_url: str, names: Sequence[str] = (), *,
          node_id: str = PROBE_NODE, metadata: Mapping[str, Any] | None = None,
          timeout: float = 1.0) -> discovery_pb2.DiscoveryResponse:
    """One request on a fresh stream, its first response (TimeoutError after ``timeout``)."""
    with AdsStream(address, node_id, metadata) as stream:
        stream.request(type_url, names)
        return stream.response(timeout)
