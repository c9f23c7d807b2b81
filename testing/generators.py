"""Run the built-in generators the way discovery picks them: by type URL and proxy kind.

``generate(types.LISTENER, push, proxy)`` gives what a sidecar, router or gRPC client would
be sent, without a discovery server; ``builtin()`` is the table discovery builds from the
``sidecar`` and ``grpc`` profiles' generator plugins.
"""

from __future__ import annotations

from typing import Any

from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext
from pilotfish.core.xds.generator import Generators
from pilotfish.translators import cds, eds, lds, rds, sds
from pilotfish.translators.grpc import clusters, endpoints, listeners, routes
from pilotfish.translators.listener_filters import ALL, Detection


def builtin(detection: Detection = ALL) -> Generators:
    return Generators.of(
        cds.SidecarClusters(), cds.RouterClusters(), eds.Endpoints(),
        lds.SidecarListeners(detection), lds.RouterListeners(detection),
        rds.SidecarRoutes(), rds.RouterRoutes(), sds.CredentialSecrets(),
        listeners.GrpcListeners(), routes.GrpcRoutes(), clusters.GrpcClusters(),
        endpoints.GrpcEndpoints(),
    )


def generate(type_url: str, push: PushContext, proxy: Proxy, memo: dict[Any, Any] | None = None,
             *, detection: Detection = ALL) -> list[Any]:
    """The messages of ``type_url`` the generator for ``proxy``'s kind makes; none when no
    generator serves that kind (discovery then sends nothing of the type)."""
    generator = builtin(detection).get(proxy.kind, type_url)
    if generator is None:
        return []
    return list(generator.generate(push, proxy, {} if memo is None else memo))
