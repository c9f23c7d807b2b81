"""Telemetry (telemetry.istio.io): which access logging and metric overrides a workload
gets, as Istio composes them.

Telemetries in the root namespace apply to the mesh, those without a selector to their
namespace, those with a ``selector`` (or no other) to the workloads they select; the more
specific wins. For access logging the most specific Telemetry that says anything about a
mode (``match.mode``: CLIENT, SERVER or both) decides it; metric overrides are applied
mesh, then namespace, then workload, later ones winning for the same metric and tag.
Sans-IO: `translators/telemetry.py` turns the result into Envoy config.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from pilotfish.core.model import labels_match
from pilotfish.core.objects import ConfigObject

CLIENT, SERVER = "CLIENT", "SERVER"
METRICS = ("REQUEST_COUNT", "REQUEST_DURATION", "REQUEST_SIZE", "RESPONSE_SIZE",
           "TCP_OPENED_CONNECTIONS", "TCP_CLOSED_CONNECTIONS", "TCP_SENT_BYTES",
           "TCP_RECEIVED_BYTES")


@attrs.frozen
class AccessLogging:
    """What access logging one mode gets: off, or on with an optional CEL filter."""

    disabled: bool = False
    filter: str = ""  # a CEL expression over Envoy's attributes ("response.code >= 400")


@attrs.frozen
class MetricOverride:
    disabled: bool = False
    # tag → its CEL value (UPSERT), or None (REMOVE)
    tags: Mapping[str, str | None] = attrs.field(factory=dict)


@attrs.frozen
class Settings:
    """One workload's telemetry, by mode."""

    access_logging: Mapping[str, AccessLogging] = attrs.field(factory=dict)
    metrics: Mapping[str, Mapping[str, MetricOverride]] = attrs.field(factory=dict)

    def logging(self, mode: str) -> AccessLogging:
        return self.access_logging.get(mode, AccessLogging())

    def overrides(self, mode: str) -> Mapping[str, MetricOverride]:
        """Metric name (Istio's enum) → override, for one mode."""
        return self.metrics.get(mode, {})


NONE = Settings()


def _modes(match: Mapping[str, Any] | None) -> tuple[str, ...]:
    mode = str((match or {}).get("mode") or "CLIENT_AND_SERVER")
    return (CLIENT, SERVER) if mode == "CLIENT_AND_SERVER" else (mode,)


def _uses_envoy(entry: Mapping[str, Any], kind: str) -> bool:
    """Does a logging/metrics entry speak of pilotfish's provider (``envoy`` for logs,
    ``prometheus`` for metrics; no providers means the default, which is it)?"""
    names = [str(p.get("name") or "") for p in entry.get("providers") or ()]
    return not names or kind in names


def compose(telemetries: Sequence[ConfigObject]) -> Settings:
    """The settings of Telemetries ordered least to most specific."""
    logging: dict[str, AccessLogging] = {}
    metrics: dict[str, dict[str, MetricOverride]] = {CLIENT: {}, SERVER: {}}
    for telemetry in telemetries:
        said: dict[str, AccessLogging] = {}
        for entry in telemetry.spec.get("accessLogging") or ():
            if not _uses_envoy(entry, "envoy"):
                continue
            setting = AccessLogging(disabled=bool(entry.get("disabled")),
                                    filter=str((entry.get("filter") or {}).get("expression")
                                               or ""))
            for mode in _modes(entry.get("match")):
                said[mode] = setting
        logging.update(said)
        for entry in telemetry.spec.get("metrics") or ():
            if not _uses_envoy(entry, "prometheus"):
                continue
            for override in entry.get("overrides") or ():
                match = override.get("match") or {}
                names = _metric_names(match)
                tags: dict[str, str | None] = {}
                for tag, change in (override.get("tagOverrides") or {}).items():
                    tags[str(tag)] = None if str(change.get("operation") or "UPSERT") == (
                        "REMOVE") else str(change.get("value") or "")
                for mode in _modes(match):
                    for name in names:
                        before = metrics[mode].get(name, MetricOverride())
                        disabled = override.get("disabled")
                        metrics[mode][name] = MetricOverride(
                            disabled=bool(disabled) if disabled is not None else before.disabled,
                            tags={**before.tags, **tags})
    return Settings(logging, {mode: dict(v) for mode, v in metrics.items() if v})


def _metric_names(match: Mapping[str, Any]) -> tuple[str, ...]:
    metric = str(match.get("metric") or "ALL_METRICS")
    if match.get("customMetric"):
        return ()
    return METRICS if metric == "ALL_METRICS" else (metric,)


@attrs.define
class Telemetries:
    """Every Telemetry, looked up per workload (memoized: many proxies share labels)."""

    objects: tuple[ConfigObject, ...]
    root_namespace: str
    _memo: dict[Any, Settings] = attrs.Factory(dict)

    def for_workload(self, namespace: str, labels: Mapping[str, str]) -> Settings:
        if not self.objects:
            return NONE
        key = (namespace, frozenset(labels.items()))
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = compose(self._ordered(namespace, labels))
        return found

    def _ordered(self, namespace: str, labels: Mapping[str, str]) -> list[ConfigObject]:
        ranked = []
        for obj in self.objects:
            selector = (obj.spec.get("selector") or {}).get("matchLabels")
            if selector:
                if obj.namespace == namespace and labels_match(selector, labels):
                    ranked.append((2, obj))
            elif obj.spec.get("targetRefs") or obj.spec.get("targetRef"):
                continue  # aimed at gateways or waypoints by reference: not served yet
            elif obj.namespace == self.root_namespace:
                ranked.append((0, obj))
            elif obj.namespace == namespace:
                ranked.append((1, obj))
        return [obj for _, obj in sorted(ranked, key=lambda r: (r[0], r[1].creation,
                                                               r[1].name))]


def build(objects: Iterable[ConfigObject], root_namespace: str) -> Telemetries:
    return Telemetries(tuple(objects), root_namespace)
