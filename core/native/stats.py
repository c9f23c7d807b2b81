"""The native proxy's counters, named and exported as Envoy's are (``/stats``,
``/stats/prometheus``), so dashboards and the agent read them the same way."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


class Stats:
    def __init__(self) -> None:
        self._counters: Counter[str] = Counter()
        self.gauges: dict[str, int] = {}
        # the counters a finished request adds to, by (cluster, prefix, status): named once
        self._done: dict[tuple[str, str, int], tuple[str, ...]] = {}
        # finished requests by (cluster, prefix, status), not yet added to their four
        # counters: a request adds one to one count, the counters are brought up to date
        # when they are read
        self._finished: dict[tuple[str, str, int], int] = {}

    @property
    def counters(self) -> Counter[str]:
        """Every counter by its Envoy name, up to date."""
        if self._finished:
            self._fold()
        return self._counters

    def _fold(self) -> None:
        finished, self._finished = self._finished, {}
        counters = self._counters
        for key, count in finished.items():
            names = self._done.get(key)
            if names is None:
                cluster, prefix, status = key
                klass = f"{status // 100}xx"
                names = self._done[key] = (
                    f"cluster.{cluster}.upstream_rq_total",
                    f"cluster.{cluster}.upstream_rq_{klass}",
                    f"cluster.{cluster}.upstream_rq_{status}",
                    f"http.{prefix}.downstream_rq_{klass}")
            for name in names:
                counters[name] += count

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        return dict(self.counters), dict(self.gauges)

    def add_snapshot(self, snapshot: tuple[dict[str, int], dict[str, int]]) -> None:
        """Another process's counters added to these (gauges: the larger value, as each
        process holds the same listeners)."""
        counters, gauges = snapshot
        self.counters.update(counters)
        for name, value in gauges.items():
            self.gauges[name] = max(self.gauges.get(name, 0), value)

    def inc(self, name: str, by: int = 1) -> None:
        self._counters[name] += by

    def request_done(self, cluster: str, prefix: str, status: int) -> None:
        """An upstream's answer passed on: its cluster's and the connection manager's
        counters by status (kept as one count until read)."""
        key = (cluster, prefix, status)
        finished = self._finished
        finished[key] = finished.get(key, 0) + 1

    def text(self) -> str:
        lines = [f"{name}: {value}" for name, value in sorted(self.counters.items())]
        lines += [f"{name}: {value}" for name, value in sorted(self.gauges.items())]
        return "\n".join(lines) + "\n"

    def prometheus(self) -> str:
        out: list[str] = []
        seen: set[str] = set()
        for name, value, kind in self._exported():
            metric, labels = _prometheus_name(name)
            if metric not in seen:
                seen.add(metric)
                out.append(f"# TYPE {metric} {kind}")
            label_text = ",".join(f'{k}="{v}"' for k, v in labels)
            out.append(f"{metric}{{{label_text}}} {value}" if label_text
                       else f"{metric} {value}")
        return "\n".join(out) + "\n"

    def _exported(self) -> Iterable[tuple[str, int, str]]:
        for name, value in sorted(self.counters.items()):
            yield name, value, "counter"
        for name, value in sorted(self.gauges.items()):
            yield name, value, "gauge"


def _prometheus_name(name: str) -> tuple[str, list[tuple[str, str]]]:
    """Envoy's tag extraction for the names used here: ``cluster.NAME.x`` →
    ``envoy_cluster_x{envoy_cluster_name="NAME"}``, ``http.PREFIX.x`` likewise."""
    scope, _, rest = name.partition(".")
    for inner in (".outlier_detection.", ".circuit_breakers."):  # cluster names hold dots
        if scope == "cluster" and inner in rest:
            tagged, _, stat = rest.partition(inner)
            return (f"envoy_cluster_{inner.strip('.')}_{stat.replace('.', '_')}",
                    [("envoy_cluster_name", tagged)])
    if scope in ("cluster", "http", "listener") and "." in rest:
        tagged, _, stat = rest.rpartition(".")
        label = {"cluster": "envoy_cluster_name", "http": "envoy_http_conn_manager_prefix",
                 "listener": "envoy_listener_address"}[scope]
        return f"envoy_{scope}_{stat}", [(label, tagged)]
    return "envoy_" + name.replace(".", "_"), []
