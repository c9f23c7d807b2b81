"""The access logs of every HCM and tcp_proxy: a text line on the proxy's stdout, and a
structured entry over gRPC to the agent, which turns entries into Istio's request and TCP
metrics with the labels Envoy's stats cannot give (principals, mTLS, response flags; see
``plugins/envoy/request_metrics.py``).

The gRPC logger targets the bootstrap's ``als-grpc`` cluster (the agent's ``ALS`` socket).
An Envoy whose bootstrap lacks it still accepts the config; its entries are dropped.
"""

from __future__ import annotations

import json

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import (
    config_source_pb2,
    grpc_service_pb2,
    substitution_format_string_pb2,
)
from envoy.config.core.v3.base_pb2 import DataSource
from envoy.data.accesslog.v3 import accesslog_pb2 as entry_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from google.protobuf import struct_pb2, wrappers_pb2

from pilotfish.core.istio_metrics import LOCAL_PRINCIPAL, PEER_PRINCIPAL
from pilotfish.core.proxy_backend import ALS_CLUSTER
from pilotfish.translators.common import duration, pack

STDOUT_LOGGER = "envoy.access_loggers.stdout"
HTTP_GRPC_LOGGER = "envoy.access_loggers.http_grpc"
TCP_GRPC_LOGGER = "envoy.access_loggers.tcp_grpc"
METRICS_LOG_NAME = "pilotfish-metrics"  # the agent keeps one logger per name: one for all
FLUSH_INTERVAL = 1.0  # seconds; Envoy's default, said out loud
# A batch is sent when this full (Envoy's default: 16 KiB, ~40 entries). Each batch costs
# the agent a gRPC message on top of its entries; bigger batches, fewer messages.
BUFFER_SIZE_BYTES = 65536

# One line per request or TCP connection, in the spirit of Istio's default text format but
# shorter: what was asked, what happened (code, flags, details), how long, and where it went.
# HTTP-only operators print "-" on TCP connections, so the same format serves both. The raw
# cluster name, because %UPSTREAM_CLUSTER% prints the cluster's alt_stat_name ("name;").
ACCESS_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% "
    "%BYTES_RECEIVED% %BYTES_SENT% %DURATION%ms "
    '"%REQ(:AUTHORITY)%" "%REQ(X-REQUEST-ID)%" "%REQ(USER-AGENT)%" '
    "%UPSTREAM_CLUSTER_RAW% %UPSTREAM_HOST% "
    "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %REQUESTED_SERVER_NAME% "
    "%ROUTE_NAME%\n"
)


# Istio's default for accessLogEncoding JSON (its keys and operators): one object a line.
ISTIO_JSON_FORMAT = {
    "start_time": "%START_TIME%",
    "route_name": "%ROUTE_NAME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration": "%DURATION%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "authority": "%REQ(:AUTHORITY)%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER_RAW%",
    "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "requested_server_name": "%REQUESTED_SERVER_NAME%",
    "upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}


def log_format(encoding: str = "TEXT", text: str = ""
               ) -> substitution_format_string_pb2.SubstitutionFormatString:
    """The line as the mesh config's accessLogEncoding and accessLogFormat shape it (both
    checked by ``core/meshconfig``): TEXT, the format (a newline added where it has none,
    as Istio does) or pilotfish's line; JSON, the format's object or Istio's keys."""
    if encoding == "JSON":
        shape = json.loads(text) if text else ISTIO_JSON_FORMAT
        fields = struct_pb2.Struct()
        fields.update(shape)
        return substitution_format_string_pb2.SubstitutionFormatString(json_format=fields)
    if text and not text.endswith("\n"):
        text += "\n"
    return substitution_format_string_pb2.SubstitutionFormatString(
        text_format_source=DataSource(inline_string=text or ACCESS_LOG_FORMAT))


def stdout_access_log(only_at_end: bool = False) -> accesslog_pb2.AccessLog:
    """Access log to the proxy's stdout: it makes the data plane debuggable by default.
    ``only_at_end``: skip tcp_proxy's extra entry at connect (one line per connection)."""
    log = accesslog_pb2.AccessLog(
        name=STDOUT_LOGGER,
        typed_config=pack(stream_pb2.StdoutAccessLog(log_format=log_format())),
    )
    if only_at_end:
        log.filter.log_type_filter.types.append(entry_pb2.TcpConnectionEnd)
    return log


def _common() -> als_pb2.CommonGrpcAccessLogConfig:
    return als_pb2.CommonGrpcAccessLogConfig(
        log_name=METRICS_LOG_NAME,
        grpc_service=grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=ALS_CLUSTER)),
        transport_api_version=config_source_pb2.V3,
        buffer_flush_interval=duration(FLUSH_INTERVAL),
        buffer_size_bytes=wrappers_pb2.UInt32Value(value=BUFFER_SIZE_BYTES),
        # A stream an HBONE tunnel brought to the inbound chains over an internal listener
        # has no TLS of its own: the tunnel's identities are in these (absent elsewhere,
        # where they cost Envoy a lookup and nothing on the wire).
        filter_state_objects_to_log=[PEER_PRINCIPAL, LOCAL_PRINCIPAL],
    )


def for_http() -> list[accesslog_pb2.AccessLog]:
    return [stdout_access_log(), accesslog_pb2.AccessLog(
        name=HTTP_GRPC_LOGGER, typed_config=pack(als_pb2.HttpGrpcAccessLogConfig(
            common_config=_common(),
            # What tells gRPC from HTTP, and the gRPC status (in trailers, or in the
            # headers of a trailers-only response).
            additional_request_headers_to_log=["content-type"],
            additional_response_headers_to_log=["grpc-status"],
            additional_response_trailers_to_log=["grpc-status"],
        )))]


def for_tcp() -> list[accesslog_pb2.AccessLog]:
    return [stdout_access_log(only_at_end=True), accesslog_pb2.AccessLog(
        name=TCP_GRPC_LOGGER, typed_config=pack(als_pb2.TcpGrpcAccessLogConfig(
            common_config=_common())))]
