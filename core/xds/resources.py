"""Serialized resources and hand-assembled xDS responses.

A resource is serialized once (as a ``google.protobuf.Any``) and shared by every proxy that
gets it. Responses are assembled from those bytes directly: protobuf's wire format lets a
message be written as the concatenation of its fields, so a DiscoveryResponse for one proxy
is its version, type and nonce fields around pre-encoded resource entries. No per-proxy
protobuf objects are built on the push path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Any

import attrs
from google.protobuf import any_pb2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings, bytes and sub-messages."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def field_str(number: int, value: str) -> bytes:
    return field_bytes(number, value.encode()) if value else b""


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


@attrs.frozen
class Resource:
    """One named xDS resource, serialized as an Any, with a content version."""

    name: str
    type_url: str
    any_bytes: bytes
    version: str

    @classmethod
    def from_message(cls, name: str, type_url: str, message: Any) -> Resource:
        value = message.SerializeToString(deterministic=True)
        any_bytes = field_str(1, type_url) + field_bytes(2, value)
        return cls(name, type_url, any_bytes, digest(any_bytes))

    @cached_property
    def sotw_entry(self) -> bytes:
        """``DiscoveryResponse.resources`` entry (field 2, an Any)."""
        return field_bytes(2, self.any_bytes)

    @cached_property
    def delta_entry(self) -> bytes:
        """``DeltaDiscoveryResponse.resources`` entry: Resource{version=1, resource=2, name=3}."""
        return field_bytes(
            2, field_str(1, self.version) + field_bytes(2, self.any_bytes) + field_str(3, self.name)
        )

    def to_any(self) -> any_pb2.Any:
        out = any_pb2.Any()
        out.ParseFromString(self.any_bytes)
        return out

    def message(self) -> Any:
        """Decode back into the typed message (debug paths only)."""
        from google.protobuf import symbol_database

        packed = self.to_any()
        full_name = packed.type_url.rsplit("/", 1)[-1]
        cls = symbol_database.Default().GetSymbol(full_name)
        msg = cls()
        packed.Unpack(msg)
        return msg


HISTORY = 8  # differences a ResourceSet keeps: from its base and the sets before it


@attrs.frozen
class ResourceSet:
    """All resources of one type generated for one proxy scope, in a stable order.

    A set built to replace an earlier one for the same scope carries the difference:
    ``base`` is the earlier set's version, ``changed`` the names added or modified since,
    ``removed`` the names gone. A client known to hold ``base`` needs only the difference,
    which keeps a small change cheap however many resources and proxies there are.
    """

    type_url: str
    resources: Mapping[str, Resource]
    base: str = ""
    changed: frozenset[str] = frozenset()
    removed: frozenset[str] = frozenset()
    # The differences from the sets before ``base`` too, newest first: (version, changed,
    # removed). A client a push passed over (merged while it waited) is still one lookup.
    earlier: tuple[tuple[str, frozenset[str], frozenset[str]], ...] = ()

    def since(self, previous: ResourceSet) -> ResourceSet:
        """This set, annotated with its difference from ``previous`` and, through it, from
        the few sets before (`HISTORY`)."""
        old, now = previous.resources, self.resources
        changed = frozenset(
            name for name, r in now.items()
            if (prior := old.get(name)) is None or prior.version != r.version
        )
        removed = frozenset(name for name in old if name not in now)
        return previous._followed_by(now, changed, removed)

    def updated(self, resources: Iterable[Resource]) -> ResourceSet:
        """This set with ``resources`` replacing those of the same names (nothing removed),
        annotated as `since` would, without comparing the resources left as they were."""
        now = dict(self.resources)
        changed = set()
        for resource in resources:
            prior = now.get(resource.name)
            if prior is None or prior.version != resource.version:
                changed.add(resource.name)
                now[resource.name] = resource
        if not changed:
            return self
        return self._followed_by(now, frozenset(changed), frozenset())

    def _followed_by(self, now: Mapping[str, Resource], changed: frozenset[str],
                     removed: frozenset[str]) -> ResourceSet:
        """The set of resources ``now``, which differs from this one by changed/removed."""
        steps = ((self.base, self.changed, self.removed), *self.earlier) if self.base else ()
        earlier = tuple(
            (version, frozenset(n for n in was_changed if n in now) | changed,
             frozenset(n for n in was_changed | was_removed if n not in now) | removed)
            for version, was_changed, was_removed in steps[:HISTORY - 1])
        return ResourceSet(self.type_url, now, self.version, changed, removed, earlier)

    def difference(self, version: str) -> tuple[frozenset[str], frozenset[str]] | None:
        """(changed, removed) since the set of ``version``, if it is one of the last few."""
        if not version:
            return None
        if version == self.base:
            return self.changed, self.removed
        for earlier, changed, removed in self.earlier:
            if earlier == version:
                return changed, removed
        return None

    @cached_property
    def version(self) -> str:
        return digest("\n".join(f"{n}={r.version}" for n, r in self.resources.items()).encode())

    @classmethod
    def of(cls, type_url: str, resources: Iterable[Resource]) -> ResourceSet:
        return cls(type_url, {r.name: r for r in resources})

    def __len__(self) -> int:
        return len(self.resources)


def encode_sotw(
    type_url: str, version: str, nonce: str, resources: Iterable[Resource],
    control_plane: bytes = b"",
) -> bytes:
    """A serialized envoy.service.discovery.v3.DiscoveryResponse."""
    return b"".join((
        field_str(1, version),
        *(r.sotw_entry for r in resources),
        field_str(4, type_url),
        field_str(5, nonce),
        field_bytes(6, control_plane) if control_plane else b"",
    ))


def encode_delta(
    type_url: str, version: str, nonce: str, resources: Iterable[Resource],
    removed: Iterable[str], control_plane: bytes = b"",
) -> bytes:
    """A serialized envoy.service.discovery.v3.DeltaDiscoveryResponse."""
    return b"".join((
        field_str(1, version),
        *(r.delta_entry for r in resources),
        field_str(4, type_url),
        field_str(5, nonce),
        *(field_str(6, name) for name in removed),
        field_bytes(7, control_plane) if control_plane else b"",
    ))
