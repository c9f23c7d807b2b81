"""RDS for router proxies: gateway servers → route configuration names and virtual hosts."""

from __future__ import annotations

import attrs
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import Proxy, parse_node
from pilotfish.core.xds import types
from pilotfish.core.yamlload import load_text
from pilotfish.testing.generators import generate as generated
from pilotfish.translators.gateway_routes import intersect, route_name

BASE = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.1.1
  ports: [{name: http, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["shop/*.example.com", "./admin.internal"]
  - port: {number: 443, name: https-shop, protocol: HTTPS}
    hosts: ["*/shop.example.com"]
    tls: {mode: SIMPLE, credentialName: shop-cert}
  - port: {number: 443, name: https-pass, protocol: HTTPS}
    hosts: ["pass.example.com"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 9443, name: tls, protocol: TLS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: x}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: redirect, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http-redirect, protocol: HTTP}
    hosts: ["secure.example.com"]
    tls: {httpsRedirect: true}
  - port: {number: 8000, name: grpc, protocol: GRPC}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: elsewhere, namespace: istio-system}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 81, name: http, protocol: HTTP}
    hosts: ["*"]
"""
ROUTER = parse_node("router~127.0.0.1~gw-1.istio-system~istio-system.svc.cluster.local",
                    {"LABELS": {"istio": "ingressgateway"}})


def generate(extra: str = "", proxy: Proxy = ROUTER) -> dict[str, route_pb2.RouteConfiguration]:
    objects, errors = load_text(BASE + extra, "gw.yaml")
    assert not errors
    push = push_context.build(objects, MeshSettings(), "v1")
    return {c.name: c for c in generated(types.ROUTE, push, proxy, {})}


def vhosts(config: route_pb2.RouteConfiguration) -> dict[str, rc.VirtualHost]:
    return {v.name: v for v in config.virtual_hosts}


def vs(name: str, namespace: str, hosts: str, gateways: str, http: str = "") -> str:
    return f"""\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  hosts: {hosts}
  gateways: {gateways}
  http:
{http or "  - route: [{destination: {host: web.shop.svc.cluster.local}}]"}
"""


def test_route_config_names() -> None:
    configs = generate()
    # Plain HTTP servers of both gateways share http.80; gRPC is HTTP too; passthrough
    # and TLS servers have no HTTP route; the egress gateway does not select this proxy.
    assert sorted(configs) == [
        "http.80", "http.8000", "https.443.https-shop.public.istio-system"]
    for config in configs.values():
        assert config.validate_clusters.value is False
        assert config.ignore_port_in_host_matching


def test_route_name_per_server() -> None:
    objects, _ = load_text(BASE, "gw.yaml")
    push = push_context.build(objects, MeshSettings(), "v1")
    public = next(g for g in push.gateways if g.name == "public")
    plain, terminated, passthrough, tls = public.servers
    assert route_name(plain) == "http.80"
    assert route_name(terminated) == "https.443.https-shop.public.istio-system"
    assert route_name(passthrough) is None and route_name(tls) is None
    redirect_only = attrs.evolve(passthrough, tls={"httpsRedirect": True})
    assert route_name(redirect_only) == "http.443"


def test_no_virtual_service_gives_a_404_blackhole() -> None:
    (vhost,) = generate()["http.8000"].virtual_hosts
    assert vhost.name == "blackhole:8000"
    assert list(vhost.domains) == ["*"] and not vhost.routes


def test_virtual_service_host_admitted_by_namespace_qualified_server_host() -> None:
    configs = generate(vs("web", "shop", "[www.example.com]", "[istio-system/public]"))
    vhost = vhosts(configs["http.80"])["www.example.com:80"]
    assert list(vhost.domains) == ["www.example.com"]
    (route,) = vhost.routes
    assert route.route.cluster == "outbound|8080||web.shop.svc.cluster.local"
    assert vhost.include_request_attempt_count


def test_server_host_namespace_rejects_other_namespaces() -> None:
    configs = generate(vs("web", "default", "[www.example.com]", "[istio-system/public]"))
    assert "www.example.com:80" not in vhosts(configs["http.80"])


def test_dot_namespace_means_the_gateways_namespace() -> None:
    admin = vs("admin", "istio-system", "[admin.internal]", "[public]")
    assert "admin.internal:80" in vhosts(generate(admin)["http.80"])
    elsewhere = vs("admin", "shop", "[admin.internal]", "[istio-system/public]")
    assert "admin.internal:80" not in vhosts(generate(elsewhere)["http.80"])


def test_https_server_route_config_and_wildcard_vs_host() -> None:
    configs = generate(vs("web", "shop", '["*.example.com"]', "[istio-system/public]"))
    https = vhosts(configs["https.443.https-shop.public.istio-system"])
    # The narrower of the two names is the virtual host.
    assert list(https) == ["shop.example.com:443"]
    assert "*.example.com:80" in vhosts(configs["http.80"])


def test_https_redirect_requires_tls() -> None:
    configs = generate()
    vhost = vhosts(configs["http.80"])["secure.example.com:80"]
    assert vhost.require_tls == rc.VirtualHost.ALL and not vhost.routes
    with_vs = generate(vs("secure", "istio-system", "[secure.example.com]", "[redirect]"))
    vhost = vhosts(with_vs["http.80"])["secure.example.com:80"]
    assert vhost.require_tls == rc.VirtualHost.ALL and len(vhost.routes) == 1


def test_routes_of_several_virtual_services_for_one_host_concatenate_catch_all_last() -> None:
    first = vs("a", "shop", "[www.example.com]", "[istio-system/public]")
    second = vs("b", "shop", "[www.example.com]", "[istio-system/public]", """\
  - match: [{uri: {prefix: /b}}]
    route: [{destination: {host: web.shop.svc.cluster.local, subset: b}}]
""")
    vhost = vhosts(generate(first + second)["http.80"])["www.example.com:80"]
    assert [r.match.prefix for r in vhost.routes] == ["/b", "/"]


def test_hosts_with_identical_routes_share_a_virtual_host() -> None:
    both = vs("web", "shop", "[a.example.com, b.example.com]", "[istio-system/public]")
    config = generate(both)["http.80"]
    assert [(v.name, list(v.domains)) for v in config.virtual_hosts] == [
        ("a.example.com:80", ["a.example.com", "b.example.com"]),
        ("secure.example.com:80", ["secure.example.com"]),
    ]


def test_match_gateways_and_port_are_decided_per_server() -> None:
    http = """\
  - match: [{gateways: [istio-system/redirect], uri: {prefix: /other-gw}}]
    route: [{destination: {host: web.shop.svc.cluster.local}}]
  - match: [{port: 443, uri: {prefix: /tls-only}}]
    route: [{destination: {host: web.shop.svc.cluster.local}}]
  - match: [{gateways: [public], uri: {prefix: /mine}}]
    route: [{destination: {host: web.shop.svc.cluster.local}}]
"""
    configs = generate(vs("web", "istio-system", "[shop.example.com]", "[public]", http))
    https = vhosts(configs["https.443.https-shop.public.istio-system"])["shop.example.com:443"]
    assert [r.match.prefix for r in https.routes] == ["/tls-only", "/mine"]


def test_virtual_services_bound_to_mesh_only_are_ignored() -> None:
    configs = generate(vs("web", "shop", "[www.example.com]", "[mesh]"))
    assert [v.name for v in configs["http.80"].virtual_hosts] == ["secure.example.com:80"]


def test_intersection_keeps_the_narrower_name() -> None:
    assert intersect(["*.example.com"], ["a.example.com", "b.other.com"]) == ["a.example.com"]
    assert intersect(["a.example.com"], ["*.example.com"]) == ["a.example.com"]
    assert intersect(["*"], ["*.example.com"]) == ["*.example.com"]
    assert intersect(["*.a.example.com"], ["*.example.com"]) == ["*.a.example.com"]
    assert intersect(["x.com"], ["y.com"]) == []
