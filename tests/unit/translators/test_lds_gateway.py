"""Gateway (router) listeners: servers merged by port, TLS per server, L4 routes."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.proxy import Proxy, parse_node
from pilotfish.core.xds import types
from pilotfish.core.yamlload import load_text
from pilotfish.testing.generators import generate as generated

SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80}, {name: https, port: 443}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: tcp-db, port: 5432}]
"""

GATEWAY_NODE = "router~10.0.0.9~gw-1.istio-system~istio-system.svc.cluster.local"


def gateway(servers: str, name: str = "public", namespace: str = "istio-system") -> str:
    return f"""\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
{servers}"""


def generate(config: str, proxy: Proxy | None = None) -> dict[str, listener_pb2.Listener]:
    objects, errors = load_text(SERVICES + config, "test.yaml")
    assert not errors
    push = push_context.build(objects, MeshSettings(), "v1")
    proxy = proxy or parse_node(GATEWAY_NODE, {"LABELS": {"istio": "ingressgateway"}})
    return {item.name: item for item in generated(types.LISTENER, push, proxy, {})}


def unpack(chain: listener_components_pb2.FilterChain, message: Any) -> Any:
    (only,) = chain.filters
    assert only.typed_config.Unpack(message), only.typed_config.type_url
    return message


def rds(chain: listener_components_pb2.FilterChain) -> str:
    manager = unpack(chain, hcm_pb2.HttpConnectionManager())
    assert manager.use_remote_address.value is True  # the gateway is the edge
    return str(manager.rds.route_config_name)


def tls_context(chain: listener_components_pb2.FilterChain) -> tls_pb2.DownstreamTlsContext:
    assert chain.transport_socket.name == "envoy.transport_sockets.tls"
    context = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.typed_config.Unpack(context)
    return context


def tcp_target(chain: listener_components_pb2.FilterChain) -> str:
    proxy = unpack(chain, tcp_proxy_pb2.TcpProxy())
    weighted = proxy.weighted_clusters.clusters
    return proxy.cluster or ",".join(f"{c.name}={c.weight}" for c in weighted)


def test_http_servers_on_one_port_merge_into_one_bound_listener() -> None:
    found = generate(gateway("""\
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["shop/web.example.com"]
  - port: {number: 8080, name: http-api, protocol: HTTP2}
    hosts: ["api.example.com"]
"""))
    assert list(found) == ["0.0.0.0_8080"]
    out = found["0.0.0.0_8080"]
    assert (out.address.socket_address.address, out.address.socket_address.port_value) == (
        "0.0.0.0", 8080)
    assert not out.HasField("bind_to_port")  # Envoy's default: bound
    (chain,) = out.filter_chains
    assert not chain.HasField("filter_chain_match")
    assert rds(chain) == "http.8080"
    manager = unpack(chain, hcm_pb2.HttpConnectionManager())
    assert [f.name for f in manager.http_filters] == [
        "envoy.filters.http.fault", "envoy.filters.http.cors", "envoy.filters.http.router"]
    assert [log.name for log in manager.access_log] == ["envoy.access_loggers.http_grpc"]
    assert not out.listener_filters


def test_https_redirect_servers_are_plain_http() -> None:
    found = generate(gateway("""\
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
    tls: {httpsRedirect: true}
  - port: {number: 8081, name: https-redirect, protocol: HTTPS}
    hosts: ["*"]
    tls: {httpsRedirect: true}
"""))
    assert rds(found["0.0.0.0_80"].filter_chains[0]) == "http.80"
    assert rds(found["0.0.0.0_8081"].filter_chains[0]) == "http.8081"


def test_simple_tls_with_a_credential_name_uses_sds_over_ads() -> None:
    out = generate(gateway("""\
  - port: {number: 443, name: https-web, protocol: HTTPS}
    hosts: ["shop/web.example.com", "./www.example.com"]
    tls: {mode: SIMPLE, credentialName: web-cert, minProtocolVersion: TLSV1_3}
"""))["0.0.0.0_443"]
    assert [f.name for f in out.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    (chain,) = out.filter_chains
    assert list(chain.filter_chain_match.server_names) == ["web.example.com", "www.example.com"]
    assert rds(chain) == "https.443.https-web.public.istio-system"
    context = tls_context(chain)
    common = context.common_tls_context
    (secret,) = common.tls_certificate_sds_secret_configs
    assert secret.name == "kubernetes://web-cert"
    assert secret.sds_config.HasField("ads")
    assert list(common.alpn_protocols) == ["h2", "http/1.1"]
    assert common.tls_params.tls_minimum_protocol_version == common.tls_params.TLSv1_3
    assert not common.HasField("combined_validation_context")
    assert context.require_client_certificate.value is False


@pytest.mark.parametrize(("mode", "required"), [("MUTUAL", True), ("OPTIONAL_MUTUAL", False)])
def test_mutual_tls_validates_clients_with_the_cacert_secret(mode: str, required: bool) -> None:
    out = generate(gateway(f"""\
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: ["web.example.com"]
    tls: {{mode: {mode}, credentialName: web-cert, subjectAltNames: [client.example.com]}}
"""))["0.0.0.0_443"]
    context = tls_context(out.filter_chains[0])
    combined = context.common_tls_context.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "kubernetes://web-cert-cacert"
    (san,) = combined.default_validation_context.match_typed_subject_alt_names
    assert san.matcher.exact == "client.example.com"
    assert context.require_client_certificate.value is required


def test_file_certificates_come_from_the_agents_sds_as_istio_names_them() -> None:
    out = generate(gateway("""\
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["web.example.com"]
    tls:
      mode: MUTUAL
      serverCertificate: /etc/gw/cert.pem
      privateKey: /etc/gw/key.pem
      caCertificates: /etc/gw/ca.pem
"""))["0.0.0.0_443"]
    common = tls_context(out.filter_chains[0]).common_tls_context
    (certificate,) = common.tls_certificate_sds_secret_configs
    assert certificate.name == "file-cert:/etc/gw/cert.pem~/etc/gw/key.pem"
    combined = common.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "file-root:/etc/gw/ca.pem"
    for config in (certificate, combined.validation_context_sds_secret_config):
        assert config.sds_config.api_config_source.grpc_services[0].envoy_grpc.cluster_name \
            == "sds-grpc"


def test_istio_mutual_uses_the_agents_workload_certificate_and_root() -> None:
    out = generate(gateway("""\
  - port: {number: 15443, name: tls-mesh, protocol: HTTPS}
    hosts: ["*.shop.svc.cluster.local"]
    tls: {mode: ISTIO_MUTUAL}
"""))["0.0.0.0_15443"]
    context = tls_context(out.filter_chains[0])
    common = context.common_tls_context
    (secret,) = common.tls_certificate_sds_secret_configs
    root = common.combined_validation_context.validation_context_sds_secret_config
    assert (secret.name, root.name) == ("default", "ROOTCA")
    for config in (secret, root):
        source = config.sds_config.api_config_source
        assert source.grpc_services[0].envoy_grpc.cluster_name == "sds-grpc"
    assert context.require_client_certificate.value is True


def test_tls_server_without_certificates_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    found = generate(gateway("""\
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["web.example.com"]
    tls: {mode: SIMPLE}
"""))
    assert found == {}
    assert "needs tls.credentialName" in caplog.text


def test_passthrough_routes_sni_from_tls_routes_bound_to_the_gateway() -> None:
    config = gateway("""\
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["*.example.com"]
    tls: {mode: PASSTHROUGH}
""") + """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web.example.com, other.org]
  gateways: [istio-system/public]
  tls:
  - match: [{sniHosts: [web.example.com, other.org]}]
    route: [{destination: {host: web, port: {number: 443}}}]
  - match: [{sniHosts: [db.example.com], port: 8443}]
    route: [{destination: {host: db}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: unbound, namespace: shop}
spec:
  hosts: [x.example.com]
  tls:
  - match: [{sniHosts: [x.example.com]}]
    route: [{destination: {host: web}}]
"""
    (chain,) = generate(config)["0.0.0.0_443"].filter_chains
    # other.org is not a host of the server; the 8443 match is for another port.
    assert list(chain.filter_chain_match.server_names) == ["web.example.com"]
    assert not chain.HasField("transport_socket")
    assert tcp_target(chain) == "outbound|443||web.shop.svc.cluster.local"


def test_auto_passthrough_picks_the_cluster_the_sni_names() -> None:
    config = gateway("""\
  - port: {number: 15443, name: tls, protocol: TLS}
    hosts: ["*.local"]
    tls: {mode: AUTO_PASSTHROUGH}
""") + """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}, loadBalancer: {simple: RANDOM}}
  subsets: [{name: v1, labels: {version: v1}}]
"""
    (chain,) = generate(config)["0.0.0.0_15443"].filter_chains
    assert list(chain.filter_chain_match.server_names) == ["*.local"]
    assert chain.filter_chain_match.transport_protocol == "tls"
    assert [f.name for f in chain.filters] == ["envoy.filters.network.sni_cluster",
                                               "envoy.filters.network.tcp_proxy"]
    assert not chain.HasField("transport_socket")
    objects, _ = load_text(SERVICES + config, "test.yaml")
    push = push_context.build(objects, MeshSettings(), "v1")
    router = parse_node(GATEWAY_NODE, {"LABELS": {"istio": "ingressgateway"}})
    clusters = {c.name: c for c in generated(types.CLUSTER, push, router, {})}
    twin = clusters["outbound_.80_.v1_.web.shop.svc.cluster.local"]
    original = clusters["outbound|80|v1|web.shop.svc.cluster.local"]
    # Same endpoints and policy; the client's own TLS passes through, so none here.
    assert twin.eds_cluster_config.service_name == original.name
    assert twin.lb_policy == original.lb_policy == twin.RANDOM
    assert original.HasField("transport_socket") and not twin.HasField("transport_socket")
    assert "outbound_.5432_._.db.shop.svc.cluster.local" in clusters
    # A router without such a server has no SNI names among its clusters.
    plain = gateway("""\
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
""")
    objects, _ = load_text(SERVICES + plain, "test.yaml")
    push = push_context.build(objects, MeshSettings(), "v1")
    assert not [c for c in generated(types.CLUSTER, push, router, {})
                if c.name.startswith("outbound_.")]


def test_https_and_passthrough_servers_share_a_port_by_sni() -> None:
    config = gateway("""\
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["web.example.com"]
    tls: {mode: SIMPLE, credentialName: web-cert}
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["db.example.com"]
    tls: {mode: PASSTHROUGH}
""") + """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: shop}
spec:
  hosts: [db.example.com]
  gateways: [istio-system/public]
  tls:
  - match: [{sniHosts: [db.example.com]}]
    route: [{destination: {host: db}}]
"""
    chains = generate(config)["0.0.0.0_443"].filter_chains
    assert [list(c.filter_chain_match.server_names) for c in chains] == [
        ["web.example.com"], ["db.example.com"]]
    assert tcp_target(chains[1]) == "outbound|5432||db.shop.svc.cluster.local"


def test_tcp_server_proxies_to_the_tcp_route() -> None:
    config = gateway("""\
  - port: {number: 5432, name: tcp, protocol: TCP}
    hosts: ["*"]
""") + """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [istio-system/public]
  tcp:
  - match: [{port: 5432}]
    route:
    - {destination: {host: db}, weight: 75}
    - {destination: {host: db, subset: canary}, weight: 25}
"""
    (chain,) = generate(config)["0.0.0.0_5432"].filter_chains
    assert tcp_target(chain) == (
        "outbound|5432||db.shop.svc.cluster.local=75,"
        "outbound|5432|canary|db.shop.svc.cluster.local=25"
    )


def test_terminated_tls_server_forwards_decrypted_bytes_by_tcp_route() -> None:
    config = gateway("""\
  - port: {number: 5433, name: tls-db, protocol: TLS}
    hosts: ["db.example.com"]
    tls: {mode: SIMPLE, credentialName: db-cert}
""") + """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: shop}
spec:
  hosts: [db.example.com]
  gateways: [istio-system/public]
  tcp:
  - route: [{destination: {host: db, port: {number: 5432}}}]
"""
    (chain,) = generate(config)["0.0.0.0_5433"].filter_chains
    assert list(chain.filter_chain_match.server_names) == ["db.example.com"]
    assert not tls_context(chain).common_tls_context.alpn_protocols  # not HTTP
    assert tcp_target(chain) == "outbound|5432||db.shop.svc.cluster.local"


def test_conflicting_protocols_keep_the_first_server(caplog: pytest.LogCaptureFixture) -> None:
    found = generate(gateway("""\
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 8080, name: tcp, protocol: TCP}
    hosts: ["*"]
"""))
    (chain,) = found["0.0.0.0_8080"].filter_chains
    assert rds(chain) == "http.8080"
    assert "server 1 (port 8080): TCP conflicts with the HTTP server(s)" in caplog.text


def test_two_catch_all_tls_servers_keep_the_first(caplog: pytest.LogCaptureFixture) -> None:
    chains = generate(gateway("""\
  - port: {number: 443, name: https-a, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: a}
  - port: {number: 443, name: https-b, protocol: HTTPS}
    hosts: ["*/*"]
    tls: {mode: SIMPLE, credentialName: b}
"""))["0.0.0.0_443"].filter_chains
    assert [rds(c) for c in chains] == ["https.443.https-a.public.istio-system"]
    assert not chains[0].filter_chain_match.server_names
    assert "all served by earlier servers" in caplog.text


def test_servers_of_several_gateways_merge_by_port() -> None:
    config = gateway("""\
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["a.example.com"]
    tls: {mode: SIMPLE, credentialName: a}
""") + gateway("""\
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["b.example.com"]
    tls: {mode: SIMPLE, credentialName: b}
""", name="second", namespace="shop")
    chains = generate(config)["0.0.0.0_443"].filter_chains
    assert [rds(c) for c in chains] == [
        "https.443.https.public.istio-system", "https.443.https.second.shop"]


def test_bind_address_names_and_addresses_the_listener() -> None:
    out = generate(gateway("""\
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
    bind: 127.0.0.1
"""))["127.0.0.1_8080"]
    assert out.address.socket_address.address == "127.0.0.1"


def test_gateways_only_configure_the_routers_they_select() -> None:
    config = gateway("""\
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
""")
    other = parse_node(GATEWAY_NODE, {"LABELS": {"istio": "egressgateway"}})
    assert generate(config, other) == {}
    sidecar = parse_node("sidecar~10.0.0.5~web-1.shop~shop.svc.cluster.local",
                         {"LABELS": {"istio": "ingressgateway"}})
    assert not any(name.endswith("_8080") for name in generate(config, sidecar))


def test_tunnel_settings_of_the_one_destination_go_on_its_tcp_proxy() -> None:
    def tunneling(route: str) -> tuple[str, bool] | None:
        config = gateway("""\
  - port: {number: 5432, name: tcp, protocol: TCP}
    hosts: ["*"]
""") + f"""\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: db, namespace: shop}}
spec:
  host: db
  trafficPolicy: {{tunnel: {{protocol: POST, targetHost: db.example.com, targetPort: 5432}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: shop}}
spec:
  hosts: ["*"]
  gateways: [istio-system/public]
  tcp: [{{route: {route}}}]
"""
        (chain,) = generate(config)["0.0.0.0_5432"].filter_chains
        proxy = unpack(chain, tcp_proxy_pb2.TcpProxy())
        if not proxy.HasField("tunneling_config"):
            return None
        return proxy.tunneling_config.hostname, proxy.tunneling_config.use_post

    assert tunneling("[{destination: {host: db}}]") == ("db.example.com:5432", True)
    # Split between two destinations: never tunneled (Istio's rule).
    assert tunneling("[{destination: {host: db}, weight: 50}, "
                     "{destination: {host: web, port: {number: 80}}, weight: 50}]") is None
