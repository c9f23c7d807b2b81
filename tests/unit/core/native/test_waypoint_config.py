"""The native proxy takes the waypoint kind's xDS as discovery sends it (the generators'
real output, no native-only variant) and reads from it what its internal hops need: the
internal listeners, the internal endpoints with the metadata their clusters pass through,
the filter state each hop sets and the RBAC matches on it. Unsupported variations are
still NACKed by name. Sans-IO: no sockets."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.set_filter_state.v3 import (
    set_filter_state_pb2 as network_state_pb2,
)
from envoy.extensions.transport_sockets.internal_upstream.v3 import (
    internal_upstream_pb2 as internal_pb2,
)

from pilotfish.core.native import filter_state, http_filters, rbac
from pilotfish.core.native.config import (
    ConfigState,
    DirectResponse,
    HttpManager,
    Rejected,
    TcpProxy,
)
from pilotfish.core.xds import types
from pilotfish.translators.ambient.waypoint_clusters import WaypointClusters
from pilotfish.translators.ambient.waypoint_endpoints import WaypointEndpoints
from pilotfish.translators.ambient.waypoint_listeners import WaypointListeners
from pilotfish.translators.ambient.waypoint_routes import WaypointRoutes
from pilotfish.translators.common import pack
from tests.unit.translators.ambient.test_waypoint import HOST, _proxy, _push

V1 = f"inbound-vip|9080|http/v1|{HOST}"
CLIENT = "spiffe://cluster.local/ns/shop/sa/productpage"
GENERATORS: dict[str, Any] = {
    types.CLUSTER: WaypointClusters(), types.ENDPOINT: WaypointEndpoints(),
    types.ROUTE: WaypointRoutes(), types.LISTENER: WaypointListeners()}


def generate(type_url: str) -> list[Any]:
    """What discovery sends the waypoint kind: its generators' own output."""
    return list(GENERATORS[type_url].generate(_push(), _proxy(), {}))


@pytest.fixture(scope="module")
def state() -> ConfigState:
    found = ConfigState()
    for type_url in (types.CLUSTER, types.ENDPOINT, types.ROUTE, types.LISTENER):
        messages = generate(type_url)
        found.apply(type_url, [(getattr(m, "cluster_name", "") or m.name,
                                m.SerializeToString()) for m in messages], [])
    return found


def _messages(type_url: str) -> dict[str, Any]:
    return {getattr(m, "cluster_name", "") or m.name: m
            for m in generate(type_url)}


def test_the_internal_listeners_bind_nothing(state: ConfigState) -> None:
    terminate = state.listeners["connect_terminate"]
    assert terminate.bind and not terminate.internal and terminate.port == 15008
    for name in ("main_internal", "connect_originate"):
        assert state.listeners[name].internal and not state.listeners[name].bind


def test_connect_terminate_notes_the_tunnel_for_the_internal_hop(state: ConfigState) -> None:
    (chain,) = state.listeners["connect_terminate"].chains
    assert isinstance(chain.network, HttpManager) and chain.network.connect
    found: dict[str, filter_state.Value] = {}
    filter_state.apply_all(chain.network.state, found, filter_state.Context(
        headers={":authority": "10.96.0.20:9080"}, remote="10.0.0.7:40000",
        peer_uri=CLIENT, local_uri="spiffe://cluster.local/ns/shop/sa/waypoint"))
    assert {k: v.value for k, v in found.items()} == {
        filter_state.LOCAL_IP: "10.96.0.20:9080", filter_state.REMOTE_IP: "10.0.0.7:40000",
        "io.istio.peer_principal": CLIENT,
        "io.istio.local_principal": "spiffe://cluster.local/ns/shop/sa/waypoint"}
    # shared once: main_internal gets them, its own upstreams do not
    arrived = filter_state.upstream_share(found)
    assert filter_state.restored(arrived, {}) == (("10.96.0.20", 9080), ("10.0.0.7", 40000))
    assert filter_state.upstream_share(arrived) == {}


def test_main_internal_refuses_what_no_service_takes(state: ConfigState) -> None:
    listener = state.listeners["main_internal"]
    chain = listener.chain(9080, destination_ip="10.96.0.20")
    assert chain is not None and isinstance(chain.network, HttpManager)
    assert chain.network.route_name == f"inbound-vip|9080|http|{HOST}"
    tcp = listener.chain(5432, destination_ip="10.96.0.20")
    assert tcp is not None and isinstance(tcp.network, TcpProxy)
    other = listener.chain(9080, destination_ip="10.96.0.99")
    assert other is not None and isinstance(other.network, DirectResponse)


def test_the_deny_reads_the_clients_identity_from_the_filter_state(
        state: ConfigState) -> None:
    chain = state.listeners["main_internal"].chain(9080, destination_ip="10.96.0.20")
    assert chain is not None and isinstance(chain.network, HttpManager)
    (guard,) = [f for f in chain.network.filters if isinstance(f, http_filters.Rbac)]
    intruder = "spiffe://cluster.local/ns/shop/sa/intruder"

    def allowed(principal: str, path: str) -> bool:
        facts = rbac.Facts(headers={":path": path}, path=path,
                           filter_state={"io.istio.peer_principal": principal})
        return guard.rules.decide(facts)[0]

    assert not allowed(intruder, "/admin/x")
    assert allowed(CLIENT, "/admin/x") and allowed(intruder, "/public")


def test_vip_endpoints_reach_connect_originate_with_the_pods_address_and_identity(
        state: ConfigState) -> None:
    cluster = state.clusters[V1]
    assert cluster.passthrough == ("envoy.filters.listener.original_dst", "tunnel")
    (endpoint,) = state.endpoints_of(cluster)
    assert (endpoint.internal, endpoint.host, endpoint.port) == (
        "connect_originate", "10.0.0.11", 8080)
    metadata = {(n, k): v for n, k, v in endpoint.metadata}
    assert metadata[("envoy.filters.listener.original_dst", "local")] == "10.0.0.11:8080"
    assert metadata[("tunnel", "identity")] == "spiffe://cluster.local/ns/shop/sa/reviews"
    originate = state.clusters["connect_originate"]
    assert originate.kind == "ORIGINAL_DST" and originate.port_override == 15008
    assert originate.protocol == "h2" and originate.tls is not None
    assert originate.tls.alpn == ("h2",)


def test_connect_originate_asks_for_the_pods_identity_and_tunnels_to_it(
        state: ConfigState) -> None:
    (chain,) = state.listeners["connect_originate"].chains
    assert isinstance(chain.network, TcpProxy) and chain.network.tunnel_render is not None
    pod = {"tunnel": {"identity": "spiffe://cluster.local/ns/shop/sa/reviews"}}
    found: dict[str, filter_state.Value] = {}
    context = filter_state.Context(local="10.0.0.11:8080", metadata=pod)
    filter_state.apply_all(chain.state, found, context)
    assert filter_state.shared_value(found, filter_state.UPSTREAM_SANS) == \
        "spiffe://cluster.local/ns/shop/sa/reviews"
    assert chain.network.tunnel_render(context) == "10.0.0.11:8080"
    # no identity in the metadata (traffic through encap): what came along is kept
    kept = {filter_state.UPSTREAM_SANS: filter_state.Value("spiffe://x", filter_state.ONCE)}
    filter_state.apply_all(chain.state, kept, filter_state.Context())
    assert kept[filter_state.UPSTREAM_SANS].value == "spiffe://x"


def test_an_unknown_format_operator_is_nacked_by_name() -> None:
    listeners = _messages(types.LISTENER)
    originate: listener_pb2.Listener = listeners["connect_originate"]
    setter = originate.filter_chains[0].filters[0]
    config = network_state_pb2.Config()
    setter.typed_config.Unpack(config)
    config.on_new_connection[0].format_string.text_format_source.inline_string = \
        "%UPSTREAM_HOST%"
    setter.typed_config.CopyFrom(pack(config))
    with pytest.raises(Rejected) as caught:
        ConfigState().apply(types.LISTENER, [("connect_originate",
                                              originate.SerializeToString())], [])
    text = str(caught.value)
    assert text.startswith(f"{types.LISTENER} connect_originate: ")
    assert "filter_chains[0].filters[0].typed_config.on_new_connection[0].format_string" in text
    assert "%UPSTREAM_HOST%" in text


def test_passing_other_metadata_than_the_hosts_is_nacked_by_name() -> None:
    clusters = _messages(types.CLUSTER)
    cluster: cluster_pb2.Cluster = clusters[V1]
    transport = internal_pb2.InternalUpstreamTransport()
    cluster.transport_socket.typed_config.Unpack(transport)
    transport.passthrough_metadata[0].kind.ClearField("host")
    transport.passthrough_metadata[0].kind.cluster.SetInParent()
    cluster.transport_socket.typed_config.CopyFrom(pack(transport))
    with pytest.raises(Rejected) as caught:
        ConfigState().apply(types.CLUSTER, [(V1, cluster.SerializeToString())], [])
    assert f"{types.CLUSTER} {V1}: transport_socket.typed_config.passthrough_metadata[0]" \
        f".kind" in str(caught.value)
