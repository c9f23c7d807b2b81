"""The ConformanceReport counts results as the Go suite does, in Istio's report's shape."""

from __future__ import annotations

from pathlib import Path

import yaml

from pilotfish.testing.conformance import profiles, report, runner
from pilotfish.testing.conformance.cases import ALL

CORPUS = Path(__file__).resolve().parents[3].parent / "shared" / "corpus" / "gateway-api"
ISTIO = CORPUS / "conformance" / "reports" / "v1.5" / "istio-istio" / "1.30.0-default-report.yaml"
BY_NAME = {case.short_name: case for case in ALL}


def _build(results: list[report.Result]) -> dict[str, object]:
    return report.build(results, profiles.PROFILES, profiles.ISTIO_1_30_SUPPORTED,
                        implementation=report.Implementation(version="0.1.0"),
                        api_version="main@0123456789ab (2026-08-21)", date="2026-12-06T00:00:00Z")


def test_results_count_under_every_profile_they_belong_to():
    results = [
        report.Result(BY_NAME["HTTPRouteSimpleSameNamespace"], report.PASSED),
        report.Result(BY_NAME["HTTPRouteMethodMatching"], report.FAILED, "got 404"),
        report.Result(BY_NAME["GatewayInfrastructure"], report.SKIPPED, "no node"),
    ]
    built = _build(results)
    http = next(p for p in built["profiles"] if p["name"] == "GATEWAY-HTTP")  # type: ignore[index, union-attr]
    assert http["core"] == {"result": "success",
                            "statistics": {"Failed": 0, "Passed": 1, "Skipped": 0}}
    assert http["extended"]["result"] == "failure"
    assert http["extended"]["failedTests"] == ["HTTPRouteMethodMatching"]
    assert http["extended"]["skippedTests"] == ["GatewayInfrastructure"]
    assert http["summary"] == "Core tests succeeded. Extended tests failed with 1 test failures."
    assert "HTTPRouteMethodMatching" in http["extended"]["supportedFeatures"]
    assert "ListenerSet" in http["extended"]["unsupportedFeatures"]
    # GatewayInfrastructure is a Gateway feature: every Gateway profile counts it
    grpc = next(p for p in built["profiles"] if p["name"] == "GATEWAY-GRPC")  # type: ignore[index, union-attr]
    assert grpc["extended"]["statistics"]["Skipped"] == 1
    assert "succeededProvisionalTests" not in built  # GatewayInfrastructure was skipped
    tests = {t["name"]: t for t in built["tests"]}  # type: ignore[union-attr]
    assert tests["HTTPRouteMethodMatching"]["reason"] == "got 404"
    assert tests["HTTPRouteSimpleSameNamespace"]["profiles"] == ["GATEWAY-HTTP core"]


def test_the_report_has_the_shape_of_istios():
    istio = yaml.safe_load(ISTIO.read_text())
    built = _build([report.Result(case, report.PASSED) for case in runner.select(
        profiles.PROFILES, profiles.ISTIO_1_30_SUPPORTED)])
    assert set(istio) <= set(built)
    assert set(istio["implementation"]) == set(built["implementation"])  # type: ignore[arg-type]
    for mine, theirs in zip(built["profiles"], istio["profiles"], strict=True):  # type: ignore[arg-type]
        assert mine["name"] == theirs["name"]
        assert set(mine) == set(theirs)
        assert set(mine["extended"]) == set(theirs["extended"])
        # the same features claimed and not, except those of tests newer than the report
        claimed = set(mine["extended"]["supportedFeatures"])
        assert set(theirs["extended"]["supportedFeatures"]) <= claimed
    assert report.counts(built) == {
        "GATEWAY-HTTP": (38, 38, 37, 37), "GATEWAY-GRPC": (16, 16, 4, 4),
        "GATEWAY-TLS": (21, 21, 8, 8), "MESH-HTTP": (7, 7, 7, 7)}
    # Istio's run also passed tests outside the four profiles, which this run leaves out
    outside = {"GRPCRouteNamedRule", "MeshHTTPRoute303Redirect", "MeshHTTPRoute308Redirect"}
    assert set(istio["succeededProvisionalTests"]) - outside == set(
        built["succeededProvisionalTests"]) - profiles.ADDED_SINCE_ISTIO_1_30_REPORT  # type: ignore[arg-type]


def test_the_api_version_comes_from_the_corpus_source():
    assert report.gateway_api_version(CORPUS / "conformance").startswith("main@4564255ac2c3")
