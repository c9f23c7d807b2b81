"""Istio's metrics from access-log entries: labels, buckets, TCP opens and closes."""

from __future__ import annotations

from envoy.data.accesslog.v3 import accesslog_pb2 as entry_pb2
from envoy.service.accesslog.v3 import als_pb2

from pilotfish.core.istio_metrics import PEER_PRINCIPAL, ServiceRef, Workload
from pilotfish.core.metric_overrides import NO_OVERRIDES, Overrides
from pilotfish.core.prometheus import Family, render
from pilotfish.plugins.envoy import slim_entries
from pilotfish.plugins.envoy.request_metrics import RequestMetrics, response_flags
from pilotfish.testing.access_logs import envoy_http_entry, http_entry, tunnel_state

INBOUND = "inbound|8080||"
OUTBOUND = "outbound|9080||reviews.shop.svc.cluster.local"
ME = Workload.from_labels("web-1", "shop", {"app": "web", "version": "v1"})
CLIENT = "spiffe://cluster.local/ns/shop/sa/client"
SERVER = "spiffe://cluster.local/ns/shop/sa/web"


def families(metrics: RequestMetrics) -> dict[str, Family]:
    services = {"inbound|8080||": ServiceRef("web.shop.svc.cluster.local", "web", "shop")}
    return {f.name: f for f in metrics.families(ME, services)}


def test_destination_side_carries_principals_and_mutual_tls():
    metrics = RequestMetrics()
    metrics.record_http(http_entry(INBOUND, peer=CLIENT, local=SERVER))
    metrics.record_http(http_entry(INBOUND, peer=CLIENT, local=SERVER))
    metrics.record_http(http_entry(INBOUND, 503))
    (mutual, plain) = families(metrics)["istio_requests_total"].samples
    assert mutual.value == "2"
    labels = dict(mutual.labels)
    assert labels["reporter"] == "destination"
    assert labels["source_principal"] == CLIENT
    assert labels["destination_principal"] == SERVER
    assert labels["connection_security_policy"] == "mutual_tls"
    assert labels["destination_workload"] == "web-1"
    assert labels["destination_service"] == "web.shop.svc.cluster.local"
    assert labels["response_code"] == "200" and labels["response_flags"] == "-"
    assert [name for name, _ in mutual.labels][:4] == [
        "reporter", "source_workload", "source_workload_namespace", "source_principal"]
    assert dict(plain.labels)["connection_security_policy"] == "none"
    assert dict(plain.labels)["source_principal"] == "unknown"
    assert dict(plain.labels)["response_code"] == "503"


def test_a_tunneled_entry_is_mutual_tls_between_the_tunnels_identities():
    """An entry from a sidecar's internal hop after HBONE: no TLS of its own, the tunnel's
    identities in its filter state; both the batch path and the one-by-one path read them."""
    entries = [http_entry(INBOUND), http_entry(INBOUND), http_entry(INBOUND, 503)]
    for entry in entries[:2]:
        tunnel_state(entry.common_properties, CLIENT, SERVER)
    message = als_pb2.StreamAccessLogsMessage()
    message.http_logs.log_entry.extend(entries)
    batched, one_by_one = RequestMetrics(), RequestMetrics()
    batched.record_message(slim_entries.StreamAccessLogsMessage.FromString(
        message.SerializeToString()))
    for entry in entries:
        one_by_one.record_http(entry)
    for metrics in (batched, one_by_one):
        counted = {(s.label("source_principal"), s.label("destination_principal"),
                    s.label("connection_security_policy"), s.label("response_code")): s.value
                   for s in families(metrics)["istio_requests_total"].samples}
        assert counted == {(CLIENT, SERVER, "mutual_tls", "200"): "2",
                           ("unknown", "unknown", "none", "503"): "1"}


def test_tunnel_state_on_the_source_side_changes_nothing():
    entry = http_entry(OUTBOUND)
    tunnel_state(entry.common_properties, CLIENT, SERVER)
    metrics = RequestMetrics()
    metrics.record_http(entry)
    (sample,) = families(metrics)["istio_requests_total"].samples
    assert sample.label("connection_security_policy") == "unknown"
    assert sample.label("source_principal") == "unknown"


def test_source_side_reports_unknown_security_and_the_service_from_the_cluster():
    metrics = RequestMetrics()
    metrics.record_http(http_entry(OUTBOUND, grpc_status="14"))
    (sample,) = families(metrics)["istio_requests_total"].samples
    labels = dict(sample.labels)
    assert labels["reporter"] == "source" and labels["source_workload"] == "web-1"
    assert labels["connection_security_policy"] == "unknown"
    assert labels["destination_service_name"] == "reviews"
    assert labels["request_protocol"] == "grpc" and labels["grpc_response_status"] == "14"


def test_histograms_have_istio_buckets_cumulative_and_sizes_include_headers():
    metrics = RequestMetrics()
    metrics.record_http(http_entry(INBOUND, ms=3))
    metrics.record_http(http_entry(INBOUND, ms=70))
    found = families(metrics)
    duration = {dict(s.labels).get("le"): s.value
                for s in found["istio_request_duration_milliseconds"].samples
                if s.name.endswith("_bucket")}
    assert duration["1"] == "0" and duration["5"] == "1" and duration["100"] == "2"
    assert duration["+Inf"] == "2"
    sizes = [s for s in found["istio_response_bytes"].samples if s.name.endswith("_sum")]
    assert sizes[0].value == "2000"
    assert "istio_request_bytes_bucket" in render(list(found.values()))


def test_tcp_counts_opened_at_connect_and_bytes_at_close():
    metrics = RequestMetrics()
    message = als_pb2.StreamAccessLogsMessage()
    opened = message.tcp_logs.log_entry.add()
    opened.common_properties.upstream_cluster = INBOUND
    opened.common_properties.access_log_type = entry_pb2.TcpUpstreamConnected
    closed = message.tcp_logs.log_entry.add()
    closed.CopyFrom(opened)
    closed.common_properties.access_log_type = entry_pb2.TcpConnectionEnd
    closed.connection_properties.received_bytes = 10
    closed.connection_properties.sent_bytes = 25
    metrics.record_message(message)
    found = families(metrics)
    assert found["istio_tcp_connections_opened_total"].samples[0].value == "1"
    assert found["istio_tcp_connections_closed_total"].samples[0].value == "1"
    assert found["istio_tcp_sent_bytes_total"].samples[0].value == "25"
    labels = dict(found["istio_tcp_received_bytes_total"].samples[0].labels)
    assert labels["request_protocol"] == "tcp" and "response_code" not in labels


def test_tunneled_tcp_connections_carry_the_tunnels_identities():
    metrics = RequestMetrics()
    message = als_pb2.StreamAccessLogsMessage()
    for kind in (entry_pb2.TcpUpstreamConnected, entry_pb2.TcpConnectionEnd):
        entry = message.tcp_logs.log_entry.add()
        entry.common_properties.upstream_cluster = INBOUND
        entry.common_properties.access_log_type = kind
        tunnel_state(entry.common_properties, CLIENT, SERVER)
    metrics.record_message(slim_entries.StreamAccessLogsMessage.FromString(
        message.SerializeToString()))
    for family in ("istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total"):
        (sample,) = families(metrics)[family].samples
        assert (sample.label("source_principal"), sample.label("destination_principal"),
                sample.label("connection_security_policy")) == (CLIENT, SERVER, "mutual_tls")


def test_entries_outside_istios_clusters_are_skipped():
    metrics = RequestMetrics()
    metrics.record_http(http_entry(""))  # no route: no cluster
    metrics.record_http(http_entry("xds-grpc"))
    assert metrics.skipped == 2 and families(metrics) == {}


def test_response_flags_in_envoys_short_form_and_order():
    flags = entry_pb2.ResponseFlags(no_healthy_upstream=True, upstream_retry_limit_exceeded=True)
    assert response_flags(flags) == "UH,URX"
    denied = entry_pb2.ResponseFlags(rate_limited=True, rate_limit_service_error=True)
    denied.unauthorized_details.reason = entry_pb2.ResponseFlags.Unauthorized.EXTERNAL_SERVICE
    assert response_flags(denied) == "RL,UAEX,RLSE"
    assert response_flags(entry_pb2.ResponseFlags()) == "-"


def test_tcp_opened_on_mtls_is_mutual_before_the_callers_certificate_is_known():
    """tcp_proxy logs at connect before the client's certificate is checked."""
    metrics = RequestMetrics()
    entry = entry_pb2.TCPAccessLogEntry()
    common = entry.common_properties
    common.upstream_cluster = INBOUND
    common.access_log_type = entry_pb2.TcpUpstreamConnected
    common.tls_properties.local_certificate_properties.subject_alt_name.add(uri=SERVER)
    metrics.record_tcp(entry)
    labels = dict(families(metrics)["istio_tcp_connections_opened_total"].samples[0].labels)
    assert labels["connection_security_policy"] == "mutual_tls"
    assert labels["destination_principal"] == SERVER
    assert labels["source_principal"] == "unknown"


def test_statistics_count_what_was_counted_and_skipped():
    metrics = RequestMetrics()
    metrics.record_http(http_entry(INBOUND))
    metrics.record_http(http_entry(""))
    text = render(metrics.statistics())
    assert 'pilotfish_agent_access_log_entries_total{outcome="counted"} 1' in text
    assert 'pilotfish_agent_access_log_entries_total{outcome="skipped"} 1' in text


def test_subsets_of_one_service_sum_onto_one_series():
    metrics = RequestMetrics()
    metrics.record_http(http_entry(OUTBOUND))
    metrics.record_http(http_entry("outbound|9080|v2|reviews.shop.svc.cluster.local"))
    found = families(metrics)
    (sample,) = found["istio_requests_total"].samples
    assert sample.value == "2"
    counts = [s for s in found["istio_request_duration_milliseconds"].samples
              if s.name.endswith("_count")]
    assert [s.value for s in counts] == ["2"]


def _varied_entries() -> list[entry_pb2.HTTPAccessLogEntry]:
    out = []
    for index in range(60):
        cluster = (INBOUND, OUTBOUND, "outbound|9080|v2|reviews.shop.svc.cluster.local",
                   "", "xds-grpc")[index % 5]
        out.append(envoy_http_entry(
            cluster, index, (200, 503, 404)[index % 3],
            peer=CLIENT if index % 4 == 0 else "", local=SERVER if index % 4 < 2 else "",
            grpc_status=str(index % 3) if index % 7 == 0 else "",
            flags=("upstream_connection_failure",) if index % 6 == 0 else (),
            tunnel=(CLIENT, SERVER) if index % 4 == 3 else None))
    return out


def test_entries_counted_by_kind_get_the_labels_counted_one_by_one():
    """The batch path remembers labels per kind of entry; what it renders is what counting
    each entry on its own (``record_http``) renders, with metrics disabled too."""
    disabled = Overrides.from_log_name(
        'pilotfish-metrics;{"REQUEST_SIZE":{"disabled":true,"tags":{}}}')
    for overrides in (NO_OVERRIDES, disabled):
        message = als_pb2.StreamAccessLogsMessage()
        message.http_logs.log_entry.extend(_varied_entries())
        batched, one_by_one = RequestMetrics(), RequestMetrics()
        # As the access-log service decodes a batch: the slim types.
        batched.record_message(slim_entries.StreamAccessLogsMessage.FromString(
            message.SerializeToString()), overrides)
        for entry in message.http_logs.log_entry:
            one_by_one.record_http(entry, overrides)
        assert render(batched.families(ME, {})) == render(one_by_one.families(ME, {}))
        assert (batched.entries, batched.skipped) == (one_by_one.entries, one_by_one.skipped)
    assert "istio_request_bytes" not in render(batched.families(ME, {}))


def test_slim_entries_read_envoys_bytes_as_envoys_types_do():
    entry = envoy_http_entry(INBOUND, 7, 503, peer=CLIENT, local=SERVER, grpc_status="14",
                             flags=("no_healthy_upstream",), tunnel=(CLIENT, SERVER))
    slim = slim_entries.HTTPAccessLogEntry.FromString(entry.SerializeToString())
    for read in (lambda e: e.common_properties.upstream_cluster,
                 lambda e: e.common_properties.time_to_last_downstream_tx_byte.nanos,
                 lambda e: e.common_properties.tls_properties.peer_certificate_properties
                 .subject_alt_name[0].uri,
                 lambda e: response_flags(e.common_properties.response_flags),
                 lambda e: e.request.request_headers["content-type"],
                 lambda e: e.request.request_headers_bytes + e.request.request_body_bytes,
                 lambda e: e.request.request_method, lambda e: e.request.authority,
                 lambda e: e.response.response_code.value,
                 lambda e: e.response.response_trailers["grpc-status"],
                 lambda e: e.response.response_headers_bytes,
                 lambda e: e.common_properties.filter_state_objects[PEER_PRINCIPAL].value):
        assert read(slim) == read(entry)
    # What the metrics do not read is not decoded.
    assert not hasattr(slim.common_properties, "downstream_remote_address")
    assert len(slim.SerializeToString()) == len(entry.SerializeToString())  # kept as bytes
