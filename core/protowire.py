"""Protocol Buffers' wire format for the few messages ztunnel speaks, without the protobuf
runtime.

The runtime (its C extension, descriptor pool and generated modules) costs ztunnel ~3.6 MiB
of its 30 MB (issue 13; docs/benchmarks.md, the Ambient section). ztunnel only decodes
Workload Discovery resources, delta xDS responses, ZDS requests and the CA's answer, and
encodes the matching requests, so it carries this codec instead: messages are small classes
whose field tables ``scripts/gen_protos.py`` writes from the protos' descriptors (the
``*_wire.py`` modules beside the ``*_pb2.py`` ones, checked like them), and whose objects
read like protobuf's where ztunnel's code reads them: attributes with proto3's defaults,
``HasField``, ``WhichOneof``, ``FromString`` / ``SerializeToString``, enums with ``Name``.
Anything that serves or builds those types in bulk (discovery, translators, tests) keeps the
real protobuf classes; the tests check both agree byte for byte where it matters.

Sans-IO: bytes in, objects out, and back. Unknown fields are skipped, as protobuf does;
malformed bytes raise ``WireError`` naming the message and the field.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

__all__ = ["Enum", "Field", "Message", "WireError", "link"]

# Wire types (the low three bits of a field's key).
VARINT, I64, LEN, I32 = 0, 1, 2, 5
_MASK64 = (1 << 64) - 1

# Scalar kinds: their wire type, and how a decoded number or run of bytes becomes a value.
_FIXED = {"fixed32": "<I", "sfixed32": "<i", "float": "<f",
          "fixed64": "<Q", "sfixed64": "<q", "double": "<d"}
_WIRE_TYPE = {
    **dict.fromkeys(("int32", "int64", "uint32", "uint64", "sint32", "sint64", "bool",
                     "enum"), VARINT),
    "fixed32": I32, "sfixed32": I32, "float": I32,
    "fixed64": I64, "sfixed64": I64, "double": I64,
    "string": LEN, "bytes": LEN, "message": LEN,
}
_DEFAULTS: dict[str, object] = {
    **dict.fromkeys(("int32", "int64", "uint32", "uint64", "sint32", "sint64", "enum",
                     "fixed32", "sfixed32", "fixed64", "sfixed64"), 0),
    "float": 0.0, "double": 0.0, "bool": False, "string": "", "bytes": b"",
}


class WireError(ValueError):
    """Bytes that are not the message they should be; the text names the message and field."""


class Enum:
    """A proto enum's names and numbers (``Name(number)``, ``Value(name)``, and each name as
    an attribute), as protobuf's enum wrappers offer them. Values stay plain ints: proto3
    enums are open, a number with no name decodes too."""

    def __init__(self, full_name: str, values: Mapping[str, int]) -> None:
        self.full_name = full_name
        self._by_name = dict(values)
        self._by_number: dict[int, str] = {}
        for name, number in values.items():
            self._by_number.setdefault(number, name)
            setattr(self, name, number)

    def Name(self, number: int) -> str:
        try:
            return self._by_number[number]
        except KeyError:
            raise ValueError(f"{self.full_name} has no value {number}") from None

    def Value(self, name: str) -> int:
        try:
            return self._by_name[name]
        except KeyError:
            raise ValueError(f"{self.full_name} has no value named {name!r}") from None


class Field:
    """One field of a message's table. ``kind`` is the proto scalar type, ``"message"`` or
    ``"map"``; ``ref`` names the message class (``"message"``, or a map's value when it is
    a message) by its path in the generated module until ``link`` resolves it; a map's key
    and value kinds are ``key`` and ``value``."""

    __slots__ = (
        "key",
        "kind",
        "name",
        "number",
        "oneof",
        "presence",
        "ref",
        "repeated",
        "value",
        "wire_type",
    )

    def __init__(self, name: str, number: int, kind: str, ref: Any = None, *,
                 repeated: bool = False, oneof: str = "", presence: bool = False,
                 key: str = "", value: str = "") -> None:
        self.name = name
        self.number = number
        self.kind = kind
        self.ref = ref
        self.repeated = repeated
        self.oneof = oneof
        # Messages and oneof members always track whether they were set; proto3 scalars only
        # when declared ``optional``.
        self.presence = presence or (kind == "message" and not repeated) or bool(oneof)
        self.key = key
        self.value = value
        self.wire_type = LEN if kind == "map" else _WIRE_TYPE[kind]

    def default(self) -> Any:
        if self.kind == "map":
            return {}
        if self.repeated:
            return []
        if self.kind == "message":
            return self.ref()
        return _DEFAULTS[self.kind]


class Message:
    """A message of a generated ``*_wire`` module: set fields live in ``_values``; an unset
    field reads as its proto3 default. A repeated field or a map read while unset is kept, so
    that ``m.items.append(x)`` works as in protobuf; a submessage is set by assigning it or
    passing it to the constructor (nothing here writes through an unset one)."""

    __slots__ = ("_values",)
    FULL_NAME: ClassVar[str] = ""
    FIELDS: ClassVar[tuple[Field, ...]] = ()
    _by_name: ClassVar[dict[str, Field]]
    _by_number: ClassVar[dict[int, Field]]
    _oneofs: ClassVar[dict[str, tuple[str, ...]]]
    _in_order: ClassVar[tuple[Field, ...]]  # by number, the order protobuf writes them

    def __init_subclass__(cls) -> None:
        cls._in_order = tuple(sorted(cls.FIELDS, key=lambda f: f.number))
        cls._by_name = {f.name: f for f in cls.FIELDS}
        cls._by_number = {f.number: f for f in cls.FIELDS}
        oneofs: dict[str, list[str]] = {}
        for f in cls.FIELDS:
            if f.oneof:
                oneofs.setdefault(f.oneof, []).append(f.name)
        cls._oneofs = {name: tuple(members) for name, members in oneofs.items()}

    def __init__(self, **fields: Any) -> None:
        object.__setattr__(self, "_values", {})
        for name, value in fields.items():
            if value is None:
                continue
            field = self._field(name)
            if field.kind == "map":
                self._values[name] = dict(value)
            elif field.repeated:
                self._values[name] = list(value)
            else:
                setattr(self, name, value)

    def _field(self, name: str) -> Field:
        try:
            return self._by_name[name]
        except KeyError:
            raise AttributeError(f"{self.FULL_NAME} has no field {name!r}") from None

    def __getattr__(self, name: str) -> Any:
        values = self._values
        if name in values:
            return values[name]
        field = self._field(name)
        value = field.default()
        if field.repeated or field.kind == "map":
            values[name] = value  # kept, so that appending to it lands here
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        field = self._field(name)
        if field.oneof:
            for other in self._oneofs[field.oneof]:
                self._values.pop(other, None)
        self._values[name] = value

    def HasField(self, name: str) -> bool:
        if name in self._oneofs:
            return self.WhichOneof(name) is not None
        if not self._field(name).presence:
            raise ValueError(f"{self.FULL_NAME}.{name} has no presence (a proto3 scalar or "
                             "a repeated field)")
        return name in self._values

    def WhichOneof(self, oneof: str) -> str | None:
        try:
            members = self._oneofs[oneof]
        except KeyError:
            raise ValueError(f"{self.FULL_NAME} has no oneof {oneof!r}") from None
        for name in members:
            if name in self._values:
                return name
        return None

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._held() == other._held()

    def _held(self) -> dict[str, Any]:
        """What equality compares, as protobuf does: a field is the same unset or set to
        what it reads as unset, unless it tracks presence."""
        return {name: value for name, value in self._values.items()
                if self._by_name[name].presence or value != self._by_name[name].default()}

    __hash__ = None  # type: ignore[assignment]  # mutable, as protobuf's messages

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"{type(self).__name__}({shown})"

    @classmethod
    def FromString(cls, data: bytes) -> Any:
        message = cls()
        _decode_into(message, memoryview(data), 0, len(data))
        return message

    def ParseFromString(self, data: bytes) -> None:
        self._values.clear()
        _decode_into(self, memoryview(data), 0, len(data))

    def SerializeToString(self) -> bytes:
        out = bytearray()
        _encode(self, out)
        return bytes(out)


def link(namespace: Mapping[str, Any], classes: Iterable[type[Message]]) -> None:
    """Resolve each field's ``ref`` (a dotted path in ``namespace``, the generated module's
    globals) to its class, once every class exists: messages may refer to each other in any
    order (``Struct`` and ``Value`` do)."""
    for cls in classes:
        for field in cls.FIELDS:
            if isinstance(field.ref, str):
                target: Any = namespace[field.ref.split(".")[0]]
                for part in field.ref.split(".")[1:]:
                    target = getattr(target, part)
                field.ref = target


# -- decoding --------------------------------------------------------------------------------

def _varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise IndexError("a varint runs past the end")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise IndexError("a varint longer than ten bytes")


def _skip(data: memoryview, pos: int, end: int, wire_type: int) -> int:
    if wire_type == VARINT:
        return _varint(data, pos, end)[1]
    if wire_type == I64:
        pos += 8
    elif wire_type == I32:
        pos += 4
    elif wire_type == LEN:
        length, pos = _varint(data, pos, end)
        pos += length
    else:
        raise IndexError(f"wire type {wire_type}, which proto3 messages never carry")
    if pos > end:
        raise IndexError("a field runs past the end")
    return pos


def _from_varint(kind: str, value: int) -> object:
    if kind in ("int32", "enum"):
        value &= 0xFFFFFFFF
        return value - (1 << 32) if value & 0x80000000 else value
    if kind == "int64":
        value &= _MASK64
        return value - (1 << 64) if value & (1 << 63) else value
    if kind == "uint32":
        return value & 0xFFFFFFFF
    if kind == "uint64":
        return value & _MASK64
    if kind in ("sint32", "sint64"):
        if kind == "sint32":
            value &= 0xFFFFFFFF
        return (value >> 1) ^ -(value & 1)
    return value != 0  # bool


def _scalar(kind: str, data: memoryview, pos: int, end: int) -> tuple[object, int]:
    """One scalar of ``kind`` at ``pos`` (not a string, bytes or message) → (value, end)."""
    if kind in _FIXED:
        fmt = _FIXED[kind]
        size = struct.calcsize(fmt)
        if pos + size > end:
            raise IndexError("a fixed-width value runs past the end")
        return struct.unpack_from(fmt, data, pos)[0], pos + size
    raw, pos = _varint(data, pos, end)
    return _from_varint(kind, raw), pos


def _decode_into(message: Message, data: memoryview, pos: int, end: int) -> None:
    cls = type(message)
    values = message._values
    while pos < end:
        try:
            key, pos = _varint(data, pos, end)
        except IndexError as exc:
            raise WireError(f"{cls.FULL_NAME}: a field's key: {exc}") from None
        number, wire_type = key >> 3, key & 7
        field = cls._by_number.get(number)
        try:
            if field is None:
                if number == 0:
                    raise IndexError("field number 0")
                pos = _skip(data, pos, end, wire_type)
                continue
            pos = _decode_field(message, values, field, wire_type, data, pos, end)
        except WireError as exc:
            name = field.name if field is not None else f"field {number}"
            raise WireError(f"{cls.FULL_NAME}.{name}: {exc}") from None
        except (IndexError, UnicodeDecodeError, struct.error) as exc:
            name = field.name if field is not None else f"field {number}"
            raise WireError(f"{cls.FULL_NAME}.{name}: {exc}") from None


def _decode_field(message: Message, values: dict[str, Any], field: Field, wire_type: int,
                  data: memoryview, pos: int, end: int) -> int:
    kind = field.kind
    packed = field.repeated and wire_type == LEN and field.wire_type != LEN
    if wire_type != field.wire_type and not packed:
        raise WireError(f"wire type {wire_type}, expected {field.wire_type} ({kind})")
    if wire_type == LEN:
        length, pos = _varint(data, pos, end)
        stop = pos + length
        if stop > end:
            raise IndexError(f"{length} bytes announced, {end - pos} left")
        if packed:
            items = values.setdefault(field.name, [])
            while pos < stop:
                item, pos = _scalar(kind, data, pos, stop)
                items.append(item)
            if pos != stop:
                raise IndexError("a packed value runs past its run")
            return stop
        if kind == "string":
            value: Any = str(data[pos:stop], "utf-8")
        elif kind == "bytes":
            value = bytes(data[pos:stop])
        elif kind == "map":
            entry_key, entry_value = _map_entry(field, data, pos, stop)
            values.setdefault(field.name, {})[entry_key] = entry_value
            return stop
        elif field.repeated:
            value = field.ref()
            _decode_into(value, data, pos, stop)
        else:
            # A singular submessage seen twice merges, as protobuf's parsers do.
            value = values.get(field.name)
            if value is None:
                value = field.ref()
            _decode_into(value, data, pos, stop)
        pos = stop
    else:
        value, pos = _scalar(kind, data, pos, end)
    if field.repeated:
        values.setdefault(field.name, []).append(value)
    else:
        if field.oneof:
            for other in message._oneofs[field.oneof]:
                if other != field.name:
                    values.pop(other, None)
        values[field.name] = value
    return pos


def _map_entry(field: Field, data: memoryview, pos: int, end: int) -> tuple[Any, Any]:
    """A map entry is a message of ``key = 1`` and ``value = 2``; either may be missing."""
    key: Any = _DEFAULTS[field.key]
    value: Any = None
    while pos < end:
        tag, pos = _varint(data, pos, end)
        number, wire_type = tag >> 3, tag & 7
        kind = field.key if number == 1 else field.value if number == 2 else ""
        if not kind or wire_type != (LEN if kind == "message" else _WIRE_TYPE[kind]):
            pos = _skip(data, pos, end, wire_type)
            continue
        if wire_type == LEN:
            length, pos = _varint(data, pos, end)
            stop = pos + length
            if stop > end:
                raise IndexError(f"{length} bytes announced, {end - pos} left")
            if kind == "string":
                item: Any = str(data[pos:stop], "utf-8")
            elif kind == "bytes":
                item = bytes(data[pos:stop])
            else:
                item = value if value is not None else field.ref()
                _decode_into(item, data, pos, stop)
            pos = stop
        else:
            item, pos = _scalar(kind, data, pos, end)
        if number == 1:
            key = item
        else:
            value = item
    if value is None:
        value = field.ref() if field.value == "message" else _DEFAULTS[field.value]
    return key, value


# -- encoding --------------------------------------------------------------------------------

def _put_varint(out: bytearray, value: int) -> None:
    value &= _MASK64  # negative int32/int64: ten bytes, two's complement, as protobuf
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def _put_scalar(out: bytearray, kind: str, value: Any) -> None:
    if kind in _FIXED:
        out += struct.pack(_FIXED[kind], value)
    elif kind in ("sint32", "sint64"):
        bits = 32 if kind == "sint32" else 64
        _put_varint(out, (value << 1) ^ (value >> (bits - 1)))
    elif kind == "bool":
        out.append(1 if value else 0)
    else:
        _put_varint(out, int(value))


def _put_value(out: bytearray, number: int, kind: str, value: Any) -> None:
    if kind == "message":
        body = bytearray()
        _encode(value, body)
        _put_varint(out, number << 3 | LEN)
        _put_varint(out, len(body))
        out += body
    elif kind in ("string", "bytes"):
        raw = value.encode() if kind == "string" else bytes(value)
        _put_varint(out, number << 3 | LEN)
        _put_varint(out, len(raw))
        out += raw
    else:
        _put_varint(out, number << 3 | _WIRE_TYPE[kind])
        _put_scalar(out, kind, value)


def _encode(message: Message, out: bytearray) -> None:
    values = message._values
    for field in message._in_order:
        if field.name not in values:
            continue
        value = values[field.name]
        kind = field.kind
        if kind == "map":
            for key, item in value.items():
                entry = bytearray()
                _put_value(entry, 1, field.key, key)
                _put_value(entry, 2, field.value, item)
                _put_varint(out, field.number << 3 | LEN)
                _put_varint(out, len(entry))
                out += entry
        elif field.repeated:
            if field.wire_type != LEN:  # proto3 packs repeated scalars
                if value:
                    run = bytearray()
                    for item in value:
                        _put_scalar(run, kind, item)
                    _put_varint(out, field.number << 3 | LEN)
                    _put_varint(out, len(run))
                    out += run
            else:
                for item in value:
                    _put_value(out, field.number, kind, item)
        elif field.presence or value != _DEFAULTS[kind] or (kind in ("float", "double")
                                          and struct.pack("<d", value) != bytes(8)):
            _put_value(out, field.number, kind, value)
