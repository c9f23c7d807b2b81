"""The Gateway API conformance suite's tests that pass (docs/conformance/report.yaml says
which) keep passing: one ``pilotfish up`` with the suite's infrastructure, every test the
report says passed, back to back as the runner runs them, with real CNI and iptables, as
root — once with Envoy as the routers, once with the native proxy, each on a node of its
own; about 8 minutes each for the 107, most of it spent waiting on the node (a router pod
for each test that makes a Gateway of its own). ``./dev test`` runs the two beside the rest
of the suite and each other, which they share nothing with (own subnets and bridges). The
whole set is ``python -m pilotfish.testing.conformance.runner [--proxy native]``;
regenerating the report with it brings a test that starts to pass into this one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from pilotfish.testing.conformance import manifests, runner
from pilotfish.testing.conformance.cases import ALL
from pilotfish.testing.conformance.profiles import (
    ADDED_SINCE_ISTIO_1_30_REPORT,
    ISTIO_1_30_SUPPORTED,
    PROFILES,
)
from pilotfish.testing.node import Node, leftovers

pytestmark = [pytest.mark.envoy, pytest.mark.e2e, pytest.mark.corpus]

REPORT = Path(__file__).resolve().parents[2] / "docs" / "conformance" / "report.yaml"
# apart from the runner's default and the other node tests'; one node per proxy
NETWORKS = {"envoy": ("10.241.0.0/24", "pfconf1"), "native": ("10.241.1.0/24", "pfconf3")}


def chosen() -> tuple[str, ...]:
    report = yaml.safe_load(REPORT.read_text())
    passed = {t["name"] for t in report["tests"] if t["result"] == "SUCCEEDED"}
    return tuple(case.short_name for case in ALL if case.short_name in passed)


def test_every_test_istios_report_counted_is_among_them():
    # Istio 1.30's level: every core and extended test of the four profiles, for the
    # features Istio claims, that its report's suite (v1.5.1) had — the node test below
    # then proves they pass
    selected = {case.short_name for case in runner.select(PROFILES, ISTIO_1_30_SUPPORTED)}
    istio_era = selected - ADDED_SINCE_ISTIO_1_30_REPORT
    assert len(istio_era) >= 33 + 7 + 13 + 7
    assert sorted(istio_era - set(chosen())) == []


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("proxy", ["envoy", "native"])
def test_the_tests_the_report_says_pass_still_pass(tmp_path: Path, proxy: str):
    assert os.geteuid() == 0, "the conformance runner needs root (pilotfish up)"
    assert manifests.DEFAULT_SUITE.is_dir()
    cases = chosen()
    assert len(cases) >= 107, "the report lists too few passing tests"
    started = time.monotonic()
    subnet, bridge = NETWORKS[proxy]
    built = runner.run(runner.Options(cases=cases, workdir=tmp_path, subnet=subnet,
                                      bridge=bridge, proxy=proxy))
    print(f"{len(cases)} conformance tests on {proxy} in {time.monotonic() - started:.0f}s")
    results = {t["name"]: (t["result"], t.get("reason", "")) for t in built["tests"]}
    assert set(results) == set(cases)
    assert {name: r for name, r in results.items() if r[0] != "SUCCEEDED"} == {}
    # the node is gone: bridge, processes, state
    assert leftovers(Node(tmp_path, tmp_path / "config", subnet, bridge), []) == []
