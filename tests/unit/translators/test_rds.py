"""RDS for sidecars: which route configurations exist, their virtual hosts and domains."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from pilotfish.core import push_context
from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import Proxy, parse_node
from pilotfish.core.xds import types
from pilotfish.core.xds.generator import Generator
from pilotfish.core.yamlload import load_text
from pilotfish.testing.generators import generate as generated
from pilotfish.translators import rds

MESH = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 9080}, {name: tcp-db, port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: details, namespace: shop}
spec:
  clusterIPs: [10.96.0.20, "fd00::20"]
  ports: [{name: http-web, port: 80}, {name: sniffed, port: 9000}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: None
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews-alias, namespace: default}
spec:
  type: ExternalName
  externalName: reviews.default.svc.cluster.local
  ports: [{name: http, port: 9999}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: default}
spec:
  hosts: [api.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 443, name: tls, protocol: TLS}]
  resolution: DNS
"""
SIDECAR = parse_node("sidecar~10.1.0.1~pp-1.default~default.svc.cluster.local",
                     {"LABELS": {"app": "productpage"}})
OTHER_NS = parse_node("sidecar~10.1.0.2~x-1.shop~shop.svc.cluster.local", {"LABELS": {}})


def generate(extra: str = "", proxy: Proxy = SIDECAR,
             mesh: MeshSettings | None = None) -> dict[str, route_pb2.RouteConfiguration]:
    objects, errors = load_text(MESH + extra, "mesh.yaml")
    assert not errors
    push = push_context.build(objects, mesh or MeshSettings(), "v1")
    return {c.name: c for c in generated(types.ROUTE, push, proxy, {})}


def vhosts(config: route_pb2.RouteConfiguration) -> dict[str, rc.VirtualHost]:
    return {v.name: v for v in config.virtual_hosts}


def test_plugin_contract() -> None:
    sidecar, router = rds.pilotfish_xds_generator()
    assert isinstance(sidecar, rds.SidecarRoutes) and isinstance(router, rds.RouterRoutes)
    assert (sidecar.proxy_kinds, router.proxy_kinds) == ({"sidecar"}, {"router"})
    for generator in (sidecar, router):
        assert isinstance(generator, Generator)
        assert generator.type_url == types.ROUTE
        assert generator.depends_on == frozenset({
            "VirtualService", "DestinationRule", "Service", "ServiceEntry", "Gateway",
            "Sidecar"})
    assert getattr(rds.pilotfish_xds_generator, hookimpl.project_name + "_impl")


def test_one_route_config_per_http_or_sniffed_port() -> None:
    configs = generate()
    # 5432 is TCP, 443 TLS; 9999 belongs to an ExternalName alias only.
    assert sorted(configs) == ["80", "9000", "9080"]
    config = configs["9080"]
    assert config.validate_clusters.value is False
    assert config.ignore_port_in_host_matching is True
    assert config.max_direct_response_body_size_bytes.value == 1048576


def test_virtual_host_names_and_catch_all_last() -> None:
    config = generate()["80"]
    assert [v.name for v in config.virtual_hosts] == [
        "api.example.com:80", "details.shop.svc.cluster.local:80", "allow_any"]
    allow_any = config.virtual_hosts[-1]
    assert list(allow_any.domains) == ["*"]
    (route,) = allow_any.routes
    assert route.name == "allow_any" and route.route.cluster == "PassthroughCluster"
    assert route.route.timeout.seconds == 0 and route.route.HasField("timeout")


def test_domains_in_the_same_namespace() -> None:
    vhost = vhosts(generate()["9080"])["reviews.default.svc.cluster.local:9080"]
    assert list(vhost.domains) == [
        "reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local.",
        "reviews", "reviews.default.svc", "reviews.default",
        # the ExternalName service naming reviews answers on the same virtual host
        "reviews-alias.default.svc.cluster.local", "reviews-alias.default.svc.cluster.local.",
        "reviews-alias", "reviews-alias.default.svc", "reviews-alias.default",
        "10.96.0.10",
    ]
    (route,) = vhost.routes
    assert route.name == "default"
    assert route.route.cluster == "outbound|9080||reviews.default.svc.cluster.local"
    assert route.decorator.operation == "reviews.default.svc.cluster.local:9080/*"
    assert vhost.include_request_attempt_count


def test_domains_from_another_namespace_and_ipv6_vip() -> None:
    vhost = vhosts(generate()["80"])["details.shop.svc.cluster.local:80"]
    assert list(vhost.domains) == [
        "details.shop.svc.cluster.local", "details.shop.svc.cluster.local.",
        "details.shop", "details.shop.svc", "10.96.0.20", "[fd00::20]"]
    local = vhosts(generate(proxy=OTHER_NS)["80"])["details.shop.svc.cluster.local:80"]
    assert "details" in local.domains


def test_external_and_headless_services() -> None:
    external = vhosts(generate()["80"])["api.example.com:80"]
    assert list(external.domains) == ["api.example.com", "api.example.com."]
    headless = vhosts(generate()["9080"])["db.default.svc.cluster.local:9080"]
    assert "*.db.default.svc.cluster.local" in headless.domains
    assert "*.db" in headless.domains


def test_registry_only_gives_block_all() -> None:
    config = generate(mesh=MeshSettings(outbound_traffic_policy="REGISTRY_ONLY"))["9080"]
    block = config.virtual_hosts[-1]
    assert block.name == "block_all" and list(block.domains) == ["*"]
    assert block.routes[0].name == "block_all"
    assert block.routes[0].direct_response.status == 502


def test_sidecar_resource_scopes_services_and_policy() -> None:
    sidecar = """\
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress: [{hosts: ["./*"]}]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"""
    configs = generate(sidecar)
    # details lives in shop, which "./*" does not import: its port 9000 is gone.
    assert sorted(configs) == ["80", "9080"]
    assert [v.name for v in configs["80"].virtual_hosts] == ["api.example.com:80", "block_all"]


VS_REVIEWS = """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /v2}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"""


def test_virtual_service_replaces_the_default_route() -> None:
    vhost = vhosts(generate(VS_REVIEWS)["9080"])["reviews.default.svc.cluster.local:9080"]
    assert [r.route.cluster for r in vhost.routes] == [
        "outbound|9080|v2|reviews.default.svc.cluster.local",
        "outbound|9080|v1|reviews.default.svc.cluster.local",
    ]
    assert "reviews" in vhost.domains


def test_virtual_service_for_a_non_service_host_is_routable_on_port_80_only() -> None:
    vs = """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop-web, namespace: default}
spec:
  hosts: [shop.example.org]
  http:
  - route: [{destination: {host: details.shop.svc.cluster.local}}]
"""
    configs = generate(vs)
    vhost = vhosts(configs["80"])["shop.example.org:80"]
    assert list(vhost.domains) == ["shop.example.org"]
    assert vhost.routes[0].route.cluster == "outbound|80||details.shop.svc.cluster.local"
    assert "shop.example.org:9080" not in vhosts(configs["9080"])


def test_wildcard_virtual_service_host_takes_matching_services() -> None:
    vs = """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: example, namespace: default}
spec:
  hosts: ["*.example.com"]
  http:
  - route: [{destination: {host: api.example.com}}]
    timeout: 5s
"""
    vhost = vhosts(generate(vs)["80"])["api.example.com:80"]
    assert vhost.routes[0].route.timeout.seconds == 5
    assert "*.example.com:80" not in vhosts(generate(vs)["80"])


def test_duplicate_domains_first_wins() -> None:
    vs = """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: grab-short-name, namespace: default}
spec:
  hosts: [details.shop]
  http:
  - route: [{destination: {host: details.shop.svc.cluster.local}}]
"""
    config = generate(vs, proxy=OTHER_NS)["80"]
    names = vhosts(config)
    assert list(names["details.shop:80"].domains) == ["details.shop"]
    # The service's own virtual host lost "details.shop" to the earlier VirtualService.
    assert "details.shop" not in names["details.shop.svc.cluster.local:80"].domains
    domains = [d for v in config.virtual_hosts for d in v.domains]
    assert len(domains) == len(set(domains))


def test_source_only_routes_fall_back_to_the_default_route() -> None:
    vs = """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{sourceLabels: {app: someone-else}}]
    route: [{destination: {host: reviews, subset: v9}}]
"""
    vhost = vhosts(generate(vs)["9080"])["reviews.default.svc.cluster.local:9080"]
    assert [r.name for r in vhost.routes] == ["default"]


def test_export_to_hides_virtual_services_from_other_namespaces() -> None:
    private = VS_REVIEWS.replace("hosts: [reviews]", 'hosts: [reviews]\n  exportTo: ["."]')
    mine = vhosts(generate(private)["9080"])["reviews.default.svc.cluster.local:9080"]
    theirs = vhosts(generate(private, proxy=OTHER_NS)["9080"])[
        "reviews.default.svc.cluster.local:9080"]
    assert len(mine.routes) == 2
    assert [r.name for r in theirs.routes] == ["default"]


def test_virtual_service_to_an_external_name_routes_to_its_target() -> None:
    vs = """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: via-alias, namespace: default}
spec:
  hosts: [api.example.com]
  http:
  - route: [{destination: {host: reviews-alias, port: {number: 9080}}}]
"""
    vhost = vhosts(generate(vs)["80"])["api.example.com:80"]
    assert vhost.routes[0].route.cluster == "outbound|9080||reviews.default.svc.cluster.local"


def test_output_ignores_proxy_name_and_ip() -> None:
    twin = parse_node("sidecar~10.9.9.9~pp-2.default~default.svc.cluster.local",
                      {"LABELS": {"app": "productpage"}})
    assert generate(VS_REVIEWS) == generate(VS_REVIEWS, proxy=twin)


def test_waypoints_get_nothing() -> None:
    waypoint = parse_node("waypoint~10.1.0.9~wp-1.default~default.svc.cluster.local")
    assert generate(proxy=waypoint) == {}
