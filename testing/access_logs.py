"""Envoy access-log entries for tests, shaped as Envoy's gRPC access logger sends them."""

from __future__ import annotations

from envoy.data.accesslog.v3 import accesslog_pb2 as entry_pb2


def http_entry(cluster: str, code: int = 200, *, peer: str = "", local: str = "",
               grpc_status: str = "", ms: int = 3) -> entry_pb2.HTTPAccessLogEntry:
    entry = entry_pb2.HTTPAccessLogEntry()
    common = entry.common_properties
    common.upstream_cluster = cluster
    common.time_to_last_downstream_tx_byte.FromMilliseconds(ms)
    if peer:
        common.tls_properties.peer_certificate_properties.subject_alt_name.add(uri=peer)
        common.tls_properties.local_certificate_properties.subject_alt_name.add(uri=local)
    entry.response.response_code.value = code
    entry.request.request_headers_bytes, entry.request.request_body_bytes = 80, 20
    entry.response.response_headers_bytes, entry.response.response_body_bytes = 100, 900
    if grpc_status:
        entry.request.request_headers["content-type"] = "application/grpc"
        entry.response.response_trailers["grpc-status"] = grpc_status
    return entry
