"""Envoy's access-log messages with only the fields Istio's metrics read.

Envoy's gRPC access logger sends every field it knows (addresses, eight timings, the
stream id, byte counts on the wire...), some 400 bytes an entry; the agent reads a dozen.
These message types are Envoy's own (``envoy/data/accesslog/v3/accesslog.proto``,
``envoy/service/accesslog/v3/als.proto``) with the other fields left out, field numbers
unchanged: the same bytes parse into them, what is left out stays unparsed bytes, and
``request_metrics`` reads them as it reads Envoy's types.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "pilotfish.envoy.slim"
ENVOYS = (".envoy.data.accesslog.v3.", ".envoy.service.accesslog.v3.")  # both become ours
WELL_KNOWN = ("google/protobuf/any.proto", "google/protobuf/duration.proto",
              "google/protobuf/timestamp.proto", "google/protobuf/wrappers.proto")

# message (by its name in Envoy's file) → the fields kept; a message not named keeps all.
KEPT: Mapping[str, frozenset[str]] = {
    "AccessLogCommon": frozenset({
        "upstream_cluster", "response_flags", "tls_properties",
        "time_to_last_downstream_tx_byte", "duration", "access_log_type",
        "filter_state_objects"}),
    "TLSProperties": frozenset({"local_certificate_properties",
                                "peer_certificate_properties"}),
    "CertificateProperties": frozenset({"subject_alt_name"}),
    "HTTPAccessLogEntry": frozenset({"common_properties", "request", "response"}),
    # Method to user agent and the headers: what a Telemetry's tag expressions may read.
    "HTTPRequestProperties": frozenset({
        "request_method", "scheme", "authority", "path", "user_agent",
        "request_headers_bytes", "request_body_bytes", "request_headers"}),
    "HTTPResponseProperties": frozenset({
        "response_code", "response_headers_bytes", "response_body_bytes",
        "response_headers", "response_trailers"}),
    "Identifier": frozenset({"log_name"}),
}


def _slim(file: Any, name: str) -> descriptor_pb2.FileDescriptorProto:
    """Envoy's file as ``name`` in our package, fields outside `KEPT` removed."""
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    proto.name, proto.package = name, PACKAGE
    proto.ClearField("options")
    proto.ClearField("service")

    def prune(message: descriptor_pb2.DescriptorProto) -> None:
        map_entry = message.options.map_entry
        message.ClearField("options")  # Envoy's annotations: their files are not ours
        if map_entry:
            message.options.map_entry = True
        kept = KEPT.get(message.name)
        fields = [f for f in message.field if kept is None or f.name in kept]
        del message.field[:]
        message.field.extend(fields)
        for field in message.field:
            field.ClearField("options")
            ours = next((p for p in ENVOYS if field.type_name.startswith(p)), None)
            if ours is not None:
                field.type_name = f".{PACKAGE}." + field.type_name[len(ours):]
            elif field.type == field.TYPE_ENUM:  # another file's enum: its number will do
                field.type = field.TYPE_INT32
                field.ClearField("type_name")
        if not any(f.HasField("oneof_index") for f in message.field):
            message.ClearField("oneof_decl")
        for nested in message.nested_type:
            prune(nested)

    for message in proto.message_type:
        prune(message)
    return proto


def _build() -> tuple[Any, Any]:
    pool = descriptor_pool.DescriptorPool()
    for dependency in WELL_KNOWN:
        found = descriptor_pool.Default().FindFileByName(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        found.CopyToProto(proto)
        pool.Add(proto)
    entries = _slim(accesslog_pb2.DESCRIPTOR, "pilotfish/envoy/slim/accesslog.proto")
    service = _slim(als_pb2.DESCRIPTOR, "pilotfish/envoy/slim/als.proto")
    for proto in (entries, service):
        del proto.dependency[:]
        proto.ClearField("public_dependency")
        proto.ClearField("weak_dependency")
    # Types from Envoy's other files that no kept field names are left out with them.
    entries.dependency.extend(WELL_KNOWN)
    service.dependency.append(entries.name)
    pool.Add(entries)
    pool.Add(service)
    message = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{PACKAGE}.StreamAccessLogsMessage"))
    http = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{PACKAGE}.HTTPAccessLogEntry"))
    return message, http


StreamAccessLogsMessage, HTTPAccessLogEntry = _build()
