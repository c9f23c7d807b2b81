"""Each EnvoyFilter operation on each kind of object, and each match field, on what the
generators make for a sidecar and a router (Istio's semantics, pilot's envoyfilter)."""

from __future__ import annotations

import pytest
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from pilotfish.core.xds import types
from tests.unit.plugins.envoy_filter_mesh import (
    HTTP_ROUTER,
    build,
    by_name,
    envoy_filter_yaml,
    http_filters,
    manager,
    patched,
    router,
    sidecar,
)

HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager")
TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
FAULT = "envoy.filters.http.fault"
LUA = """\
name: envoy.filters.http.lua
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
  default_source_code: {inline_string: "function envoy_on_request(h) end"}"""


def http_filter_patch(operation: str, sub_filter: str = "", context: str = "GATEWAY",
                      name: str = "envoy.filters.http.lua") -> str:
    sub = f", subFilter: {{name: {sub_filter}}}" if sub_filter else ""
    value = LUA.replace("envoy.filters.http.lua", name)
    value = "\n".join("      " + line for line in value.splitlines())
    return f"""\
- applyTo: HTTP_FILTER
  match:
    context: {context}
    listener: {{filterChain: {{filter: {{name: {HCM}{sub}}}}}}}
  patch:
    operation: {operation}
    value:
{value}
"""


def gateway_http_filters(*patches: str) -> list[str]:
    push = build(envoy_filter_yaml("f", "".join(patches)))
    listener = by_name(patched(types.LISTENER, push, router()))["0.0.0.0_8080"]
    return http_filters(listener.filter_chains[0])


GENERATED = ["envoy.filters.http.fault", "envoy.filters.http.cors", HTTP_ROUTER]


# -- HTTP filters ----------------------------------------------------------------------------

@pytest.mark.parametrize(("operation", "sub_filter", "expected"), [
    ("INSERT_BEFORE", HTTP_ROUTER, ["envoy.filters.http.fault", "envoy.filters.http.cors",
                                    "lua", HTTP_ROUTER]),
    ("INSERT_AFTER", "envoy.filters.http.fault", ["envoy.filters.http.fault", "lua",
                                                  "envoy.filters.http.cors", HTTP_ROUTER]),
    ("INSERT_FIRST", HTTP_ROUTER, ["lua", *GENERATED]),
    ("INSERT_BEFORE", "", ["lua", *GENERATED]),  # no filter named: first
    ("INSERT_AFTER", "", [*GENERATED, "lua"]),  # no filter named: last
    ("ADD", "", [*GENERATED, "lua"]),
    ("INSERT_BEFORE", "envoy.filters.http.absent", GENERATED),  # named but absent: nothing
])
def test_http_filter_insertions(operation: str, sub_filter: str, expected: list[str]):
    found = gateway_http_filters(http_filter_patch(operation, sub_filter))
    assert [n.replace("envoy.filters.http.lua", "lua") for n in found] == expected


def test_http_filter_patches_naming_another_network_filter_do_nothing():
    patch = http_filter_patch("ADD").replace(HCM, "envoy.filters.network.tcp_proxy")
    assert gateway_http_filters(patch) == GENERATED


def test_http_filter_replace_and_remove_need_a_named_filter():
    assert gateway_http_filters(http_filter_patch("REPLACE", "envoy.filters.http.cors")) == [
        "envoy.filters.http.fault", "envoy.filters.http.lua", HTTP_ROUTER]
    assert gateway_http_filters(http_filter_patch("REPLACE")) == GENERATED
    remove = f"""\
- applyTo: HTTP_FILTER
  match:
    listener: {{filterChain: {{filter: {{name: {HCM}, subFilter: {{name: {FAULT}}}}}}}}}
  patch: {{operation: REMOVE}}
"""
    assert gateway_http_filters(remove) == ["envoy.filters.http.cors", HTTP_ROUTER]


def test_http_filter_merge_merges_the_typed_config():
    merge = f"""\
- applyTo: HTTP_FILTER
  match:
    listener: {{filterChain: {{filter: {{name: {HCM}, subFilter: {{name: {HTTP_ROUTER}}}}}}}}}
  patch:
    operation: MERGE
    value:
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
        suppress_envoy_headers: true
"""
    push = build(envoy_filter_yaml("f", merge))
    listener = by_name(patched(types.LISTENER, push, router()))["0.0.0.0_8080"]
    (found,) = [f for f in manager(listener.filter_chains[0]).http_filters
                if f.name == HTTP_ROUTER]
    config = router_pb2.Router()
    assert found.typed_config.Unpack(config) and config.suppress_envoy_headers


# -- network filters ---------------------------------------------------------------------------

RBAC_FILTER = """\
name: envoy.filters.network.rbac
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
  stat_prefix: tcp"""


def network_patch(operation: str, filter_name: str = "", port: int = 5432) -> str:
    found = f", filterChain: {{filter: {{name: {filter_name}}}}}" if filter_name else ""
    value = "\n".join("      " + line for line in RBAC_FILTER.splitlines())
    return f"""\
- applyTo: NETWORK_FILTER
  match: {{context: SIDECAR_OUTBOUND, listener: {{portNumber: {port}{found}}}}}
  patch:
    operation: {operation}
    value:
{value}
"""


def db_filters(*patches: str) -> list[str]:
    push = build(envoy_filter_yaml("f", "".join(patches)))
    listener = by_name(patched(types.LISTENER, push, sidecar()))["10.96.0.20_5432"]
    return [f.name for f in listener.filter_chains[0].filters]


TCP = "envoy.filters.network.tcp_proxy"
NET_RBAC = "envoy.filters.network.rbac"


@pytest.mark.parametrize(("operation", "filter_name", "expected"), [
    ("INSERT_BEFORE", TCP, [NET_RBAC, TCP]),
    ("INSERT_AFTER", TCP, [TCP, NET_RBAC]),
    ("INSERT_FIRST", "", [NET_RBAC, TCP]),
    ("ADD", "", [TCP, NET_RBAC]),
    ("REPLACE", TCP, [NET_RBAC]),
    ("REMOVE", TCP, []),
])
def test_network_filter_operations(operation: str, filter_name: str, expected: list[str]):
    assert db_filters(network_patch(operation, filter_name)) == expected


def test_network_filter_port_match_leaves_other_listeners_alone():
    push = build(envoy_filter_yaml("f", network_patch("INSERT_FIRST", port=5432)))
    listeners = by_name(patched(types.LISTENER, push, sidecar()))
    assert [f.name for f in listeners["0.0.0.0_80"].filter_chains[0].filters] == [HCM]


def test_network_filter_merge_of_the_http_connection_manager():
    merge = f"""\
- applyTo: NETWORK_FILTER
  match: {{context: GATEWAY, listener: {{filterChain: {{filter: {{name: {HCM}}}}}}}}}
  patch:
    operation: MERGE
    value:
      typed_config:
        "@type": {HCM_TYPE}
        xff_num_trusted_hops: 5
        common_http_protocol_options: {{idle_timeout: 30s}}
"""
    push = build(envoy_filter_yaml("f", merge))
    for listener in patched(types.LISTENER, push, router()):
        config = manager(listener.filter_chains[0])
        assert config.xff_num_trusted_hops == 5
        assert config.common_http_protocol_options.idle_timeout.seconds == 30
        assert config.stat_prefix  # merged into, not replaced
        assert [f.name for f in config.http_filters][-1] == HTTP_ROUTER


# -- filter chains and listeners -------------------------------------------------------------

def test_filter_chain_matches_and_remove():
    def remaining(chain_match: str) -> list[str]:
        patch = f"""\
- applyTo: FILTER_CHAIN
  match: {{context: SIDECAR_INBOUND, listener: {{filterChain: {chain_match}}}}}
  patch: {{operation: REMOVE}}
"""
        push = build(envoy_filter_yaml("f", patch))
        inbound = by_name(patched(types.LISTENER, push, sidecar()))["virtualInbound"]
        return [f"{c.name}/{c.filter_chain_match.transport_protocol}"
                for c in inbound.filter_chains]

    everything = ["virtualInbound-blackhole/", "0.0.0.0_8080/",
                  "virtualInbound-catchall-http/raw_buffer", "virtualInbound/raw_buffer",
                  "virtualInbound/tls"]
    assert remaining("{name: virtualInbound}") == everything[:3]
    assert remaining("{transportProtocol: tls}") == everything[:4]
    assert remaining("{applicationProtocols: 'http/1.1,h2c'}") == [
        everything[i] for i in (0, 1, 3, 4)]
    assert remaining("{applicationProtocols: 'http/1.1,h3'}") == everything
    assert remaining("{destinationPort: 8080}") == [everything[i] for i in (0, 2, 3, 4)]
    assert remaining("{sni: web.example.com}") == everything  # no chain matches on SNI


def test_virtual_inbound_port_number_is_matched_per_chain():
    patch = """\
- applyTo: NETWORK_FILTER
  match:
    context: SIDECAR_INBOUND
    listener:
      portNumber: 8080
      filterChain: {filter: {name: envoy.filters.network.http_connection_manager}}
  patch: {operation: REMOVE}
"""
    push = build(envoy_filter_yaml("f", patch))
    inbound = by_name(patched(types.LISTENER, push, sidecar()))["virtualInbound"]
    filters = {c.name: [f.name for f in c.filters] for c in inbound.filter_chains}
    assert filters["0.0.0.0_8080"] == []
    assert filters["virtualInbound-catchall-http"] == [HCM]


def test_filter_chain_merge_of_a_transport_socket_merges_its_tls_context():
    patch = f"""\
- applyTo: FILTER_CHAIN
  match: {{context: GATEWAY, listener: {{portNumber: 8443}}}}
  patch:
    operation: MERGE
    value:
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": {TLS}.DownstreamTlsContext
          require_client_certificate: true
"""
    push = build(envoy_filter_yaml("f", patch))
    chain = by_name(patched(types.LISTENER, push, router()))["0.0.0.0_8443"].filter_chains[0]
    context = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.typed_config.Unpack(context)
    assert context.require_client_certificate.value
    assert context.common_tls_context.tls_certificate_sds_secret_configs  # kept


def test_filter_chain_add_goes_to_each_matching_listener():
    patch = """\
- applyTo: FILTER_CHAIN
  match: {context: GATEWAY, listener: {portNumber: 8080}}
  patch:
    operation: ADD
    value:
      name: extra
      filter_chain_match: {server_names: [extra.example.com]}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: extra
          cluster: BlackHoleCluster
"""
    push = build(envoy_filter_yaml("f", patch))
    listeners = by_name(patched(types.LISTENER, push, router()))
    assert [c.name for c in listeners["0.0.0.0_8080"].filter_chains] == ["http.8080", "extra"]
    assert len(listeners["0.0.0.0_8443"].filter_chains) == 1


def test_listener_merge_remove_and_add():
    patches = """\
- applyTo: LISTENER
  match: {context: SIDECAR_OUTBOUND, listener: {portNumber: 80}}
  patch: {operation: MERGE, value: {per_connection_buffer_limit_bytes: 4096}}
- applyTo: LISTENER
  match: {listener: {name: 10.96.0.20_5432}}
  patch: {operation: REMOVE}
- applyTo: LISTENER
  patch:
    operation: ADD
    value:
      name: extra
      address: {socket_address: {address: 127.0.0.1, port_value: 9999}}
      filter_chains:
      - filters:
        - name: envoy.filters.network.tcp_proxy
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
            stat_prefix: extra
            cluster: BlackHoleCluster
"""
    push = build(envoy_filter_yaml("f", patches))
    listeners = patched(types.LISTENER, push, sidecar())
    names = [listener.name for listener in listeners]
    # ADD without a context: once, with the outbound listeners (not again for inbound).
    assert names == ["virtualOutbound", "virtualInbound", "0.0.0.0_80", "extra"]
    assert by_name(listeners)["0.0.0.0_80"].per_connection_buffer_limit_bytes.value == 4096
    # The port is the listener's own: the virtual listeners are not matched by it.
    assert not by_name(listeners)["virtualOutbound"].HasField(
        "per_connection_buffer_limit_bytes")


def test_listener_filters_add_and_remove():
    patches = """\
- applyTo: LISTENER_FILTER
  match:
    context: SIDECAR_INBOUND
    listener: {listenerFilter: envoy.filters.listener.http_inspector}
  patch: {operation: REMOVE}
- applyTo: LISTENER_FILTER
  match: {context: SIDECAR_INBOUND, listener: {listenerFilter: envoy.filters.listener.original_dst}}
  patch:
    operation: INSERT_AFTER
    value:
      name: envoy.filters.listener.proxy_protocol
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.\
ProxyProtocol
"""
    push = build(envoy_filter_yaml("f", patches))
    inbound = by_name(patched(types.LISTENER, push, sidecar()))["virtualInbound"]
    assert [f.name for f in inbound.listener_filters] == [
        "envoy.filters.listener.original_dst", "envoy.filters.listener.proxy_protocol",
        "envoy.filters.listener.tls_inspector"]


# -- route tables, virtual hosts, routes ---------------------------------------------------

def route_tables(patches: str, proxy=None) -> dict[str, object]:
    push = build(envoy_filter_yaml("f", patches))
    return by_name(patched(types.ROUTE, push, proxy or router()))


HEADER = "{response_headers_to_add: [{header: {key: x-patched, value: '1'}}]}"


@pytest.mark.parametrize(("match", "tables"), [
    ("{portNumber: 8080}", {"http.8080"}),
    ("{portNumber: 8443}", {"https.8443.https-web.edge.shop"}),
    ("{portName: https-web}", {"https.8443.https-web.edge.shop"}),
    ("{gateway: shop/edge}", {"https.8443.https-web.edge.shop"}),
    ("{gateway: shop/other}", set()),
    ("{name: http.8080}", {"http.8080"}),
    ("{}", {"http.8080", "https.8443.https-web.edge.shop"}),
])
def test_route_configuration_merge_by_gateway_match(match: str, tables: set[str]):
    found = route_tables(f"""\
- applyTo: ROUTE_CONFIGURATION
  match: {{context: GATEWAY, routeConfiguration: {match}}}
  patch: {{operation: MERGE, value: {HEADER}}}
""")
    assert {name for name, t in found.items() if t.response_headers_to_add} == tables


def test_route_configuration_in_a_sidecar_matches_the_port_in_its_name():
    found = route_tables(f"""\
- applyTo: ROUTE_CONFIGURATION
  match: {{context: SIDECAR_OUTBOUND, routeConfiguration: {{portNumber: 80}}}}
  patch: {{operation: MERGE, value: {HEADER}}}
""", sidecar())
    assert found["80"].response_headers_to_add[0].header.key == "x-patched"


def test_inline_inbound_route_tables_are_patched_in_the_inbound_context():
    patch = f"""\
- applyTo: ROUTE_CONFIGURATION
  match: {{context: SIDECAR_INBOUND, routeConfiguration: {{portNumber: 8080}}}}
  patch: {{operation: MERGE, value: {HEADER}}}
"""
    push = build(envoy_filter_yaml("f", patch))
    inbound = by_name(patched(types.LISTENER, push, sidecar()))["virtualInbound"]
    tables = {c.name: manager(c).route_config for c in inbound.filter_chains
              if c.filters and c.filters[0].name == HCM}
    assert tables["0.0.0.0_8080"].name == "inbound|8080||"
    assert tables["0.0.0.0_8080"].response_headers_to_add[0].header.key == "x-patched"
    assert not tables["virtualInbound-catchall-http"].response_headers_to_add
    assert not by_name(patched(types.ROUTE, push, sidecar()))["80"].response_headers_to_add


def test_virtual_host_merge_remove_replace_add():
    vhost = "{routeConfiguration: {portNumber: 8080, vhost: {name: '*:8080'}}}"
    found = route_tables(f"""\
- applyTo: VIRTUAL_HOST
  match: {{context: GATEWAY, routeConfiguration: {{vhost: {{name: '*:8443'}}}}}}
  patch: {{operation: REMOVE}}
- applyTo: VIRTUAL_HOST
  match: {vhost}
  patch: {{operation: MERGE, value: {{domains: [web.example.com]}}}}
- applyTo: VIRTUAL_HOST
  match: {{routeConfiguration: {{portNumber: 8080}}}}
  patch:
    operation: ADD
    value:
      name: extra
      domains: [extra.example.com]
      routes: [{{match: {{prefix: /}}, direct_response: {{status: 204}}}}]
""")
    assert list(found["https.8443.https-web.edge.shop"].virtual_hosts) == []
    hosts = found["http.8080"].virtual_hosts
    assert [(h.name, list(h.domains)) for h in hosts] == [
        ("*:8080", ["*", "web.example.com"]), ("extra", ["extra.example.com"])]
    replaced = route_tables(f"""\
- applyTo: VIRTUAL_HOST
  match: {vhost}
  patch: {{operation: REPLACE, value: {{name: only, domains: ["*"]}}}}
""")["http.8080"]
    assert [(h.name, len(h.routes)) for h in replaced.virtual_hosts] == [("only", 0)]


@pytest.mark.parametrize(("route", "merged"), [
    ("{name: to-web}", ["to-web"]),
    ("{action: REDIRECT}", ["moved"]),
    ("{action: ROUTE}", ["to-web"]),
    ("{action: DIRECT_RESPONSE}", []),
    ("{}", ["to-web", "moved"]),
])
def test_http_route_merge_by_name_and_action(route: str, merged: list[str]):
    found = route_tables(f"""\
- applyTo: HTTP_ROUTE
  match: {{context: GATEWAY, routeConfiguration: {{portNumber: 8080, vhost: {{route: {route}}}}}}}
  patch: {{operation: MERGE, value: {{request_headers_to_remove: [x-debug]}}}}
""")
    routes = found["http.8080"].virtual_hosts[0].routes
    assert [r.name for r in routes if r.request_headers_to_remove] == merged


@pytest.mark.parametrize(("operation", "route", "order"), [
    ("INSERT_BEFORE", "{name: moved}", ["to-web", "new", "moved"]),
    ("INSERT_AFTER", "{name: to-web}", ["to-web", "new", "moved"]),
    ("INSERT_FIRST", "{name: moved}", ["new", "to-web", "moved"]),
    ("INSERT_FIRST", "{name: absent}", ["to-web", "moved"]),
    ("ADD", "{}", ["to-web", "moved", "new"]),
    ("INSERT_BEFORE", "", ["new", "to-web", "moved"]),
])
def test_http_route_insertions(operation: str, route: str, order: list[str]):
    vhost = f"{{route: {route}}}" if route else "{name: '*:8080'}"
    found = route_tables(f"""\
- applyTo: HTTP_ROUTE
  match: {{context: GATEWAY, routeConfiguration: {{portNumber: 8080, vhost: {vhost}}}}}
  patch:
    operation: {operation}
    value: {{name: new, match: {{prefix: /new}}, direct_response: {{status: 204}}}}
""")
    assert [r.name for r in found["http.8080"].virtual_hosts[0].routes] == order


def test_http_route_remove():
    found = route_tables("""\
- applyTo: HTTP_ROUTE
  match: {routeConfiguration: {vhost: {route: {name: moved}}}}
  patch: {operation: REMOVE}
""")
    for table in found.values():
        assert [r.name for r in table.virtual_hosts[0].routes] == ["to-web"]


# -- clusters ------------------------------------------------------------------------------

def clusters(patches: str, proxy=None) -> dict[str, object]:
    push = build(envoy_filter_yaml("f", patches))
    return by_name(patched(types.CLUSTER, push, proxy or sidecar()))


@pytest.mark.parametrize(("match", "names"), [
    ("{service: web.shop.svc.cluster.local}", {"outbound|80||web.shop.svc.cluster.local",
                                               "inbound|8080||"}),
    ("{portNumber: 5432}", {"outbound|5432||db.shop.svc.cluster.local"}),
    ("{name: PassthroughCluster}", {"PassthroughCluster"}),
    ("{subset: v1}", set()),
])
def test_cluster_merge_by_match(match: str, names: set[str]):
    found = clusters(f"""\
- applyTo: CLUSTER
  match: {{cluster: {match}}}
  patch: {{operation: MERGE, value: {{per_connection_buffer_limit_bytes: 1024}}}}
""")
    assert {n for n, c in found.items() if c.HasField("per_connection_buffer_limit_bytes")} == (
        names)


def test_cluster_merge_replaces_a_duration_whole_and_appends_lists():
    found = clusters("""\
- applyTo: CLUSTER
  match: {context: SIDECAR_OUTBOUND, cluster: {portNumber: 80}}
  patch:
    operation: MERGE
    value:
      connect_timeout: 2s
      typed_extension_protocol_options: {}
""")
    cluster = found["outbound|80||web.shop.svc.cluster.local"]
    assert (cluster.connect_timeout.seconds, cluster.connect_timeout.nanos) == (2, 0)


def test_cluster_merge_and_replace_list_replaces_repeated_fields():
    value = "{health_checks: [{timeout: 1s, interval: 5s, tcp_health_check: {}}]}"
    twice = f"""\
- applyTo: CLUSTER
  match: {{cluster: {{portNumber: 5432}}}}
  patch: {{operation: MERGE, value: {value}}}
- applyTo: CLUSTER
  match: {{cluster: {{portNumber: 5432}}}}
  patch: {{operation: OPERATION, value: {value}}}
"""
    name = "outbound|5432||db.shop.svc.cluster.local"
    assert len(clusters(twice.replace("OPERATION", "MERGE"))[name].health_checks) == 2
    assert len(clusters(twice.replace("OPERATION", "MERGE_AND_REPLACE_LIST"))[
        name].health_checks) == 1


def test_cluster_remove_add_and_contexts():
    found = clusters("""\
- applyTo: CLUSTER
  match: {context: SIDECAR_INBOUND}
  patch: {operation: REMOVE}
- applyTo: CLUSTER
  patch: {operation: ADD, value: {name: added-any, type: STATIC, connect_timeout: 1s}}
- applyTo: CLUSTER
  match: {context: SIDECAR_INBOUND}
  patch: {operation: ADD, value: {name: added-inbound, type: STATIC, connect_timeout: 1s}}
- applyTo: CLUSTER
  match: {context: GATEWAY}
  patch: {operation: ADD, value: {name: added-gateway, type: STATIC, connect_timeout: 1s}}
""")
    assert sorted(found) == sorted([
        "outbound|5432||db.shop.svc.cluster.local", "outbound|80||web.shop.svc.cluster.local",
        "BlackHoleCluster", "PassthroughCluster", "added-any", "added-inbound"])


def test_cluster_transport_socket_is_set_where_the_cluster_has_none():
    found = clusters("""\
- applyTo: CLUSTER
  match: {cluster: {portNumber: 5432}}
  patch:
    operation: MERGE
    value:
      connect_timeout: 3s
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: db.example.com
""")
    cluster = found["outbound|5432||db.shop.svc.cluster.local"]
    context = tls_pb2.UpstreamTlsContext()
    assert cluster.transport_socket.typed_config.Unpack(context)
    assert context.sni == "db.example.com"
    # Istio's transport socket merge is the whole merge: nothing else of the value.
    assert cluster.connect_timeout.seconds != 3


def test_unpatched_http_connection_managers_keep_their_bytes():
    push = build(envoy_filter_yaml("f", http_filter_patch("ADD", context="SIDECAR_INBOUND")))
    plain = by_name(patched(types.LISTENER, build(), router()))
    gateway = by_name(patched(types.LISTENER, push, router()))
    assert gateway["0.0.0.0_8080"] == plain["0.0.0.0_8080"]
    config = hcm_pb2.HttpConnectionManager()
    assert gateway["0.0.0.0_8080"].filter_chains[0].filters[0].typed_config.Unpack(config)
