"""Envoy access-log entries for tests, shaped as Envoy's gRPC access logger sends them."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.data.accesslog.v3 import accesslog_pb2 as entry_pb2
from google.protobuf import wrappers_pb2

from pilotfish.core.istio_metrics import LOCAL_PRINCIPAL, PEER_PRINCIPAL


def tunnel_state(common: entry_pb2.AccessLogCommon, peer: str, local: str) -> None:
    """The filter state an entry from a sidecar's ``main_internal`` hop carries, as Envoy
    sends ``envoy.string`` objects: each an ``Any`` of a ``google.protobuf.StringValue``."""
    for key, value in ((PEER_PRINCIPAL, peer), (LOCAL_PRINCIPAL, local)):
        common.filter_state_objects[key].Pack(wrappers_pb2.StringValue(value=value))


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


def envoy_http_entry(cluster: str, index: int = 0, code: int = 200, *, peer: str = "",
                     local: str = "", grpc_status: str = "", flags: Sequence[str] = (),
                     tunnel: tuple[str, str] | None = None) -> entry_pb2.HTTPAccessLogEntry:
    """An entry with every field Envoy 1.40's gRPC access logger fills for a proxied
    HTTP/1.1 request (captured from one, as ``translators/access_logs.py`` configures it),
    varied by ``index`` as a stream of requests is: ports, ids, timings, paths. ``tunnel``:
    the (peer, local) identities of an HBONE tunnel the request came through."""
    entry = entry_pb2.HTTPAccessLogEntry()
    common = entry.common_properties
    port = 30000 + index % 30000
    for address, ip, at in ((common.downstream_remote_address, "10.0.0.7", port),
                            (common.downstream_direct_remote_address, "10.0.0.7", port),
                            (common.downstream_local_address, "10.0.0.9", 8080),
                            (common.upstream_remote_address, "10.0.1.4", 9080),
                            (common.upstream_local_address, "10.0.0.9", 40000 + index % 20000)):
        address.socket_address.address, address.socket_address.port_value = ip, at
    common.start_time.FromNanoseconds(1_796_606_200_000_000_000 + index * 200_000)
    nanos = 300_000 + index % 97 * 1_000
    for field, share in (("time_to_last_rx_byte", 0.09), ("time_to_first_upstream_tx_byte", 0.3),
                         ("time_to_last_upstream_tx_byte", 0.31),
                         ("time_to_first_upstream_rx_byte", 0.9),
                         ("time_to_last_upstream_rx_byte", 0.98),
                         ("time_to_first_downstream_tx_byte", 0.96),
                         ("time_to_last_downstream_tx_byte", 0.995), ("duration", 1.0)):
        getattr(common, field).FromNanoseconds(int(nanos * share))
    common.upstream_cluster = cluster
    common.upstream_request_attempt_count = 1
    stream_id = f"c5aba464-e033-460d-ae7e-{index:012x}"
    common.stream_id = stream_id
    common.downstream_wire_bytes_sent, common.downstream_wire_bytes_received = 1196, 125
    common.upstream_wire_bytes_sent, common.upstream_wire_bytes_received = 222, 1143
    common.access_log_type = entry_pb2.DownstreamEnd
    for flag in flags:
        setattr(common.response_flags, flag, True)
    if peer or local:
        tls = common.tls_properties
        tls.tls_version = entry_pb2.TLSProperties.TLSv1_3
        tls.tls_cipher_suite.value = 0x1301
        tls.tls_sni_hostname = "outbound_.9080_._.reviews.shop.svc.cluster.local"
        tls.tls_session_id = f"{index:064x}"
        if peer:
            tls.peer_certificate_properties.subject_alt_name.add(uri=peer)
            tls.peer_certificate_properties.issuer = "O=cluster.local"
        if local:
            tls.local_certificate_properties.subject_alt_name.add(uri=local)
            tls.local_certificate_properties.issuer = "O=cluster.local"
    if tunnel is not None:
        tunnel_state(common, *tunnel)
    entry.protocol_version = entry_pb2.HTTPAccessLogEntry.HTTP11
    request = entry.request
    request.request_method = 1  # GET
    request.scheme, request.authority = "http", "reviews.shop:9080"
    request.path, request.user_agent = f"/reviews/{index % 100}?page=1", "wrk/4.2"
    request.request_id = stream_id
    request.request_headers_bytes, request.upstream_header_bytes_sent = 213, 198
    request.downstream_header_bytes_received = 97
    response = entry.response
    response.response_code.value = code
    response.response_headers_bytes, response.response_body_bytes = 139, 1024
    response.response_code_details = "via_upstream"
    response.upstream_header_bytes_received, response.downstream_header_bytes_sent = 96, 153
    if grpc_status:
        request.request_headers["content-type"] = "application/grpc"
        response.response_trailers["grpc-status"] = grpc_status
    return entry
