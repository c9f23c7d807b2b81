"""The analyzers ``pilotfish analyze`` runs, and the catalog of what they report.

Each module holds one check: a `Check` (code, name, level) and an ``analyze(inputs)``
function yielding findings. Codes are stable: scripts may filter on them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pilotfish.analysis import destinations, localhost, ports, proxy_uid, subsets
from pilotfish.analysis.base import Check, Finding, Inputs, Level

INVALID_CONFIG = Check("PF0001", "InvalidConfig", Level.ERROR,
                       "an object fails validation (schema, CEL or semantic rules)")

Analyzer = Callable[[Inputs], Iterable[Finding]]

ANALYZERS: tuple[tuple[str, Analyzer], ...] = (
    ("ports", ports.analyze),
    ("proxy-uid", proxy_uid.analyze),
    ("subsets", subsets.analyze),
    ("destinations", destinations.analyze),
    ("localhost", localhost.analyze),
)

CHECKS: tuple[Check, ...] = (
    INVALID_CONFIG,
    ports.PORT_PROTOCOL,
    proxy_uid.PROXY_UID,
    subsets.SUBSET_SELECTS_NOTHING,
    destinations.HOST_UNKNOWN,
    destinations.SUBSET_UNKNOWN,
    destinations.PORT_UNKNOWN,
    destinations.PORT_AMBIGUOUS,
    localhost.LOCALHOST_LISTENER,
)
