"""The Gateway API conformance suite's tests that pass (docs/conformance/report.yaml says
which) keep passing: one ``pilotfish up`` with the suite's infrastructure, the tests back to
back as the runner runs them, on real Envoy, CNI and iptables, as root.

All 104 passing tests take about 11 minutes here, most of it spent on the 35 that make
Gateways of their own: the node starts a router pod for each (~10 s) and stops it after
(the next test's config waits for that). CI runs the others — every test on the suite's
shared Gateways: HTTPRoute, GRPCRoute, mesh, BackendTLSPolicy — and a few that make their
own Gateway (TLS passthrough, termination and both on one listener, a certificate from
another namespace): 73 tests, about 5½ minutes with the node. The whole set is
``python -m pilotfish.testing.conformance.runner``; regenerating the report with it brings a
test that starts to pass into this one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from pilotfish.testing.conformance import manifests, runner
from pilotfish.testing.conformance.cases import ALL
from pilotfish.testing.conformance.model import Case
from pilotfish.testing.node import Node, leftovers

pytestmark = [pytest.mark.envoy, pytest.mark.e2e, pytest.mark.corpus]

REPORT = Path(__file__).resolve().parents[2] / "docs" / "conformance" / "report.yaml"
SUBNET = "10.241.0.0/24"  # apart from the runner's default and the other node tests'
ALSO = frozenset({
    "GatewaySecretReferenceGrantSpecific",
    "TLSRouteMixedTerminationSameNamespace",
    "TLSRouteSimpleSameNamespace",
    "TLSRouteTerminateSimpleSameNamespace",
})


def makes_a_gateway(case: Case) -> bool:
    applied = (*case.manifests, *(m for step in case.steps for m in step.apply))
    return any(document.get("kind") == "Gateway" for manifest in applied
               for document in manifests.documents(manifests.DEFAULT_SUITE, manifest))


def chosen() -> tuple[str, ...]:
    report = yaml.safe_load(REPORT.read_text())
    passed = {t["name"] for t in report["tests"] if t["result"] == "SUCCEEDED"}
    assert passed >= ALSO, sorted(ALSO - passed)
    return tuple(case.short_name for case in ALL if case.short_name in passed
                 and (case.short_name in ALSO or not makes_a_gateway(case)))


@pytest.mark.timeout(900)
def test_the_tests_the_report_says_pass_still_pass(tmp_path: Path):
    assert os.geteuid() == 0, "the conformance runner needs root (pilotfish up)"
    assert manifests.DEFAULT_SUITE.is_dir()
    cases = chosen()
    assert len(cases) > 60, "the report lists too few passing tests"
    started = time.monotonic()
    built = runner.run(runner.Options(cases=cases, workdir=tmp_path, subnet=SUBNET,
                                      bridge="pfconf1"))
    print(f"{len(cases)} conformance tests in {time.monotonic() - started:.0f}s")
    results = {t["name"]: (t["result"], t.get("reason", "")) for t in built["tests"]}
    assert set(results) == set(cases)
    assert {name: r for name, r in results.items() if r[0] != "SUCCEEDED"} == {}
    # the node is gone: bridge, processes, state
    assert leftovers(Node(tmp_path, tmp_path / "config", SUBNET, "pfconf1"), []) == []
