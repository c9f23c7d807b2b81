"""The profiles pilotfish ships: named plugin sets, registered as data in the entry-point
group ``pilotfish.profiles`` like any distribution's (see docs/plugins.md).

A mesh config picks one or several (``profile: [sidecar, grpc]``); their plugins are
combined in order, then ``plugins:`` may add, remove or replace names per group.
"""

from __future__ import annotations

from pilotfish.core.plugins import Profile

SIDECAR = Profile(
    description="Istio's sidecar mesh: Envoy sidecars and gateways, iptables capture",
    plugins={
        # envoy-filter: EnvoyFilter objects patch what the generators make.
        "xds": ("cds", "eds", "lds", "rds", "sds", "envoy-filter"),
        "sources": ("files", "kubernetes"),
        # grpc: the agent alone, for proxyless gRPC apps (Istio's grpc-agent template)
        "proxies": ("envoy", "native", "grpc"),
        "interceptors": ("iptables",),
        "sniffers": ("tls", "http1", "http2"),
        "certs": ("istio-ca",),
    },
)

AMBIENT = Profile(
    description="ambient mode: ztunnel's Workload Discovery (Address, Authorization), the "
                "ztunnel-sockets interceptor (in-pod rules and ZDS through the CNI node "
                "agent), ztunnel (the node proxy's backend) and the waypoint proxies' "
                "Envoy config",
    plugins={
        "xds": ("wds-addresses", "wds-authorization",
                "waypoint-lds", "waypoint-rds", "waypoint-cds", "waypoint-eds"),
        "sources": ("files", "kubernetes"),
        "interceptors": ("ztunnel-sockets",),
        # envoy: waypoints run on Envoy (proxy kind waypoint, internal listeners);
        # ztunnel: the node proxy, which the local node runs (mesh config ``ztunnel``)
        "proxies": ("envoy", "ztunnel"),
        "certs": ("istio-ca",),
    },
)

GRPC = Profile(
    description="proxyless gRPC: gRPC's own xDS client (GENERATOR: grpc) gets API listeners, "
                "routes, clusters and endpoints",
    plugins={
        "xds": ("grpc-lds", "grpc-rds", "grpc-cds", "grpc-eds"),
        "sources": ("files", "kubernetes"),
        "proxies": ("grpc",),
        "certs": ("istio-ca",),
    },
)
