"""Every test of the Gateway API conformance suite as model data (see ``../model.py``).

One module per group of Go files; ``ALL`` lists every case in the order of the Go file names
under ``conformance/tests/`` (``mesh/`` files sort under "m"), and within a file in the order
its ``init`` registers them.
"""

from __future__ import annotations

from ..model import Case
from . import (
    backendtlspolicy,
    gateway,
    grpcroute,
    httproute_headers,
    httproute_matching,
    httproute_mirrors,
    httproute_redirects,
    httproute_resilience,
    httproute_rewrites,
    httproute_routing,
    httproute_status,
    listenerset,
    mesh,
    mesh_routes,
    tcproute,
    tlsroute,
    udproute,
)

MODULES = (backendtlspolicy, gateway, grpcroute, httproute_headers, httproute_matching,
           httproute_mirrors, httproute_redirects, httproute_resilience, httproute_rewrites,
           httproute_routing, httproute_status, listenerset, mesh, mesh_routes, tcproute, tlsroute,
           udproute)

# sorted() is stable: the cases of one file keep the order their module lists them in
ALL: tuple[Case, ...] = tuple(sorted(
    (case for module in MODULES for case in module.CASES), key=lambda case: case.source))
