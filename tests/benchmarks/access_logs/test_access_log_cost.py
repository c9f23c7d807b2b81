"""Micro-benchmark: what one Envoy access-log entry costs the agent, decoded and counted.

The agent turns every request Envoy proxies into Istio's metrics from the entry Envoy's gRPC
access logger sends (``plugins/envoy/request_metrics.py``); on a router that is the agent's
main work, on the proxy's core. Here batches are serialized as Envoy sends them (as many
entries as fill the logger's buffer, ``translators/access_logs.py``), entries shaped as
Envoy 1.40 fills them (``testing.access_logs.envoy_http_entry``), then each batch is
decoded as the agent's gRPC server decodes it (``slim_entries``) and counted
(``RequestMetrics.record_message``). Reported: microseconds of this process's CPU per
entry (CPU time, so other load on the machine weighs less), best of the repeats, decoding
alone and decoding with counting, for a few traffic shapes. The gRPC transport is not in
it (``tests/benchmarks/dataplane/test_envoy_telemetry.py`` measures the whole path).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from envoy.data.accesslog.v3 import accesslog_pb2 as entry_pb2
from envoy.service.accesslog.v3 import als_pb2

from pilotfish.core.istio_metrics import ServiceRef, Workload
from pilotfish.core.metric_overrides import Overrides
from pilotfish.plugins.envoy import slim_entries
from pilotfish.plugins.envoy.request_metrics import RequestMetrics
from pilotfish.testing.access_logs import envoy_http_entry
from pilotfish.translators.access_logs import BUFFER_SIZE_BYTES

ROOT = Path(__file__).resolve().parents[3]
OUTBOUND = "outbound|80||backend.default.svc.cluster.local"
INBOUND = "inbound|9080||"
CLIENT = "spiffe://cluster.local/ns/shop/sa/client"
SERVER = "spiffe://cluster.local/ns/shop/sa/reviews"
ME = Workload.from_labels("reviews-1", "shop", {"app": "reviews", "version": "v1"})
SERVICES = {INBOUND: ServiceRef("reviews.shop.svc.cluster.local", "reviews", "shop"),
            OUTBOUND: ServiceRef("backend.default.svc.cluster.local", "backend", "default")}


def router(index: int) -> entry_pb2.HTTPAccessLogEntry:
    """The gateway path of the data-plane benchmark: outbound, plaintext, 200."""
    return envoy_http_entry(OUTBOUND, index)


def inbound_mtls(index: int) -> entry_pb2.HTTPAccessLogEntry:
    """A server sidecar's inbound requests over mutual TLS."""
    return envoy_http_entry(INBOUND, index, peer=CLIENT, local=SERVER)


def mixed(index: int) -> entry_pb2.HTTPAccessLogEntry:
    """Both directions, some gRPC, some failures with flags, some without a route."""
    if index % 50 == 0:
        return envoy_http_entry("", index, 404, flags=("no_route_found",))
    if index % 20 == 0:
        return envoy_http_entry(OUTBOUND, index, 503, flags=(
            "upstream_connection_failure", "upstream_retry_limit_exceeded"))
    if index % 10 == 0:
        return envoy_http_entry(OUTBOUND, index, grpc_status=str(index % 3))
    return inbound_mtls(index) if index % 2 else router(index)


SHAPES: dict[str, Callable[[int], entry_pb2.HTTPAccessLogEntry]] = {
    "router": router, "inbound_mtls": inbound_mtls, "mixed": mixed}
# A Telemetry adding a tag from the request (CEL per entry): slow by nature, shown apart.
TAGGED = Overrides.from_log_name(
    'pilotfish-metrics;{"REQUEST_COUNT":{"disabled":false,"tags":{"host":"request.host"}}}')


def batches(make: Callable[[int], entry_pb2.HTTPAccessLogEntry], entries: int) -> list[bytes]:
    """Serialized messages as Envoy's logger flushes them: full buffers of entries."""
    out: list[bytes] = []
    message, size = als_pb2.StreamAccessLogsMessage(), 0
    for index in range(entries):
        entry = make(index)
        message.http_logs.log_entry.add().CopyFrom(entry)
        size += entry.ByteSize()
        if size >= BUFFER_SIZE_BYTES:
            out.append(message.SerializeToString())
            message, size = als_pb2.StreamAccessLogsMessage(), 0
    if size:
        out.append(message.SerializeToString())
    return out


def _best(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return min(times)


def cost(raw: list[bytes], entries: int, repeats: int,
         overrides: Overrides | None = None) -> dict[str, Any]:
    decode = slim_entries.StreamAccessLogsMessage.FromString  # as the agent's server does

    def decoded() -> None:
        for each in raw:
            decode(each)

    def counted() -> RequestMetrics:
        metrics = RequestMetrics()
        for each in raw:
            if overrides is None:
                metrics.record_message(decode(each))
            else:
                metrics.record_message(decode(each), overrides)
        return metrics

    metrics = counted()
    total = sum(float(s.value) for f in metrics.families(ME, SERVICES)
                if f.name == "istio_requests_total" for s in f.samples)
    assert total == metrics.entries - metrics.skipped
    return {"entries": entries, "batches": len(raw),
            "decode_us_per_entry": round(_best(decoded, repeats) / entries * 1e6, 2),
            "decode_and_count_us_per_entry": round(_best(counted, repeats) / entries * 1e6, 2)}


def measure(entries: int, repeats: int) -> dict[str, Any]:
    results = {name: cost(batches(make, entries), entries, repeats)
               for name, make in SHAPES.items()}
    tagged = max(entries // 10, 1)
    results["router_with_a_cel_tag"] = cost(batches(router, tagged), tagged, repeats, TAGGED)
    return {"shapes": results, "buffer_size_bytes": BUFFER_SIZE_BYTES,
            "entry_bytes": router(0).ByteSize(), "machine": {"cpus": os.cpu_count()}}


def test_access_log_cost_small() -> None:
    result = measure(entries=200, repeats=1)
    assert result["shapes"]["router"]["decode_and_count_us_per_entry"] > 0


@pytest.mark.benchmark
def test_access_log_cost_benchmark() -> None:
    result = measure(entries=20_000, repeats=5)
    out = ROOT / "results" / "access_log_cost.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
