"""The table Envoy's metrics module counts into, read back into Istio's series. Sans-IO.

``istio_stats.c`` (loaded by Envoy as an access logger, see ``translators/stats_module.py``)
keeps one row per *kind* of request or TCP connection — upstream cluster, response code,
gRPC status, response flags, the downstream TLS peer's and our own identity, gRPC or not —
with its counts and Istio's histograms, in a file the agent maps (``CONFIG_DIR/
istio-stats.table``). Rows only grow. `TableFolder` adds what each row gained since the
last read to a `RequestMetrics`, under the same keys the gRPC access-log path makes
(`request_metrics`), so the merged scrape shows the same families either way and one
Envoy may use both paths (listeners with a Telemetry's overrides stay on gRPC).

The layout is the C file's (its header comment); `LAYOUT_VERSION` and the row size are
checked, and a file of another layout is refused with what was found.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import attrs

from pilotfish.core.istio_metrics import parse_cluster_name, reporter_of, security_labels
from pilotfish.core.istio_requests import DURATION_BUCKETS, SIZE_BUCKETS, Key
from pilotfish.core.prometheus import Family, Sample
from pilotfish.plugins.envoy.request_metrics import RESPONSE_FLAGS, RequestMetrics

TABLE_FILE = "istio-stats.table"
MAGIC = b"PFISTAT1"
LAYOUT_VERSION = 1
# magic, layout version, row size, capacity, pad, rows published, dropped, generation
HEADER = struct.Struct("<8sIIIIQQQ16x")
_KEY = struct.Struct("<BBBBIQHHHHI256s256s256s16s4x")
_HTTP_COUNTS = 1 + (len(DURATION_BUCKETS) + 1) + 1 + 2 * ((len(SIZE_BUCKETS) + 1) + 1)
_COUNTS = struct.Struct(f"<{_HTTP_COUNTS + 4}Q")
ROW_SIZE = _KEY.size + _COUNTS.size
KIND_HTTP, KIND_TCP = 1, 2

# Envoy's core response flags by bit (legacyResponseFlags: 1 << CoreResponseFlag): the
# access-log proto's order up to DnsResolutionFailed, then DropOverLoad, DownstreamRemoteReset
# and UnconditionalDropOverload, which the proto orders differently or lacks.
FLAG_BITS = (*(short for _, short in RESPONSE_FLAGS[:27]), "DO", "DR", "UDO")


class TableError(ValueError):
    """The file is not a table this agent can read (says what it found)."""


@attrs.frozen
class Row:
    kind: int
    grpc: bool
    grpc_status: str | None  # None: the response carried none
    response_code: int
    response_flags: int
    cluster: str
    peer: str  # the downstream TLS peer's identity ("" without one)
    local: str  # ours on that connection
    counts: tuple[int, ...]  # the row's counters, in the C struct's order


@attrs.frozen
class Table:
    generation: int  # which Envoy process wrote it
    dropped: int  # requests the module could not count (table full, a field too long)
    rows: tuple[Row, ...]


def header_rows(data: bytes) -> int:
    """How many rows the header says are published (to read just those)."""
    return _header(data)[1]


def _header(data: bytes) -> tuple[int, int, int, int]:
    if len(data) < HEADER.size:
        raise TableError(f"{len(data)} bytes: shorter than the {HEADER.size}-byte header")
    magic, version, row_size, _capacity, _pad, rows, dropped, generation = HEADER.unpack_from(
        data)
    if magic != MAGIC or version != LAYOUT_VERSION or row_size != ROW_SIZE:
        raise TableError(f"magic {magic!r} layout {version} row size {row_size}: this agent "
                         f"reads {MAGIC!r} layout {LAYOUT_VERSION} row size {ROW_SIZE}")
    return generation, rows, dropped, row_size


def parse(data: bytes) -> Table:
    """The header and the published rows found in ``data`` (a prefix of the file)."""
    generation, count, dropped, _ = _header(data)
    count = min(count, (len(data) - HEADER.size) // ROW_SIZE)  # a row may be mid-publish
    return Table(generation, dropped, tuple(_rows(data, count)))


def _rows(data: bytes, count: int) -> Iterator[Row]:
    for index in range(count):
        at = HEADER.size + index * ROW_SIZE
        (kind, grpc, has_status, _, code, flags, cluster_len, peer_len, local_len, status_len,
         _, cluster, peer, local, status) = _KEY.unpack_from(data, at)
        yield Row(kind, bool(grpc), status[:status_len].decode() if has_status else None,
                  code, flags, cluster[:cluster_len].decode(errors="replace"),
                  peer[:peer_len].decode(errors="replace"),
                  local[:local_len].decode(errors="replace"),
                  _COUNTS.unpack_from(data, at + _KEY.size))


def flags_text(bits: int) -> str:
    """Envoy's short flags of a response-flags bit set, comma-separated; ``-`` if none."""
    return ",".join(short for bit, short in enumerate(FLAG_BITS) if bits >> bit & 1) or "-"


_D = len(DURATION_BUCKETS) + 1
_S = len(SIZE_BUCKETS) + 1
_REQUESTS = 0
_DURATION = slice(1, 1 + _D)
_DURATION_SUM = 1 + _D
_REQUEST_BYTES = slice(_DURATION_SUM + 1, _DURATION_SUM + 1 + _S)
_REQUEST_SUM = _DURATION_SUM + 1 + _S
_RESPONSE_BYTES = slice(_REQUEST_SUM + 1, _REQUEST_SUM + 1 + _S)
_RESPONSE_SUM = _REQUEST_SUM + 1 + _S
_OPENED, _CLOSED, _RECEIVED, _SENT = range(_HTTP_COUNTS, _HTTP_COUNTS + 4)


@attrs.define
class TableFolder:
    """Adds the rows' growth since the last `fold` to ``metrics``."""

    metrics: RequestMetrics
    generation: int = 0
    dropped: int = 0
    _seen: list[tuple[int, ...]] = attrs.field(factory=list, init=False)
    _keys: list[Key | None] = attrs.field(factory=list, init=False)

    def fold(self, table: Table) -> None:
        if table.generation != self.generation:  # another Envoy: its rows start from zero
            self.generation, self._seen, self._keys = table.generation, [], []
        self.dropped = table.dropped
        for index, row in enumerate(table.rows):
            if index == len(self._seen):
                self._seen.append((0,) * len(row.counts))
                self._keys.append(_key(row))
            before, self._seen[index] = self._seen[index], row.counts
            delta = [now - then for now, then in zip(row.counts, before, strict=True)]
            self._add(row, self._keys[index], delta)

    def statistics(self) -> list[Family]:
        """What the module could not count (none until a table was read)."""
        if not self.generation:
            return []
        name = "pilotfish_agent_envoy_metrics_module_dropped_total"
        return [Family(name, "counter", "Requests and connections Envoy's metrics module "
                       "could not count (table full, a field too long).",
                       (Sample(name, (), str(self.dropped)),))]

    def _add(self, row: Row, key: Key | None, delta: list[int]) -> None:
        metrics = self.metrics
        if row.kind == KIND_HTTP:
            metrics.entries += delta[_REQUESTS]
            if key is None:
                metrics.skipped += delta[_REQUESTS]
                return
            if delta[_REQUESTS]:
                metrics.add("istio_requests_total", key, delta[_REQUESTS])
            for family, buckets, total, scale in (
                    ("istio_request_duration_milliseconds", _DURATION, _DURATION_SUM, 1e6),
                    ("istio_request_bytes", _REQUEST_BYTES, _REQUEST_SUM, 1),
                    ("istio_response_bytes", _RESPONSE_BYTES, _RESPONSE_SUM, 1)):
                added = delta[buckets]
                if any(added):
                    histogram = metrics.histogram(family, key)
                    histogram.counts = [a + b for a, b in zip(histogram.counts, added,
                                                              strict=True)]
                    histogram.count += sum(added)
                    histogram.sum += delta[total] / scale
            return
        metrics.entries += delta[_OPENED] + delta[_CLOSED]
        if key is None:
            metrics.skipped += delta[_OPENED] + delta[_CLOSED]
            return
        for family, at in (("istio_tcp_connections_opened_total", _OPENED),
                           ("istio_tcp_connections_closed_total", _CLOSED),
                           ("istio_tcp_received_bytes_total", _RECEIVED),
                           ("istio_tcp_sent_bytes_total", _SENT)):
            # A closed connection that moved no bytes still has its byte series, as in Istio.
            if delta[at] or (at in (_RECEIVED, _SENT) and delta[_CLOSED]):
                metrics.add(family, key, delta[at])


def _key(row: Row) -> Key | None:
    """The series key `RequestMetrics` uses for this kind; None when the cluster is not
    one of Istio's (no route, the agent's own clusters)."""
    ref = parse_cluster_name(row.cluster)
    if ref is None:
        return None
    reporter = reporter_of(ref)
    security = security_labels(reporter, row.peer, row.local) if reporter == "destination" \
        else security_labels(reporter, "", "")
    if row.kind == KIND_TCP:
        extras = {"request_protocol": "tcp", "response_flags": flags_text(row.response_flags),
                  **security}
    else:
        extras = {"request_protocol": "grpc" if row.grpc else "http",
                  "response_code": str(row.response_code),
                  "grpc_response_status": (row.grpc_status or "") if row.grpc else "",
                  "response_flags": flags_text(row.response_flags), **security}
    return row.cluster, tuple(sorted(extras.items()))  # as `Overrides.extras` orders them
