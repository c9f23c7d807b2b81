"""ztunnel's protobuf codec (core/protowire.py and the generated ``*_wire`` tables) reads and
writes what the real protobuf runtime does: randomized messages of every type ztunnel speaks
are encoded by protobuf and decoded by the codec to the same fields, encoded back by the codec
and decoded by protobuf to the same message; unknown fields are skipped; malformed bytes raise
an error naming the message and the field."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from envoy.service.discovery.v3 import discovery_pb2 as envoy
from google.protobuf import any_pb2, duration_pb2, struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pilotfish.core import protowire
from pilotfish.core.ambient import (
    authorization_pb2,
    authorization_wire,
    workload_pb2,
    workload_wire,
    zds_pb2,
    zds_wire,
)
from pilotfish.core.protowire import WireError
from pilotfish.core.security import ca_pb2, ca_wire
from pilotfish.core.xds import types
from pilotfish.core.ztunnel import discovery_pb2, discovery_wire

PAIRS = [(workload_pb2.Address, workload_wire.Address),
         (authorization_pb2.Authorization, authorization_wire.Authorization),
         (zds_pb2.WorkloadRequest, zds_wire.WorkloadRequest),
         (zds_pb2.WorkloadResponse, zds_wire.WorkloadResponse),
         (zds_pb2.ZdsHello, zds_wire.ZdsHello),
         (discovery_pb2.DeltaDiscoveryRequest, discovery_wire.DeltaDiscoveryRequest),
         (discovery_pb2.DeltaDiscoveryResponse, discovery_wire.DeltaDiscoveryResponse),
         (ca_pb2.IstioCertificateRequest, ca_wire.IstioCertificateRequest),
         (ca_pb2.IstioCertificateResponse, ca_wire.IstioCertificateResponse)]
IDS = [p[1].FULL_NAME for p in PAIRS]

F = FieldDescriptor
_INTS = {F.TYPE_INT32: 32, F.TYPE_SINT32: 32, F.TYPE_SFIXED32: 32,
         F.TYPE_INT64: 64, F.TYPE_SINT64: 64, F.TYPE_SFIXED64: 64}
_UINTS = {F.TYPE_UINT32: 32, F.TYPE_FIXED32: 32, F.TYPE_UINT64: 64, F.TYPE_FIXED64: 64}


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t in _INTS:
        bits = _INTS[t]
        return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    if t in _UINTS:
        return st.integers(0, (1 << _UINTS[t]) - 1)
    if t == F.TYPE_BOOL:
        return st.booleans()
    if t == F.TYPE_FLOAT:
        return st.floats(width=32, allow_nan=False)
    if t == F.TYPE_DOUBLE:
        return st.floats(allow_nan=False)
    if t == F.TYPE_STRING:
        return st.text(max_size=12)
    if t == F.TYPE_BYTES:
        return st.binary(max_size=12)
    if t == F.TYPE_ENUM:  # proto3 enums are open: numbers without a name too
        return st.sampled_from([v.number for v in field.enum_type.values]) | st.integers(-3, 40)
    raise AssertionError(field.full_name)


def messages(cls: Any, depth: int = 3) -> st.SearchStrategy[Any]:
    """Random ``cls`` (a protobuf class): each field set or not, at most one per oneof."""
    descriptor = cls.DESCRIPTOR

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        values: dict[str, Any] = {}
        chosen = {o.name: draw(st.sampled_from([None, *(f.name for f in o.fields)]))
                  for o in descriptor.oneofs if not o.name.startswith("_")}
        for field in descriptor.fields:
            oneof = field.containing_oneof
            if oneof is not None and not oneof.name.startswith("_") \
                    and chosen[oneof.name] != field.name:
                continue
            if oneof is None and not draw(st.booleans()):
                continue
            if field.message_type is not None and depth == 0:
                continue
            values[field.name] = draw(_value(field, depth))
        return cls(**values)
    return build()


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        key, value = message.fields_by_name["key"], message.fields_by_name["value"]
        values = (messages(value.message_type._concrete_class, depth - 1)
                  if value.message_type else _scalar(value))
        return st.dictionaries(_scalar(key), values, max_size=3)
    one = messages(message._concrete_class, depth - 1) if message else _scalar(field)
    return st.lists(one, max_size=3) if field.is_repeated else one


def _plain(value: Any) -> Any:
    if isinstance(value, float):  # -0.0 and 0.0 travel apart
        return (value, math.copysign(1.0, value))
    return value


def pb_fields(message: Any) -> dict[str, Any]:
    """What a protobuf message holds, field by field, in plain Python."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            nested = entry.fields_by_name["value"].message_type is not None
            out[field.name] = {k: pb_fields(v) if nested else _plain(v)
                               for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [pb_fields(v) if entry else _plain(v) for v in value]
        elif field.has_presence and not message.HasField(field.name):
            out[field.name] = None
        else:
            out[field.name] = pb_fields(value) if entry else _plain(value)
    return out


def wire_fields(message: protowire.Message) -> dict[str, Any]:
    """The same of a protowire message, read only through what ztunnel's code reads."""
    out: dict[str, Any] = {}
    for field in message.FIELDS:
        value = getattr(message, field.name)
        nested = field.kind == "message" or field.value == "message"
        if field.kind == "map":
            out[field.name] = {k: wire_fields(v) if nested else _plain(v)
                               for k, v in value.items()}
        elif field.repeated:
            out[field.name] = [wire_fields(v) if nested else _plain(v) for v in value]
        elif field.presence and not message.HasField(field.name):
            out[field.name] = None
        else:
            out[field.name] = wire_fields(value) if nested else _plain(value)
    return out


@pytest.mark.parametrize(("pb", "wire"), PAIRS, ids=IDS)
def test_random_messages_decode_as_protobuf_decodes_them(pb: Any, wire: Any) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(messages(pb))
    def check(message: Any) -> None:
        data = message.SerializeToString()
        ours = wire.FromString(data)
        assert wire_fields(ours) == pb_fields(message)
        # ...and what the codec writes, protobuf reads back as the same message.
        assert pb.FromString(ours.SerializeToString()) == message
    check()


@pytest.mark.parametrize(("pb", "wire"), PAIRS, ids=IDS)
def test_unknown_fields_of_every_wire_type_are_skipped(pb: Any, wire: Any) -> None:
    numbers = {f.number for f in pb.DESCRIPTOR.fields}
    free = next(n for n in range(1000, 2000) if n not in numbers)
    unknown = (bytes([free << 3 & 0xFF | 0x80 | 0, free >> 4]) + b"\x96\x01"
               + bytes([free << 3 & 0xFF | 0x80 | 1, free >> 4]) + b"\x00" * 8
               + bytes([free << 3 & 0xFF | 0x80 | 2, free >> 4]) + b"\x03abc"
               + bytes([free << 3 & 0xFF | 0x80 | 5, free >> 4]) + b"\x00" * 4)
    pb.FromString(unknown)  # protobuf takes them too (the bytes are well formed)
    assert wire_fields(wire.FromString(unknown)) == pb_fields(pb())


def test_envoys_fields_that_the_slim_response_leaves_out_are_skipped() -> None:
    real = envoy.DeltaDiscoveryResponse(
        system_version_info="v7", type_url=types.ADDRESS, nonce="n2",
        resources=[envoy.Resource(name="x", version="3",
                                  resource=any_pb2.Any(type_url=types.ADDRESS, value=b"\x01"),
                                  ttl=duration_pb2.Duration(seconds=5))])
    real.control_plane.identifier = "istiod-1"
    ours = discovery_wire.DeltaDiscoveryResponse.FromString(real.SerializeToString())
    (resource,) = ours.resources
    assert (ours.nonce, resource.name, resource.resource.value) == ("n2", "x", b"\x01")


def _address_with_port() -> bytes:
    return workload_pb2.Address(workload=workload_pb2.Workload(
        uid="u", services={"shop/cart": workload_pb2.PortList(
            ports=[workload_pb2.Port(service_port=80, target_port=8080)])})).SerializeToString()


@pytest.mark.parametrize(("data", "named"), [
    # cut short: the outermost length already says so
    (_address_with_port()[:-1], "istio.workload.Address.workload: 27 bytes announced, 26"),
    (b"\x0a\x04\x0a\x03ab", "istio.workload.Workload.name: 3 bytes announced, 2 left"),
    (b"\x0a\x04\x0a\x02\xff\xfe",
     "istio.workload.Address.workload: istio.workload.Workload.name: 'utf-8' codec"),
    (b"\x0d\x00\x00\x00\x00", "istio.workload.Address.workload"),  # fixed32, not a message
    (b"\x0a\x02\x28\x80", "istio.workload.Workload.tunnel_protocol"),  # varint cut off
    (b"\x0a\x01\x0b", "istio.workload.Workload.name: wire type 3"),  # a group
    (b"\x0a\x02\xbb\x3e", "istio.workload.Workload.field 999: wire type 3"),  # unknown
    (b"\x0a\x02\x00\x00", "istio.workload.Workload.field 0"),
], ids=["truncated", "short string", "bad utf-8", "wrong wire type", "short varint",
        "group", "unknown group", "field zero"])
def test_malformed_bytes_name_the_message_and_field(data: bytes, named: str) -> None:
    with pytest.raises(WireError) as caught:
        workload_wire.Address.FromString(data)
    assert named in str(caught.value)


def test_defaults_presence_and_enums_read_as_protobufs() -> None:
    workload = workload_wire.Workload()
    assert (workload.name, workload.addresses, workload.services) == ("", [], {})
    assert not workload.HasField("waypoint") and workload.waypoint.address.length == 0
    assert workload_wire.Address().WhichOneof("type") is None
    assert workload_wire.TunnelProtocol.Name(workload_wire.HBONE) == "HBONE"
    assert workload_wire.ApplicationTunnel.Protocol.Name(0) == \
        workload_pb2.ApplicationTunnel.Protocol.Name(0)
    with pytest.raises(ValueError, match=r"istio\.workload\.TunnelProtocol has no value 99"):
        workload_wire.TunnelProtocol.Name(99)
    with pytest.raises(AttributeError, match=r"istio\.workload\.Workload has no field 'nam'"):
        workload_wire.Workload(nam="x")
    address = workload_wire.NetworkAddress(length=0)
    assert address.HasField("length")  # proto3 optional: set to its default is still set
    assert workload_pb2.NetworkAddress.FromString(address.SerializeToString()).HasField("length")


def test_negative_numbers_and_floats_travel_as_protobufs() -> None:
    real = discovery_pb2.Status(code=-3, message="m")
    assert discovery_wire.Status(code=-3, message="m").SerializeToString() == \
        real.SerializeToString()
    assert discovery_wire.Status.FromString(real.SerializeToString()).code == -3
    value = discovery_wire.Value(number_value=-0.0)
    decoded = struct_pb2.Value.FromString(value.SerializeToString())
    assert struct.pack("<d", decoded.number_value) == struct.pack("<d", -0.0)


def test_equality_is_protobufs() -> None:
    assert discovery_wire.Status(code=0, message="") == discovery_wire.Status()
    assert discovery_wire.Status(details=[]) == discovery_wire.Status()
    assert discovery_wire.Status(code=3) != discovery_wire.Status()
    assert workload_wire.NetworkAddress(length=0) != workload_wire.NetworkAddress()  # presence
    assert discovery_wire.DeltaDiscoveryRequest(initial_resource_versions={"a": "", "b": "1"}) \
        == discovery_wire.DeltaDiscoveryRequest(initial_resource_versions={"b": "1", "a": ""})
