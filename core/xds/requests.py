"""Reading SotW requests without reading every name in them.

A SotW client repeats every resource name it holds in every request: an Envoy's ACK of
endpoints names each of the thousand clusters it has, ~50 kB, and almost always the same
thousand as before. So a request is read in two steps: its head (the message without the
names: version, nonce, type, error) parsed with a message type that leaves the names as
unread bytes, and an id of those bytes as encoded (`SotwRequest.names_key`, from
`Encodings`). `Session` reads the names themselves (a full parse) only when the id is not
the one it holds.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.rpc import status_pb2  # noqa: F401 - the head's error_detail type, registered

from pilotfish.core.xds.resources import field_bytes, field_str

# Names shorter than this are read rather than fingerprinted: a handful of names costs less.
FINGERPRINT_FROM = 512  # bytes of encoded names


def _head_type() -> Any:
    """DiscoveryRequest with field 3 (resource_names) left out: the parser keeps the names'
    encoding as unknown fields, in order, without making a string of each. ``node`` stays
    bytes too: only a stream's first request needs it, and that one is parsed in full."""
    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="pilotfish/core/xds/sotw_request_head.proto", package="pilotfish.xds",
        syntax="proto3", dependency=["google/rpc/status.proto"])
    head = file.message_type.add(name="SotwRequestHead")
    for number, name, kind in ((1, "version_info", field.TYPE_STRING),
                               (2, "node", field.TYPE_BYTES),
                               (4, "type_url", field.TYPE_STRING),
                               (5, "response_nonce", field.TYPE_STRING)):
        head.field.add(name=name, number=number, type=kind, label=field.LABEL_OPTIONAL)
    head.field.add(name="error_detail", number=6, type=field.TYPE_MESSAGE,
                   type_name=".google.rpc.Status", label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.Default()
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("pilotfish.xds.SotwRequestHead"))


_Head = _head_type()


def nack_text(request: Any) -> str | None:
    """What a request's ``error_detail`` says (None: the request is no NACK)."""
    if not request.HasField("error_detail"):
        return None
    return request.error_detail.message or f"rejected (code {request.error_detail.code})"


class Encodings:
    """Names encodings seen lately, each with an id no other encoding ever gets: the
    fingerprint `SotwRequest` gives its names. Finding a known one costs a comparison of
    bytes (memcmp), not a hash of all of them; thousands of streams share a few encodings
    (one per set of visible services), and each is kept once. At most ``limit`` bytes are
    kept, the oldest forgotten first (a forgotten encoding seen again gets a new id, and
    its stream reads its names once more)."""

    EDGE = 32  # bytes from each end that, with the length, find the candidates
    # Encodings kept per edge: a client sending many alike (same length and ends) must not
    # make every request compare against all of them.
    PER_EDGE = 8

    def __init__(self, limit: int = 16 << 20) -> None:
        self.limit = limit
        self._size = 0
        self._by_edge: dict[tuple[int, bytes], dict[int, bytes]] = {}
        self._order: dict[int, tuple[int, bytes]] = {}  # id -> edge, oldest first
        self._ids = itertools.count(1)

    def id_of(self, data: bytes, start: int, end: int) -> int:
        """The id of ``data[start:end]``."""
        edge = (end - start, data[start:start + self.EDGE] + data[end - self.EDGE:end])
        candidates = self._by_edge.get(edge)
        if candidates:
            for ident, kept in candidates.items():
                if data.startswith(kept, start):  # the same length: the edge says so
                    return ident
        ident = next(self._ids)
        if candidates and len(candidates) >= self.PER_EDGE:
            oldest = next(iter(candidates))
            del self._order[oldest]
            self._forget(oldest, edge)
        self._by_edge.setdefault(edge, {})[ident] = data[start:end]
        self._order[ident] = edge
        self._size += end - start
        while self._size > self.limit and self._order:
            oldest = next(iter(self._order))
            self._forget(oldest, self._order.pop(oldest))
        return ident

    def _forget(self, ident: int, edge: tuple[int, bytes]) -> None:
        candidates = self._by_edge[edge]
        self._size -= len(candidates.pop(ident))
        if not candidates:
            del self._by_edge[edge]


ENCODINGS = Encodings()


class SotwRequest:
    """A DiscoveryRequest as the ADS server reads it (see the module's docstring)."""

    __slots__ = ("_data", "_message", "error", "names_key", "response_nonce", "type_url",
                 "version_info")

    def __init__(self, data: bytes, encodings: Encodings = ENCODINGS) -> None:
        """Raises protobuf's DecodeError as parsing the whole message would."""
        head = _Head.FromString(data)
        self._data = data
        self._message: discovery_pb2.DiscoveryRequest | None = None
        self.type_url: str = head.type_url
        self.version_info: str = head.version_info
        self.response_nonce: str = head.response_nonce
        self.error = nack_text(head)
        self.names_key: int | None = None
        if self.response_nonce and self.error is None:
            self.names_key = _names_key(data, head, encodings)

    @property
    def message(self) -> discovery_pb2.DiscoveryRequest:
        """The whole request, parsed on first use."""
        if self._message is None:
            self._message = discovery_pb2.DiscoveryRequest.FromString(self._data)
        return self._message

    @property
    def resource_names(self) -> Any:
        return self.message.resource_names

    @property
    def names(self) -> _Names:
        """The resource names, parsed only if iterated."""
        return _Names(self)


def _names_key(data: bytes, head: Any, encodings: Encodings) -> int | None:
    """The id of the encoding of the request's names (and of any field this server does not
    read): what is left once the fields read from ``head`` are taken out.

    A client encodes fields in field-number order (Envoy, grpc-go, protobuf everywhere), so
    that is the middle of the request, between its version and node and its type and
    nonce: found by checking that the request starts and ends with those fields' encodings,
    and compared in place. A request laid out otherwise is re-encoded without them."""
    prefix = field_str(1, head.version_info) + (field_bytes(2, head.node) if head.node else b"")
    suffix = field_str(4, head.type_url) + field_str(5, head.response_nonce)
    start, end = len(prefix), len(data) - len(suffix)
    if end - start >= FINGERPRINT_FROM and data.startswith(prefix) and data.endswith(suffix):
        return encodings.id_of(data, start, end)
    for name in ("version_info", "node", "type_url", "response_nonce"):
        head.ClearField(name)
    rest = head.SerializeToString()
    return encodings.id_of(rest, 0, len(rest)) if len(rest) >= FINGERPRINT_FROM else None


class _Names:
    __slots__ = ("_request",)

    def __init__(self, request: SotwRequest) -> None:
        self._request = request

    def __iter__(self) -> Iterator[str]:
        return iter(self._request.resource_names)
