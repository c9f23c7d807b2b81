"""Benchmark: the fuzz suite (tests/fuzz) at its large budget.

The regular suite runs tests/fuzz with the ``ci`` profile: a bounded number of examples,
the same ones every run. ``./dev bench`` runs it here with ``PILOTFISH_FUZZ=bench``: 20 times
the examples, random ones, so each run tries inputs no earlier run did (a failure prints
the ``@reproduce_failure`` line that replays it). It writes results/fuzz.json: per
property the examples run, its time and its outcome, and the whole run's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
PROFILE = "bench"
# hypothesis' statistics: a header per test, then per phase "N passing, M failing, and K
# invalid test cases".
_TEST = re.compile(r"^(\S+\.py::\S+):$", re.MULTILINE)
_COUNTS = re.compile(r"(\d+) passing\D+(\d+) failing\D+(\d+) invalid")
# The xDS property counts its examples itself (record_property), which xunit1 reports.
JUNIT = ["-o", "junit_family=xunit1"]


def statistics(output: str) -> dict[str, dict[str, int]]:
    """Examples per test, from ``--hypothesis-show-statistics``."""
    out: dict[str, dict[str, int]] = {}
    parts = _TEST.split(output)
    for name, section in zip(parts[1::2], parts[2::2], strict=True):
        counts = [tuple(map(int, found)) for found in _COUNTS.findall(section)]
        out[name.rpartition("::")[2]] = {
            "examples": sum(p + f for p, f, _ in counts),
            "invalid": sum(i for _, _, i in counts)}
    return out


def properties(junit: Path, stats: dict[str, dict[str, int]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for case in ET.parse(junit).iter("testcase"):
        name = case.get("name", "")
        recorded = {p.get("name"): p.get("value") for p in case.iter("property")}
        outcome = ("failed" if case.find("failure") is not None or case.find("error")
                   is not None else "skipped" if case.find("skipped") is not None else "passed")
        entry: dict[str, Any] = {"seconds": round(float(case.get("time", 0)), 1),
                                 "outcome": outcome, **stats.get(name, {})}
        if "examples" in recorded:  # a test that runs its examples itself (xDS)
            entry["examples"] = int(recorded["examples"] or 0)
        out[name] = entry
    return out


@pytest.mark.benchmark
@pytest.mark.timeout(6 * 3600)
def test_fuzz_benchmark(tmp_path: Path) -> None:
    junit = tmp_path / "fuzz.xml"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/fuzz", "-p", "no:cacheprovider", "-q",
         "--hypothesis-show-statistics", f"--junitxml={junit}", *JUNIT,
         "--timeout=7200"],  # per test: thousands of examples; each has its own deadline
        cwd=ROOT, env={**os.environ, "PILOTFISH_FUZZ": PROFILE}, capture_output=True,
        text=True)
    seconds = time.monotonic() - started
    found = properties(junit, statistics(done.stdout))
    result = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "profile": PROFILE,
        "seconds": round(seconds, 1),
        "examples": sum(p.get("examples", 0) for p in found.values()),
        "failures": sum(p["outcome"] == "failed" for p in found.values()),
        "properties": found,
    }
    out = ROOT / "results" / "fuzz.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    assert done.returncode == 0, done.stdout[-8000:]
    assert result["failures"] == 0 and result["examples"] > 0, result


def test_the_summary_reads_what_pytest_and_hypothesis_report(tmp_path: Path) -> None:
    """The regular suite's check that the benchmark keeps working: hypothesis' statistics
    and the JUnit report, as the installed versions write them, read back."""
    (tmp_path / "tests" / "fuzz").mkdir(parents=True)
    (tmp_path / "tests" / "fuzz" / "test_tiny.py").write_text(
        "from hypothesis import given, settings, strategies as st\n\n"
        "@settings(max_examples=7, database=None)\n@given(st.integers())\n"
        "def test_ints(n):\n    pass\n\n"
        "def test_recorded(record_property):\n    record_property('examples', 3)\n")
    junit = tmp_path / "tiny.xml"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/fuzz", "-p", "no:cacheprovider", "-q",
         "--hypothesis-show-statistics", f"--junitxml={junit}", *JUNIT, "-c", "/dev/null"],
        cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
    found = properties(junit, statistics(done.stdout))
    assert found["test_ints"]["examples"] == 7 and found["test_ints"]["outcome"] == "passed"
    assert found["test_recorded"]["examples"] == 3
