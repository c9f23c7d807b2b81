"""The native proxy's delta ADS session, without a stream: what it ACKs, what it NACKs
(naming resource, field and type), and what it subscribes to as clusters and listeners
name endpoints and route tables."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, json_format

from pilotfish.core.native.client_session import DeltaClientSession, SotwClientSession
from pilotfish.core.native.config import ConfigState
from pilotfish.core.xds import types
from pilotfish.testing.mesh_ca import MeshCA

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." \
    "HttpConnectionManager"


def response(type_url: str, nonce: str, *messages: object) -> discovery_pb2.DeltaDiscoveryResponse:
    out = discovery_pb2.DeltaDiscoveryResponse(type_url=type_url, nonce=nonce,
                                               system_version_info="v1")
    for message in messages:
        packed = any_pb2.Any()
        packed.Pack(message)  # type: ignore[arg-type]
        out.resources.add(name=message.name, resource=packed)  # type: ignore[attr-defined]
    return out


def cluster(name: str, **extra: object) -> cluster_pb2.Cluster:
    return json_format.ParseDict({"name": name, "type": "EDS", "eds_cluster_config": {
        "service_name": name, "eds_config": {"ads": {}}}, **extra}, cluster_pb2.Cluster())


def listener(route: str) -> listener_pb2.Listener:
    return json_format.ParseDict({
        "name": "0.0.0.0_8080", "address": {"socket_address": {"address": "0.0.0.0",
                                                               "port_value": 8080}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {"@type": HCM, "stat_prefix": "p", "rds": {
                "route_config_name": route, "config_source": {"ads": {}}},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3."
                             "Router"}}]}}]}]}, listener_pb2.Listener())


def session() -> DeltaClientSession:
    return DeltaClientSession(base_pb2.Node(id="router~1.2.3.4~gw.ns~ns.svc.cluster.local"),
                              ConfigState())


def test_opening_subscribes_to_clusters_and_listeners_by_wildcard_with_the_node_once():
    opening = session().start()
    assert [r.type_url for r in opening] == [types.CLUSTER, types.LISTENER]
    assert opening[0].node.id and not opening[1].node.id
    assert not opening[0].resource_names_subscribe


def test_clusters_are_acked_and_their_endpoints_subscribed():
    s = session()
    s.start()
    out = s.receive(response(types.CLUSTER, "n1", cluster("outbound|80||web")))
    assert out[0].type_url == types.CLUSTER and out[0].response_nonce == "n1"
    assert not out[0].error_detail.message
    assert out[1].type_url == types.ENDPOINT
    assert list(out[1].resource_names_subscribe) == ["outbound|80||web"]
    assert s.ready() == "no LDS from discovery yet"


def test_listeners_subscribe_their_route_tables_and_ready_waits_for_them():
    s = session()
    s.receive(response(types.CLUSTER, "n1"))
    out = s.receive(response(types.LISTENER, "n2", listener("http.8080")))
    assert [list(r.resource_names_subscribe) for r in out[1:]] == [["http.8080"]]
    assert s.ready() == "route tables not received yet: http.8080"


def test_an_unsupported_field_is_nacked_with_its_path_and_the_last_good_state_stays():
    s = session()
    s.receive(response(types.CLUSTER, "n1", cluster("good")))
    bad = cluster("bad", health_checks=[{"timeout": "1s"}])  # active health checking
    (nack,) = s.receive(response(types.CLUSTER, "n2", bad))
    assert nack.response_nonce == "n2"
    assert nack.error_detail.message == (
        f"{types.CLUSTER} bad: health_checks: envoy.config.cluster.v3.Cluster."
        "health_checks is not supported by the native proxy")
    assert set(s.state.clusters) == {"good"}


def test_an_unknown_extension_is_nacked_naming_its_type():
    s = session()
    text = listener("r")
    text.filter_chains[0].filters[0].typed_config.type_url = \
        "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy"
    (nack,) = s.receive(response(types.LISTENER, "n1", text))
    assert "filter_chains[0].filters[0].typed_config: extension type.googleapis.com/" \
        "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy is not supported" in \
        nack.error_detail.message


def test_docs_list_the_subset_the_code_checks():
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[4]
    spec = importlib.util.spec_from_file_location("gen", root / "scripts" /
                                                  "gen_native_subset.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    text = (root / "docs" / "native.md").read_text()
    assert gen.render(text) == text, "run scripts/gen_native_subset.py"


def test_secrets_are_subscribed_as_listeners_name_them_and_acked():
    from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

    from pilotfish.core.native.client_session import SecretSession

    state = ConfigState()
    secrets = SecretSession(base_pb2.Node(id="n"), state)
    assert secrets.start() == []
    (first,) = secrets.want({"file-cert:a~b"})
    assert first.node.id == "n" and list(first.resource_names_subscribe) == ["file-cert:a~b"]
    assert secrets.want({"file-cert:a~b"}) == []
    assert secrets.ready() == "certificates not received yet: file-cert:a~b"
    broken = json_format.ParseDict({"name": "file-cert:a~b", "tls_certificate": {
        "certificate_chain": {"inline_bytes": "Y2VydA=="},
        "private_key": {"inline_bytes": "a2V5"}}}, secret_pb2.Secret())
    (nack,) = secrets.receive(response(types.SECRET, "s0", broken))
    assert nack.error_detail.message.startswith(
        f"{types.SECRET} file-cert:a~b: ValueError: the certificate chain and key do not load")
    assert secrets.ready() == "certificates not received yet: file-cert:a~b"
    issued = MeshCA().issue("a", "b")
    secret = secret_pb2.Secret(name="file-cert:a~b")
    secret.tls_certificate.certificate_chain.inline_bytes = issued.chain_pem
    secret.tls_certificate.private_key.inline_bytes = issued.key_pem
    (ack,) = secrets.receive(response(types.SECRET, "s1", secret))
    assert ack.response_nonce == "s1" and not ack.error_detail.message
    assert secrets.ready() == "" and state.secrets["file-cert:a~b"] is not None
    (change,) = secrets.want(set())
    assert list(change.resource_names_unsubscribe) == ["file-cert:a~b"]


def test_filter_chains_by_server_name_exact_then_wildcard_then_any():
    from pilotfish.core.native.config import FilterChain, Listener, TcpProxy

    def chain(name: str, *names: str) -> FilterChain:
        return FilterChain(name, 0, TcpProxy("c", "s"), names)

    listener = Listener("l", "0.0.0.0", 443, (
        chain("wild", "*.example.com"), chain("exact", "api.example.com"), chain("any")))
    assert listener.chain(443, "api.example.com").name == "exact"
    assert listener.chain(443, "web.example.com").name == "wild"
    assert listener.chain(443, "other.org").name == "any"
    assert Listener("l", "", 1, (chain("wild", "*.example.com"),)).chain(1, "x.org") is None


def test_endpoints_of_a_removed_cluster_are_unsubscribed_and_dropped():
    s = session()
    s.receive(response(types.CLUSTER, "n1", cluster("a"), cluster("b")))
    endpoints = discovery_pb2.DeltaDiscoveryResponse(type_url=types.ENDPOINT, nonce="n2")
    for name in ("a", "b"):
        endpoints.resources.add(name=name).resource.Pack(assignment(name))  # type: ignore[arg-type]
    s.receive(endpoints)
    removal = discovery_pb2.DeltaDiscoveryResponse(type_url=types.CLUSTER, nonce="n3",
                                                   removed_resources=["b"])
    _, change = s.receive(removal)
    assert list(change.resource_names_unsubscribe) == ["b"]
    assert set(s.state.endpoints) == {"a"}  # discovery sends nothing more for "b"

# -- state of the world ---------------------------------------------------------------------


def sotw_response(type_url: str, nonce: str, version: str, *messages: object
                  ) -> discovery_pb2.DiscoveryResponse:
    out = discovery_pb2.DiscoveryResponse(type_url=type_url, nonce=nonce, version_info=version)
    for message in messages:
        out.resources.add().Pack(message)  # type: ignore[arg-type]
    return out


def assignment(name: str, port: int = 80) -> object:
    from envoy.config.endpoint.v3 import endpoint_pb2

    return json_format.ParseDict({"cluster_name": name, "endpoints": [{"lb_endpoints": [{
        "endpoint": {"address": {"socket_address": {"address": "10.0.0.1",
                                                    "port_value": port}}}}]}]},
        endpoint_pb2.ClusterLoadAssignment())


def sotw_session() -> SotwClientSession:
    return SotwClientSession(base_pb2.Node(id="router~1.2.3.4~gw.ns~ns.svc.cluster.local"),
                             ConfigState())


def test_sotw_opening_asks_for_clusters_then_listeners_by_wildcard_with_the_node_once():
    opening = sotw_session().start()
    assert [r.type_url for r in opening] == [types.CLUSTER, types.LISTENER]
    assert opening[0].node.id and not opening[1].node.id
    assert all(not r.resource_names and not r.version_info and not r.response_nonce
               for r in opening)


def test_sotw_clusters_are_acked_with_their_version_before_their_endpoints_are_asked_for():
    s = sotw_session()
    s.start()
    ack, eds = s.receive(sotw_response(types.CLUSTER, "n1", "v1", cluster("b"), cluster("a")))
    assert (ack.type_url, ack.version_info, ack.response_nonce) == (types.CLUSTER, "v1", "n1")
    assert not ack.error_detail.message and not ack.resource_names
    assert eds.type_url == types.ENDPOINT and list(eds.resource_names) == ["a", "b"]
    assert (eds.version_info, eds.response_nonce) == ("", "")
    (eds_ack,) = s.receive(sotw_response(types.ENDPOINT, "n2", "e1", assignment("a")))
    assert (eds_ack.version_info, eds_ack.response_nonce) == ("e1", "n2")
    assert list(eds_ack.resource_names) == ["a", "b"]  # every request: the whole subscription
    assert s.state.endpoints["a"][0].port == 80 and "b" not in s.state.endpoints


def test_sotw_listeners_are_acked_before_their_route_tables_are_asked_for():
    s = sotw_session()
    s.receive(sotw_response(types.CLUSTER, "n1", "v1"))
    ack, rds = s.receive(sotw_response(types.LISTENER, "n2", "l1", listener("http.8080")))
    assert ack.type_url == types.LISTENER and ack.version_info == "l1"
    assert rds.type_url == types.ROUTE and list(rds.resource_names) == ["http.8080"]
    assert s.ready() == "route tables not received yet: http.8080"


def test_sotw_nack_names_the_field_and_keeps_the_last_good_version_and_state():
    s = sotw_session()
    s.receive(sotw_response(types.CLUSTER, "n1", "v1", cluster("good")))
    bad = cluster("bad", health_checks=[{"timeout": "1s"}])  # active health checking
    (nack,) = s.receive(sotw_response(types.CLUSTER, "n2", "v2", cluster("good"), bad))
    assert (nack.version_info, nack.response_nonce) == ("v1", "n2")
    assert nack.error_detail.code == 3
    assert nack.error_detail.message == (
        f"{types.CLUSTER} bad: health_checks: envoy.config.cluster.v3.Cluster."
        "health_checks is not supported by the native proxy")
    assert set(s.state.clusters) == {"good"} and s.rejected[types.CLUSTER]
    # The next good response is taken whole and clears the rejection.
    s.receive(sotw_response(types.CLUSTER, "n3", "v3", cluster("other")))
    assert set(s.state.clusters) == {"other"} and types.CLUSTER not in s.rejected


def test_sotw_a_resource_of_another_type_or_undecodable_is_nacked_by_its_position():
    s = sotw_session()
    (nack,) = s.receive(sotw_response(types.CLUSTER, "n1", "v1", cluster("a"),
                                      listener("r")))
    assert nack.error_detail.message == (
        f"{types.CLUSTER} resources[1]: a {types.LISTENER} resource in a response of "
        "this type")
    garbage = sotw_response(types.CLUSTER, "n2", "v2")
    garbage.resources.add(type_url=types.CLUSTER, value=b"\xff\xff")
    (nack,) = s.receive(garbage)
    assert nack.error_detail.message.startswith(f"{types.CLUSTER} resources[0]: DecodeError")
    assert not s.state.clusters and s.ready() == "no CDS from discovery yet"


def test_sotw_clusters_missing_from_a_response_are_removed_with_their_endpoints():
    s = sotw_session()
    s.receive(sotw_response(types.CLUSTER, "n1", "v1", cluster("a"), cluster("b")))
    s.receive(sotw_response(types.ENDPOINT, "n2", "e1", assignment("a"), assignment("b")))
    _, eds = s.receive(sotw_response(types.CLUSTER, "n3", "v2", cluster("a")))
    assert set(s.state.clusters) == {"a"} and set(s.state.endpoints) == {"a"}
    assert list(eds.resource_names) == ["a"] and eds.response_nonce == "n2"
    # An empty response is a complete set too: nothing left, nothing to ask for by name.
    _, eds = s.receive(sotw_response(types.CLUSTER, "n4", "v3"))
    assert not s.state.clusters and not s.state.endpoints
    assert eds.type_url == types.ENDPOINT and not eds.resource_names  # unsubscribes


def test_sotw_endpoints_replace_only_what_they_name_and_only_names_subscribed():
    s = sotw_session()
    s.receive(sotw_response(types.CLUSTER, "n1", "v1", cluster("a"), cluster("b")))
    s.receive(sotw_response(types.ENDPOINT, "n2", "e1", assignment("a"), assignment("b")))
    s.receive(sotw_response(types.ENDPOINT, "n3", "e2", assignment("b", 81),
                            assignment("stranger")))
    assert s.state.endpoints["a"][0].port == 80 and s.state.endpoints["b"][0].port == 81
    assert set(s.state.endpoints) == {"a", "b"}


def test_sotw_subscription_grows_with_the_clusters_and_a_new_stream_repeats_what_is_held():
    s = sotw_session()
    s.receive(sotw_response(types.CLUSTER, "n1", "v1", cluster("a")))
    s.receive(sotw_response(types.ENDPOINT, "n2", "e1", assignment("a")))
    _, eds = s.receive(sotw_response(types.CLUSTER, "n3", "v2", cluster("a"), cluster("c")))
    assert list(eds.resource_names) == ["a", "c"] and eds.version_info == "e1"
    assert s.receive(sotw_response(types.CLUSTER, "n4", "v3", cluster("c"), cluster("a"))
                     )[1:] == []  # same names: nothing but the ACK
    cds, lds, eds = s.start()
    assert (cds.version_info, cds.response_nonce, cds.node.id) == ("v3", "", s.node.id)
    assert lds.type_url == types.LISTENER and not lds.version_info
    assert (eds.type_url, list(eds.resource_names), eds.version_info, eds.response_nonce) == (
        types.ENDPOINT, ["a", "c"], "e1", "")


def test_ready_waits_for_every_clusters_endpoints_as_envoy_warms_them_then_stays_ready():
    s = sotw_session()
    s.receive(sotw_response(types.CLUSTER, "n1", "v1", cluster("a"), cluster("b")))
    s.receive(sotw_response(types.LISTENER, "n2", "l1"))
    assert s.ready() == "endpoints not received yet: a, b"
    s.receive(sotw_response(types.ENDPOINT, "n3", "e1", assignment("a")))
    assert s.ready() == "endpoints not received yet: b"
    empty = assignment("b")
    empty.ClearField("endpoints")  # type: ignore[attr-defined]
    s.receive(sotw_response(types.ENDPOINT, "n4", "e2", assignment("a"), empty))
    assert s.ready() == ""
    # A cluster added later warms on its own; the proxy does not go back to not ready.
    s.receive(sotw_response(types.CLUSTER, "n5", "v2", cluster("a"), cluster("b"), cluster("c")))
    assert s.ready() == ""
