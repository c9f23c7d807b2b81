"""VirtualService rules and match entries that earlier ones hide.

Routes are tried in order and the first that matches takes the request (or connection).
So a rule after one without ``match`` never gets anything (``translators/routes.py`` stops
there, and so do the TCP routes; for HTTP, validation already warns about it), and a match
entry is never used when an earlier entry, in its rule or an earlier one, takes every
request it would: the earlier entry asks for nothing the later one does not also ask for.
For URIs that means an earlier ``prefix`` that the later ``prefix`` or ``exact`` starts
with (a prefix of ``/`` asks for nothing); for the other conditions (method, authority,
port, ...) the earlier one's must equal the later one's, and of the named ones (headers,
query parameters, source labels) each the earlier asks for must be asked for later too;
for the any-of lists (``sniHosts``, ``destinationSubnets``, ``gateways``) the later list
must be within the earlier one. A match on a JWT claim never matches here (PF0119) and
hides nothing. A rule whose every entry is hidden is unreachable as a whole. Entries'
``name`` (and an HTTP match's ``statPrefix``) route nothing and are ignored.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pilotfish.analysis.base import Check, Finding, Inputs, IstioMessage, Level, finding
from pilotfish.analysis.claim_routes import CLAIM_PREFIX
from pilotfish.core.model import host_matches
from pilotfish.core.objects import ConfigObject

_ANALYZER = "schema.ValidationAnalyzer.VirtualService"
RULE_UNREACHABLE = Check(
    "PF0125", "RouteRuleUnreachable", Level.WARNING,
    "a VirtualService rule that earlier rules leave nothing to",
    IstioMessage("IST0130", "VirtualServiceUnreachableRule", _ANALYZER),
)
MATCH_INEFFECTIVE = Check(
    "PF0126", "RouteMatchIneffective", Level.INFO,
    "a VirtualService match entry that an earlier entry takes every request of",
    IstioMessage("IST0131", "VirtualServiceIneffectiveMatch", _ANALYZER),
)

_IGNORED = frozenset({"name", "statPrefix"})
# Conditions met when the request's value is any of the listed ones.
_ANY_OF = frozenset({"sniHosts", "destinationSubnets", "gateways"})
# Conditions made of several named ones, all of which must hold.
_ALL_OF = frozenset({"headers", "queryParams", "withoutHeaders", "sourceLabels"})


def _uri_covers(earlier: Mapping[str, Any] | None, later: Mapping[str, Any] | None) -> bool:
    if not earlier:
        return True
    rest = {k: v for k, v in earlier.items() if k not in ("prefix", "exact")}
    if earlier.get("prefix") == "/" and not rest:
        return True  # every path starts with /
    if not later or rest != {k: v for k, v in later.items() if k not in ("prefix", "exact")}:
        return False
    if "prefix" in earlier:
        target = later.get("prefix", later.get("exact"))
        return isinstance(target, str) and target.startswith(str(earlier["prefix"]))
    if "exact" in earlier:
        return "exact" in later and later["exact"] == earlier["exact"]
    return True  # a regex (in ``rest``), written the same


def _within(later: Sequence[Any], earlier: Sequence[Any], key: str) -> bool:
    if key == "sniHosts":
        return all(any(host_matches(str(e), str(v)) for e in earlier) for v in later)
    return set(map(str, later)) <= set(map(str, earlier))


def covers(earlier: Mapping[str, Any], later: Mapping[str, Any]) -> bool:
    """Does every request (connection) the later match entry takes match the earlier?"""
    for key, value in earlier.items():
        if key in _IGNORED:
            continue
        theirs = later.get(key)
        if key == "uri":
            if not _uri_covers(value, theirs):
                return False
        elif key in _ANY_OF:
            if not value:
                continue
            if not theirs or not _within(theirs, value, key):
                return False
        elif key in _ALL_OF and isinstance(value, Mapping):
            # Each condition asked for earlier is asked for later too (more conditions
            # narrow the later one).
            if not isinstance(theirs, Mapping) or any(
                    theirs.get(k) != v for k, v in value.items()):
                return False
        elif value != theirs and value not in (None, [], {}, ""):
            return False
    return True


def _on_claims(match: Mapping[str, Any]) -> bool:
    names = [*(match.get("headers") or {}), *(match.get("withoutHeaders") or {})]
    return any(str(n).startswith(CLAIM_PREFIX) for n in names)


def _check(vs_obj: ConfigObject, kind: str, rules: Sequence[Any]) -> Iterator[Finding]:
    seen: list[tuple[int, int, Mapping[str, Any]]] = []
    catch_all: int | None = None
    for i, rule in enumerate(rules):
        if not isinstance(rule, Mapping):
            continue
        matches = [m if isinstance(m, Mapping) else {} for m in rule.get("match") or ()]
        if catch_all is not None:
            if kind == "http":
                continue  # validation warns about these (PF0001); not said twice
            yield finding(RULE_UNREACHABLE, vs_obj, ("spec", kind, i),
                          f"{kind}[{i}] is never used: {kind}[{catch_all}] has no match and "
                          "takes every request first")
            continue
        if not matches:
            catch_all = i
            continue
        hidden: list[str] = []
        for j, match in enumerate(matches):
            by = next(((a, b) for a, b, m in seen if covers(m, match)), None)
            if by is None:
                if not _on_claims(match):  # never matches in pilotfish (see PF0119)
                    seen.append((i, j, match))
                continue
            where = f"{kind}[{by[0]}].match[{by[1]}]"
            hidden.append(where)
            yield finding(MATCH_INEFFECTIVE, vs_obj, ("spec", kind, i, "match", j),
                          f"{kind}[{i}].match[{j}] is never used: {where} comes first and "
                          "takes every request it would")
        if len(hidden) == len(matches):
            yield finding(RULE_UNREACHABLE, vs_obj, ("spec", kind, i),
                          f"{kind}[{i}] is never used: every one of its matches is taken "
                          f"first ({', '.join(dict.fromkeys(hidden))})")


def analyze(inputs: Inputs) -> Iterator[Finding]:
    for vs in inputs.push.objects("VirtualService"):
        for kind in ("http", "tcp", "tls"):
            rules = vs.spec.get(kind)
            if isinstance(rules, Sequence) and len(rules) > 0:
                yield from _check(vs, kind, rules)
