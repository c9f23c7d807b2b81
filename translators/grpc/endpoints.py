"""EDS for proxyless gRPC (plugin ``grpc-eds``): the sidecar's assignments, with localities.

gRPC's client drops a group of endpoints that has no locality or no weight, so each group
gets its locality (empty when the endpoints have none) and a weight, the sum of its
endpoints' weights, as Istio sends them.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext
from pilotfish.core.xds import types
from pilotfish.translators.eds import Endpoints
from pilotfish.translators.grpc.common import KIND


def with_locality_weights(
    assignment: endpoint_pb2.ClusterLoadAssignment,
) -> endpoint_pb2.ClusterLoadAssignment:
    out = endpoint_pb2.ClusterLoadAssignment()
    out.CopyFrom(assignment)
    for group in out.endpoints:
        if not group.HasField("locality"):
            group.locality.CopyFrom(base_pb2.Locality())
        group.load_balancing_weight.value = sum(
            max(1, lb.load_balancing_weight.value) for lb in group.lb_endpoints) or 1
    return out


class GrpcEndpoints:
    type_url = types.ENDPOINT
    proxy_kinds = frozenset({KIND})
    depends_on = Endpoints.depends_on

    def __init__(self) -> None:
        self._assignments = Endpoints()

    def generate(
        self, push: PushContext, proxy: Proxy, memo: dict[Any, Any]
    ) -> list[endpoint_pb2.ClusterLoadAssignment]:
        out = []
        # The memo holds the sidecar-form assignments (keyed by cluster and subset) and,
        # keyed by their identity, the gRPC form: each is built once per epoch.
        for assignment in self._assignments.generate(push, proxy, memo):
            key = ("grpc", id(assignment))
            hit = memo.get(key)
            if hit is None or hit[0] is not assignment:
                hit = memo[key] = (assignment, with_locality_weights(assignment))
            out.append(hit[1])
        return out


@hookimpl
def pilotfish_xds_generator() -> GrpcEndpoints:
    return GrpcEndpoints()
