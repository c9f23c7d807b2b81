"""VirtualService matches on JWT claims (``@request.auth.claims.<name>`` headers), which
pilotfish does not route on.

Istio routes on a claim with the metadata its JWT filter leaves on the request, at
gateways whose pods a RequestAuthentication selects. pilotfish's JWT filter leaves no such
metadata, so a match entry that asks for a claim (in ``headers`` or ``withoutHeaders``)
is left out of the routes (``translators/route_match.py``): requests it was meant to take
fall through to the later rules, or get 404 when none is left. Istio's analyzer checks
that a RequestAuthentication applies (IST0149); here no RequestAuthentication would make
the route work, so this check reports every such match instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from pilotfish.analysis.base import Check, Finding, Inputs, Level, finding

CLAIM_PREFIX = "@request.auth.claims"
CLAIM_ROUTE = Check(
    "PF0119", "ClaimRouteNotServed", Level.ERROR,
    "a VirtualService match on a JWT claim, which pilotfish does not route on",
)


def analyze(inputs: Inputs) -> Iterator[Finding]:
    for vs in inputs.push.objects("VirtualService"):
        for i, rule in enumerate(vs.spec.get("http") or ()):
            if not isinstance(rule, Mapping):
                continue
            for j, match in enumerate(rule.get("match") or ()):
                if not isinstance(match, Mapping):
                    continue
                for field in ("headers", "withoutHeaders"):
                    for name in match.get(field) or {}:
                        if str(name).startswith(CLAIM_PREFIX):
                            yield finding(
                                CLAIM_ROUTE, vs, ("spec", "http", i, "match", j, field, name),
                                f"{name!r} matches on a JWT claim: pilotfish does not route on "
                                "claims, so this match entry is left out of the routes and "
                                "its requests fall through to the later rules")
