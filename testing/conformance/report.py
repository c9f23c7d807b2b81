"""The ConformanceReport (``conformance/apis/v1``, ``utils/suite/reports.go``), sans-IO.

Per profile, as Go counts: each result of a test of the profile adds to ``core`` or
``extended`` (``isTestExtended``); a failure or skip names the test in ``failedTests`` or
``skippedTests``; ``result`` is failure when any failed, partial when any was skipped,
else success; ``supportedFeatures``/``unsupportedFeatures`` are the profile's extended
features the run claims and does not. Provisional tests that passed are listed apart.

Go's report stops there; this one adds ``tests``: every test run with its profiles, level,
result and, for a failure or a skip, why (the report is where a test that cannot run here
says so).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from .model import Case
from .profiles import Profile, belongs, is_extended

PASSED = "SUCCEEDED"
FAILED = "FAILED"
SKIPPED = "SKIPPED"


@attrs.frozen
class Result:
    case: Case
    result: str  # PASSED | FAILED | SKIPPED
    reason: str = ""
    seconds: float = 0.0


@attrs.frozen
class Implementation:
    organization: str = "pilotfish"
    project: str = "pilotfish"
    url: str = "docs/conformance/README.md"
    version: str = "0.1.0"
    contact: tuple[str, ...] = ("pilotfish maintainers (docs/conformance/README.md)",)

    def as_dict(self) -> dict[str, Any]:
        return {"contact": list(self.contact), "organization": self.organization,
                "project": self.project, "url": self.url, "version": self.version}


def gateway_api_version(suite: Path) -> str:
    """What the corpus's SOURCE.md says it was copied from (its CRDs carry no release)."""
    source = suite.parent / "SOURCE.md"
    text = source.read_text() if source.is_file() else ""
    found = re.search(r"at commit ([0-9a-f]{7,40})\s*\(([^)]*)\)", text)
    if not found:
        return "UNDEFINED"
    return f"main@{found.group(1)[:12]} ({found.group(2)})"


def _status(results: Sequence[Result]) -> dict[str, Any]:
    counts = {PASSED: 0, FAILED: 0, SKIPPED: 0}
    for result in results:
        counts[result.result] += 1
    if counts[FAILED]:
        outcome = "failure"
    elif counts[SKIPPED]:
        outcome = "partial"
    else:
        outcome = "success"
    out: dict[str, Any] = {
        "result": outcome,
        "statistics": {"Failed": counts[FAILED], "Passed": counts[PASSED],
                       "Skipped": counts[SKIPPED]},
    }
    skipped = [r.case.short_name for r in results if r.result == SKIPPED]
    failed = [r.case.short_name for r in results if r.result == FAILED]
    if skipped:
        out["skippedTests"] = skipped
    if failed:
        out["failedTests"] = failed
    return out


def _summary_part(status: Mapping[str, Any]) -> str:
    if status["result"] == "success":
        return "succeeded"
    if status["result"] == "partial":
        return f"partially succeeded with {status['statistics']['Skipped']} test skips"
    return f"failed with {status['statistics']['Failed']} test failures"


def profile_report(profile: Profile, results: Iterable[Result],
                   supported: Collection[str]) -> dict[str, Any]:
    mine = sorted((r for r in results if belongs(r.case, profile)),
                  key=lambda r: r.case.short_name)
    core = _status([r for r in mine if not is_extended(r.case, profile)])
    out: dict[str, Any] = {"core": core}
    summary = f"Core tests {_summary_part(core)}"
    extended_results = [r for r in mine if is_extended(r.case, profile)]
    if extended_results:
        extended = _status(extended_results)
        summary += f". Extended tests {_summary_part(extended)}"
        claimed = sorted(profile.extended & set(supported))
        unclaimed = sorted(profile.extended - set(supported))
        if claimed:
            extended["supportedFeatures"] = claimed
        if unclaimed:
            extended["unsupportedFeatures"] = unclaimed
        out["extended"] = extended
    out["name"] = profile.name
    out["summary"] = summary + "."
    return out


def build(results: Sequence[Result], profiles: Sequence[Profile], supported: Collection[str],
          *, implementation: Implementation, api_version: str, date: str,
          mode: str = "default", channel: str = "experimental") -> dict[str, Any]:
    """The report for one run."""
    ordered = sorted(results, key=lambda r: r.case.short_name)
    provisional = sorted(r.case.short_name for r in ordered
                         if r.result == PASSED and r.case.provisional)
    report: dict[str, Any] = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "date": date,
        "gatewayAPIChannel": channel,
        "gatewayAPIVersion": api_version,
        "implementation": implementation.as_dict(),
        "kind": "ConformanceReport",
        "mode": mode,
        "profiles": [profile_report(p, ordered, supported) for p in profiles],
    }
    if provisional:
        report["succeededProvisionalTests"] = provisional
    report["tests"] = [_test(r, profiles) for r in ordered]
    return report


def _test(result: Result, profiles: Sequence[Profile]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": result.case.short_name, "result": result.result}
    where = [f"{p.name} {'extended' if is_extended(result.case, p) else 'core'}"
             for p in profiles if belongs(result.case, p)]
    if where:
        out["profiles"] = where
    if result.reason:
        out["reason"] = result.reason
    out["seconds"] = round(result.seconds, 1)
    return out


def counts(report: Mapping[str, Any]) -> dict[str, tuple[int, int, int, int]]:
    """Per profile: (core passed, core total, extended passed, extended total)."""
    out = {}
    for profile in report["profiles"]:
        core = profile["core"]["statistics"]
        extended = (profile.get("extended") or {}).get("statistics") or {
            "Passed": 0, "Failed": 0, "Skipped": 0}
        out[profile["name"]] = (core["Passed"], sum(core.values()),
                                extended["Passed"], sum(extended.values()))
    return out
