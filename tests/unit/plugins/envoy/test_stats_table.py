"""The metrics module's table read back: the same series as the gRPC access-log path gives
for the same requests, growth added once, a new Envoy's table started over, a table of
another layout refused. (tests/integration/test_stats_module_envoy.py does it with the
real module inside a real Envoy.)"""

from __future__ import annotations

import struct

import pytest

from pilotfish.core.istio_metrics import ServiceRef, Workload
from pilotfish.core.istio_requests import DURATION_BUCKETS, SIZE_BUCKETS
from pilotfish.core.prometheus import render
from pilotfish.plugins.envoy import stats_table
from pilotfish.plugins.envoy.request_metrics import RequestMetrics
from pilotfish.plugins.envoy.stats_table import (
    HEADER,
    KIND_HTTP,
    KIND_TCP,
    ROW_SIZE,
    TableError,
    TableFolder,
    flags_text,
    parse,
)
from pilotfish.testing.access_logs import http_entry

INBOUND = "inbound|8080||"
OUTBOUND = "outbound|9080||reviews.shop.svc.cluster.local"
ME = Workload.from_labels("web-1", "shop", {"app": "web", "version": "v1"})
CLIENT = "spiffe://cluster.local/ns/shop/sa/client"
SERVER = "spiffe://cluster.local/ns/shop/sa/web"
SERVICES = {INBOUND: ServiceRef("web.shop.svc.cluster.local", "web", "shop")}
KEY = struct.Struct("<BBBBIQHHHHI256s256s256s16s4x")


def bucket(bounds: tuple[float, ...], value: float) -> int:
    return next((i for i, bound in enumerate(bounds) if value <= bound), len(bounds))


def http_row(cluster: str, code: int = 200, *, peer: str = "", local: str = "",
             grpc_status: str | None = None, flags: int = 0, times: int = 1, ms: int = 3
             ) -> bytes:
    """A row as istio_stats.c writes it after ``times`` requests like
    ``testing.access_logs.http_entry``'s (80 + 20 bytes in, 100 + 900 out)."""
    key = KEY.pack(KIND_HTTP, grpc_status is not None, grpc_status is not None, 0, code, flags,
                   len(cluster), len(peer), len(local), len(grpc_status or ""), 0,
                   cluster.encode(), peer.encode(), local.encode(),
                   (grpc_status or "").encode())
    duration = [0] * (len(DURATION_BUCKETS) + 1)
    duration[bucket(DURATION_BUCKETS, ms)] = times
    request, response = [0] * (len(SIZE_BUCKETS) + 1), [0] * (len(SIZE_BUCKETS) + 1)
    request[bucket(SIZE_BUCKETS, 100)] = times
    response[bucket(SIZE_BUCKETS, 1000)] = times
    counts = [times, *duration, times * ms * 1_000_000, *request, times * 100, *response,
              times * 1000, 0, 0, 0, 0]
    return key + struct.pack(f"<{len(counts)}Q", *counts)


def tcp_row(cluster: str, *, opened: int, closed: int, received: int, sent: int,
            flags: int = 0) -> bytes:
    key = KEY.pack(KIND_TCP, 0, 0, 0, 0, flags, len(cluster), 0, 0, 0, 0, cluster.encode(),
                   b"", b"", b"")
    counts = [0] * (1 + len(DURATION_BUCKETS) + 1 + 1 + 2 * (len(SIZE_BUCKETS) + 2))
    return key + struct.pack(f"<{len(counts) + 4}Q", *counts, opened, closed, received, sent)


def table(*rows: bytes, generation: int = 7, dropped: int = 0) -> bytes:
    return HEADER.pack(b"PFISTAT1", 1, ROW_SIZE, 4096, 0, len(rows), dropped,
                       generation) + b"".join(rows)


def scrape(metrics: RequestMetrics) -> str:
    return render(metrics.families(ME, SERVICES))


def test_rows_give_the_series_the_access_log_entries_give() -> None:
    via_als = RequestMetrics()
    for _ in range(2):
        via_als.record_http(http_entry(INBOUND, peer=CLIENT, local=SERVER))
    via_als.record_http(http_entry(INBOUND, 503))
    via_als.record_http(http_entry(OUTBOUND, grpc_status="14"))
    via_table = RequestMetrics()
    TableFolder(via_table).fold(parse(table(
        http_row(INBOUND, peer=CLIENT, local=SERVER, times=2), http_row(INBOUND, 503),
        http_row(OUTBOUND, grpc_status="14"))))
    assert scrape(via_table) == scrape(via_als)
    assert 'connection_security_policy="mutual_tls"' in scrape(via_table)


def test_growth_is_added_once_and_a_new_envoy_starts_over() -> None:
    metrics = RequestMetrics()
    folder = TableFolder(metrics)
    folder.fold(parse(table(http_row(OUTBOUND, times=2))))
    folder.fold(parse(table(http_row(OUTBOUND, times=5))))  # three more since
    folder.fold(parse(table(http_row(OUTBOUND, times=1), generation=8)))  # Envoy restarted
    (requests,) = [f for f in metrics.families(ME, SERVICES)
                   if f.name == "istio_requests_total"]
    assert [s.value for s in requests.samples] == ["6"]
    assert 'le="5"} 6' in scrape(metrics)  # the duration histogram grew the same way


def test_tcp_rows_count_opens_closes_and_bytes() -> None:
    metrics = RequestMetrics()
    TableFolder(metrics).fold(parse(table(
        tcp_row(OUTBOUND, opened=3, closed=0, received=0, sent=0),
        tcp_row(OUTBOUND, opened=0, closed=2, received=10, sent=20, flags=1 << 5))))
    text = scrape(metrics)
    assert 'istio_tcp_connections_opened_total{' in text and '"-",' in text.split(
        "istio_tcp_connections_opened_total{")[1]
    closed = [line for line in text.splitlines()
              if line.startswith("istio_tcp_connections_closed_total{")]
    assert closed == [line for line in closed if 'response_flags="UF"' in line] and \
        closed[0].endswith(" 2")
    assert any(line.startswith("istio_tcp_sent_bytes_total{") and line.endswith(" 20")
               for line in text.splitlines())


def test_rows_of_other_clusters_are_skipped_and_what_was_not_counted_is_said() -> None:
    metrics = RequestMetrics()
    folder = TableFolder(metrics)
    assert folder.statistics() == []  # no table read yet: the module is not in use
    folder.fold(parse(table(http_row("", 404, times=3), http_row(OUTBOUND), dropped=2)))
    assert (metrics.entries, metrics.skipped) == (4, 3)
    assert "pilotfish_agent_envoy_metrics_module_dropped_total 2" in render(
        folder.statistics())


def test_flags_text_follows_envoy_order() -> None:
    assert flags_text(0) == "-"
    assert flags_text(1 << 1 | 1 << 15) == "UH,URX"
    assert flags_text(1 << 28) == "DR"


def test_a_table_of_another_layout_is_refused_with_what_was_found() -> None:
    with pytest.raises(TableError, match="layout 2"):
        parse(HEADER.pack(b"PFISTAT1", 2, ROW_SIZE, 4096, 0, 0, 0, 1))
    with pytest.raises(TableError, match="shorter"):
        parse(b"PF")


def test_a_row_still_being_written_is_left_for_the_next_read() -> None:
    data = table(http_row(OUTBOUND), http_row(INBOUND))
    assert len(parse(data[:-10]).rows) == 1
    assert stats_table.header_rows(data) == 2
