"""The proxyless gRPC generators: what a gRPC client of kind ``grpc`` is served."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import parse_node
from pilotfish.core.xds import types
from pilotfish.core.yamlload import load_text
from pilotfish.testing.generators import generate

CONFIG = """\
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: grpc}
spec:
  selector: {app: echo}
  ports:
  - {name: grpc, port: 7070, targetPort: 17070}
  - {name: tcp-db, port: 5432}
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: shop}
spec:
  selector: {app: other}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: echo-1, namespace: grpc, labels: {app: echo, version: v1}}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: echo-2, namespace: grpc, labels: {app: echo, version: v2}}
status: {podIP: 10.0.0.2}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: grpc}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: grpc}
spec:
  host: echo.grpc.svc.cluster.local
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
  subsets:
  - {name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}}
  - {name: v2, labels: {version: v2}, trafficPolicy: {loadBalancer: {simple: RANDOM}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: grpc}
spec:
  hosts: [echo.grpc.svc.cluster.local]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    corsPolicy: {allowOrigins: [{exact: "https://example.com"}]}
    route: [{destination: {host: echo.grpc.svc.cluster.local, subset: v2}}]
  - route:
    - {destination: {host: echo.grpc.svc.cluster.local, subset: v1}, weight: 80}
    - {destination: {host: echo.grpc.svc.cluster.local, subset: v2}, weight: 20}
"""

CLIENT = parse_node("sidecar~10.0.0.9~client.grpc~grpc.svc.cluster.local",
                    {"GENERATOR": "grpc"})
SIDECAR = parse_node("sidecar~10.0.0.8~app.grpc~grpc.svc.cluster.local")


def push() -> push_context.PushContext:
    objects, errors = load_text(CONFIG, "grpc.yaml")
    assert not errors
    return push_context.build(objects, MeshSettings(), "v1")


def by_name(type_url: str, proxy=CLIENT) -> dict:
    return {types.resource_name(m): m for m in generate(type_url, push(), proxy)}


def test_a_grpc_generator_node_is_a_proxy_of_kind_grpc():
    assert (CLIENT.type.value, CLIENT.kind) == ("sidecar", "grpc")
    assert CLIENT.scope != SIDECAR.scope  # never sharing a sidecar's cached output
    assert SIDECAR.kind == "sidecar"


def test_api_listeners_for_every_name_a_resolver_accepts_all_naming_one_route_table():
    listeners = by_name(types.LISTENER)
    # HTTP ports only: a gRPC client cannot speak to 5432 (TCP) or to a DNS ServiceEntry.
    assert set(listeners) == {
        "echo.grpc.svc.cluster.local:7070", "echo:7070", "echo.grpc:7070",
        "echo.grpc.svc:7070", "other.shop.svc.cluster.local:80", "other.shop:80",
        "other.shop.svc:80",
    }
    for name in ("echo:7070", "echo.grpc.svc.cluster.local:7070"):
        manager = hcm_pb2.HttpConnectionManager()
        listeners[name].api_listener.api_listener.Unpack(manager)
        assert manager.rds.route_config_name == "echo.grpc.svc.cluster.local:7070"
        assert manager.rds.config_source.HasField("ads")
        # gRPC's client requires the router, last.
        assert manager.http_filters[-1].name == "envoy.filters.http.router"
        assert not listeners[name].filter_chains and not listeners[name].listener_filters


def test_route_tables_carry_the_virtual_service_with_only_what_grpc_supports():
    routes = by_name(types.ROUTE)
    assert set(routes) == {"echo.grpc.svc.cluster.local:7070", "other.shop.svc.cluster.local:80"}
    (host,) = routes["echo.grpc.svc.cluster.local:7070"].virtual_hosts
    assert list(host.domains) == ["*"]
    jason, split = host.routes
    assert jason.match.headers[0].name == "end-user"
    assert jason.route.cluster == "outbound|7070|v2|echo.grpc.svc.cluster.local"
    # The fault stays (gRPC has the filter); CORS, which gRPC lacks, is left out.
    assert set(jason.typed_per_filter_config) == {"envoy.filters.http.fault"}
    weights = {c.name: c.weight.value for c in split.route.weighted_clusters.clusters}
    assert weights == {"outbound|7070|v1|echo.grpc.svc.cluster.local": 80,
                       "outbound|7070|v2|echo.grpc.svc.cluster.local": 20}
    # The route hashes on the header for the ring hash the DestinationRule asks for.
    assert split.route.hash_policy[0].header.header_name == "x-user"


def test_clusters_are_eds_with_a_load_balancer_grpc_implements():
    clusters = by_name(types.CLUSTER)
    assert set(clusters) == {
        "outbound|7070||echo.grpc.svc.cluster.local",
        "outbound|7070|v1|echo.grpc.svc.cluster.local",
        "outbound|7070|v2|echo.grpc.svc.cluster.local",
        "outbound|80||other.shop.svc.cluster.local",
    }
    default = clusters["outbound|7070||echo.grpc.svc.cluster.local"]
    assert default.type == cluster_pb2.Cluster.EDS
    assert default.eds_cluster_config.service_name == default.name
    assert default.eds_cluster_config.eds_config.HasField("ads")
    assert default.lb_policy == cluster_pb2.Cluster.RING_HASH
    v1 = clusters["outbound|7070|v1|echo.grpc.svc.cluster.local"]
    v2 = clusters["outbound|7070|v2|echo.grpc.svc.cluster.local"]
    assert v1.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    assert v2.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN  # RANDOM: gRPC has none
    assert not default.HasField("transport_socket")


def test_every_endpoint_group_has_a_locality_and_a_weight():
    assignments = by_name(types.ENDPOINT)
    cla = assignments["outbound|7070||echo.grpc.svc.cluster.local"]
    (group,) = cla.endpoints  # endpoints without a locality: one group, an empty locality
    assert group.HasField("locality") and group.locality.region == ""
    assert group.load_balancing_weight.value == len(group.lb_endpoints) == 2
    v2 = assignments["outbound|7070|v2|echo.grpc.svc.cluster.local"]
    assert [lb.endpoint.address.socket_address.address for g in v2.endpoints
            for lb in g.lb_endpoints] == ["10.0.0.2"]


def test_the_sidecar_generators_are_untouched_by_the_grpc_set():
    # A sidecar in the same namespace keeps its virtualOutbound and port-named routes.
    listeners = by_name(types.LISTENER, SIDECAR)
    assert "virtualOutbound" in listeners and "echo:7070" not in listeners
    assert "7070" in by_name(types.ROUTE, SIDECAR)
    sidecar_cla = by_name(types.ENDPOINT, SIDECAR)["outbound|7070||echo.grpc.svc.cluster.local"]
    assert not any(g.HasField("load_balancing_weight") for g in sidecar_cla.endpoints)
