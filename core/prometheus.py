"""Prometheus text exposition format: parse it, write it. Sans-IO.

The agent's merged scrape (``merged_metrics``) reads three sources — the proxy's stats,
the app's metrics, its own — and must hand Prometheus one valid document. This module
turns text into ``Family`` objects and back. It reads the classic text format (0.0.4)
and the OpenMetrics subset that apps commonly produce (``# EOF``, ``# UNIT``,
``_created`` samples), and always writes 0.0.4, which every Prometheus version scrapes.

Sample values and timestamps are kept as the text they were read as: a passthrough
never changes a number's spelling (``+Inf``, ``1e+06``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import attrs

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Which sample-name suffixes belong to a family of each type. A sample named
# ``<family><suffix>`` that follows a TYPE line for ``<family>`` is one of its series.
SUFFIXES: Mapping[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "info": ("_info",),
}
# OpenMetrics types with no 0.0.4 spelling are written as "untyped".
TEXT_TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\\n]|\\.)*)"\s*')
_UNESCAPE = re.compile(r"\\(.)")

Labels = tuple[tuple[str, str], ...]


class PrometheusFormatError(ValueError):
    """Text that is not the exposition format; the message names the line."""


@attrs.frozen
class Sample:
    name: str
    labels: Labels = ()
    value: str = "0"
    timestamp: str = ""

    def label(self, key: str, default: str = "") -> str:
        for name, value in self.labels:
            if name == key:
                return value
        return default

    @property
    def number(self) -> float:
        return float(self.value)


@attrs.frozen
class Family:
    name: str
    type: str = "untyped"
    help: str = ""
    samples: tuple[Sample, ...] = ()

    def sample_names(self) -> set[str]:
        return {s.name for s in self.samples} | {self.name}


@attrs.define
class _Building:
    name: str
    type: str = "untyped"
    help: str = ""
    samples: list[Sample] = attrs.Factory(list)


def _unescape(text: str) -> str:
    return _UNESCAPE.sub(lambda m: "\n" if m[1] == "n" else m[1], text)


def parse_sample(line: str, where: str = "line") -> Sample:
    """One sample line → Sample; PrometheusFormatError says what is wrong with it."""
    match = _NAME.match(line)
    if match is None:
        raise PrometheusFormatError(f"{where}: expected a metric name: {line[:80]!r}")
    name, pos = match[0], match.end()
    labels: list[tuple[str, str]] = []
    if pos < len(line) and line[pos] == "{":
        pos += 1
        while True:
            if line[pos:pos + 1] == "}":
                pos += 1
                break
            label = _LABEL.match(line, pos)
            if label is None:
                raise PrometheusFormatError(f"{where}: bad label set: {line[:120]!r}")
            labels.append((label[1], _unescape(label[2])))
            pos = label.end()
            if line[pos:pos + 1] == ",":
                pos += 1
            elif line[pos:pos + 1] != "}":
                raise PrometheusFormatError(f"{where}: expected ',' or '}}': {line[:120]!r}")
    fields = line[pos:].split()
    if not 1 <= len(fields) <= 2:
        raise PrometheusFormatError(f"{where}: expected VALUE [TIMESTAMP]: {line[:120]!r}")
    try:
        float(fields[0])
    except ValueError:
        raise PrometheusFormatError(f"{where}: {fields[0]!r} is not a number") from None
    return Sample(name, tuple(labels), fields[0], fields[1] if len(fields) == 2 else "")


def _family_of(name: str, families: dict[str, _Building]) -> str | None:
    if name in families:
        return name
    for suffix in ("_bucket", "_sum", "_count", "_total", "_created", "_gsum", "_gcount",
                   "_info"):
        base = name.removesuffix(suffix)
        if base != name and base in families and suffix in SUFFIXES.get(families[base].type, ()):
            return base
    return None


def parse(text: str, source: str = "metrics") -> list[Family]:
    """Exposition text → families, in the order they first appear.

    Samples of one family that arrive apart are gathered into it; a sample with no TYPE
    line before it becomes an untyped family of its own, as Prometheus treats it.
    """
    families: dict[str, _Building] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line[1:].split(None, 2)
            if parts[:1] == ["EOF"]:
                break
            if len(parts) >= 2 and parts[0] in ("TYPE", "HELP"):
                family = families.setdefault(parts[1], _Building(parts[1]))
                rest = parts[2].strip() if len(parts) == 3 else ""
                if parts[0] == "TYPE":
                    family.type = "untyped" if rest == "unknown" else rest
                else:
                    family.help = _unescape(rest)
            continue  # other comments (and OpenMetrics' UNIT) carry nothing we keep
        sample = parse_sample(line, f"{source}:{number}")
        name = _family_of(sample.name, families) or sample.name
        families.setdefault(name, _Building(name)).samples.append(sample)
    return [Family(f.name, f.type, f.help, tuple(f.samples)) for f in families.values()]


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_sample(sample: Sample) -> str:
    text = sample.name
    if sample.labels:
        text += "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in sample.labels) + "}"
    text += f" {sample.value}"
    return f"{text} {sample.timestamp}" if sample.timestamp else text


def render(families: Iterable[Family]) -> str:
    """Families → 0.0.4 text. OpenMetrics-only series (``_created``) are left out."""
    lines: list[str] = []
    for family in families:
        kind = family.type if family.type in TEXT_TYPES else "untyped"
        samples = [s for s in family.samples if s.name != f"{family.name}_created"]
        name = family.name
        # OpenMetrics names a counter without _total and its samples with it; 0.0.4
        # expects the TYPE line to name the samples.
        if kind == "counter" and samples and all(s.name == f"{name}_total" for s in samples):
            name = f"{name}_total"
        if family.help:
            help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
            lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(format_sample(s) for s in samples)
    return "\n".join(lines) + "\n" if lines else ""
