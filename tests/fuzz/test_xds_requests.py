"""Fuzz: no sequence of xDS requests can crash, wedge or bloat a running discovery.

One real discovery (a process, plaintext gRPC on localhost, the sidecar and gRPC profiles)
for the module. Each example is
one ADS stream, SotW or delta: a first request with a node (an id made of real and random
parts, random metadata, cluster and locality) or none, then more requests with type URLs
real and not, resource names, versions, nonces (random, or echoing the last one discovery
sent, i.e. ACKs and NACKs), ``error_detail`` with messages up to past the 4 MB message
limit, subscriptions and initial versions; the stream then ends the way clients end them
(cancelled at once, cancelled after reading, half-closed).

Properties, after every example: a stream discovery ended was ended with a status that
says why (invalid argument, resource exhausted, deadline exceeded) and never with an
unknown error; discovery logged no traceback; it is still running, and a well-formed
client gets clusters and listeners within a second. At the end: every connection is gone
and so is everything the generation cache kept for them, and discovery's RSS has not grown
by more than 50 MB since a warm-up.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import attrs
import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, struct_pb2
from google.rpc import status_pb2
from hypothesis import event, example, given
from hypothesis import strategies as st

from pilotfish.core.xds import types
from pilotfish.testing.config import WEB_SERVICE
from pilotfish.testing.mesh import LocalMesh
from pilotfish.testing.processes import http, wait_until
from pilotfish.testing.xds_client import AdsStream, fetch

CONFIG = WEB_SERVICE
CLUSTER = "outbound|80||web.shop.svc.cluster.local"
GROWTH = 50 * 1024 * 1024  # RSS allowed on top of the warm-up's, for the whole run
# How discovery may end a stream it does not like; anything else (UNKNOWN above all: an
# exception in the handler) is a bug.
REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.DEADLINE_EXCEEDED}
QUIET = 0.05  # seconds without a response after which a request is taken as answered


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    with LocalMesh(tmp_path_factory.mktemp("fuzz-xds")) as mesh:
        mesh.write("web.yaml", CONFIG)
        mesh.start_discovery("profile: [sidecar, grpc]\n")  # every built-in generator
        yield mesh


# -- requests -------------------------------------------------------------------------------

REAL_TYPES = [types.CLUSTER, types.ENDPOINT, types.LISTENER, types.ROUTE, types.SECRET,
              types.EXTENSION_CONFIG]
type_urls = st.one_of(
    st.sampled_from(REAL_TYPES), st.sampled_from(REAL_TYPES),
    st.sampled_from(["", "*", types.CLUSTER + " ", types.CLUSTER.upper(),
                     "type.googleapis.com/envoy.config.cluster.v3.Cluster/x"]),
    st.builds("type.googleapis.com/{}".format, st.text(max_size=20)), st.text(max_size=40))
texts = st.one_of(st.text(max_size=30), st.sampled_from(
    ["", "*", "\x00", "~", "~~~", "é", "\U0001f600", "\ud7ff", "a" * 300, "..", "%00"]))
names = st.one_of(texts, st.sampled_from(
    ["*", CLUSTER, "outbound|80||web.shop.svc.cluster.local", "80", "0.0.0.0_80",
     "virtualInbound", "virtualOutbound", "inbound|80||", "BlackHoleCluster",
     "PassthroughCluster", "default", "ROOTCA", "kubernetes://web"]))
ECHO = "(the last nonce discovery sent for this type)"
nonces = st.one_of(st.just(ECHO), st.just(ECHO), st.just(""), texts)
big_text = st.one_of(texts, st.builds(lambda c, n: c * n, st.sampled_from(["x", "é"]),
                                      st.sampled_from([1024, 100_000, 5 * 1024 * 1024])))
error_details = st.builds(
    status_pb2.Status, code=st.integers(-(2 ** 31), 2 ** 31 - 1), message=big_text,
    details=st.lists(st.builds(any_pb2.Any, type_url=texts, value=st.binary(max_size=64)),
                     max_size=2))

# Node metadata: the keys discovery reads, with values of every shape a Struct holds.
METADATA_KEYS = ["LABELS", "NAMESPACE", "GENERATOR", "INSTANCE_IPS", "POD_PORTS",
                 "SERVICE_ACCOUNT", "CLUSTER_ID", "ISTIO_VERSION", "PILOTFISH_ADMIN",
                 "INTERCEPTION_MODE", "PROXY_CONFIG", "MESH_ID"]
# Mostly finite numbers: a Struct holding Infinity or NaN has no JSON form, so discovery
# refuses the node before reading anything else in it.
struct_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
              st.floats(allow_nan=False, allow_infinity=False), st.floats(),
              st.integers(-(2 ** 53), 2 ** 53), texts, st.sampled_from(
                  ["grpc", "sidecar", "router", "x", "GRPC", "10.0.0.1,::1,", "[]", "{}"])),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children,
                                                                      max_size=4),
    max_leaves=12)
EDGE_NUMBERS = [0, -1, 65535, 65536, 2 ** 31, 2 ** 63, 10 ** 30, 0.5, 1e300, float("inf"),
                float("-inf"), float("nan")]
# POD_PORTS is JSON text inside the metadata, as pilot-agent sends it: JSON's own edges too
# (Infinity, NaN, nesting deeper than a decoder recurses).
port_lists = st.builds(json.dumps, st.lists(st.fixed_dictionaries(
    {"name": st.sampled_from(["http", "grpc", ""]) | texts,
     "containerPort": st.one_of(st.sampled_from(EDGE_NUMBERS), st.integers(0, 70000),
                                texts, st.none())}), min_size=1, max_size=3))
deep_json = st.builds(lambda depth: "[" * depth + "]" * depth,
                      st.sampled_from([1, 64, 1000, 5000, 100_000]))
pod_ports = st.one_of(port_lists, port_lists, deep_json, st.builds(json.dumps, struct_values),
                      texts)
# The keys discovery reads, each with a value of its own shape (so that the node is taken
# and what discovery does with the value is reached); or any keys with any values.
metadata = st.one_of(
    st.fixed_dictionaries({}, optional={
        "LABELS": st.dictionaries(texts, texts, max_size=4),
        "NAMESPACE": st.sampled_from(["shop", "default", "istio-system"]) | texts,
        "GENERATOR": st.sampled_from(["grpc", "sidecar", "router", "x-1"]),
        "INSTANCE_IPS": st.sampled_from(["10.0.0.1,::1,", ",,", "x"]) | texts,
        "POD_PORTS": pod_ports,
        "SERVICE_ACCOUNT": texts,
        "CLUSTER_ID": texts,
        "ISTIO_VERSION": texts,
        "PILOTFISH_ADMIN": texts,
    }),
    st.dictionaries(st.one_of(st.sampled_from(METADATA_KEYS), texts), struct_values,
                    max_size=5))


def _node_id(kind: str, ip: str, pod: str, domain: str) -> str:
    return "~".join((kind, ip, pod, domain))


VALID_ID = "sidecar~10.0.0.9~fuzz.shop~shop.svc.cluster.local"
# Mostly ids discovery accepts, so that what comes after the node is reached too.
real_ids = st.builds(
    _node_id, st.sampled_from(["sidecar", "router", "waypoint", "ztunnel"]),
    st.sampled_from(["10.0.0.9", "", "::1", "999.1.1.1"]) | texts,
    st.sampled_from(["probe.shop", "web-1.shop", "x", "a.b.c"]) | texts,
    st.sampled_from(["shop.svc.cluster.local", ""]) | texts)
node_ids = st.one_of(st.just(VALID_ID), st.just(VALID_ID), st.just(VALID_ID), real_ids,
                     real_ids, st.builds(_node_id, texts, texts, texts, texts), texts)


def _node(node_id: str, meta: dict[str, Any], cluster: str, zone: str,
          features: list[str]) -> base_pb2.Node:
    packed = struct_pb2.Struct()
    packed.update(meta)
    return base_pb2.Node(id=node_id, cluster=cluster, metadata=packed,
                         locality=base_pb2.Locality(region=zone, zone=zone),
                         client_features=features)


nodes = st.builds(_node, node_ids, metadata, texts, texts, st.lists(texts, max_size=3))


@attrs.frozen
class Step:
    """One request; ``echo``: its nonce (and SotW version) is the last discovery sent for
    its type on this stream, when there is one: an ACK, or with an error, a NACK."""

    message: Any
    echo: bool


def _sotw(node: base_pb2.Node | None, type_url: str, resource_names: list[str],
          version: str, nonce: str, error: status_pb2.Status | None) -> Step:
    message = discovery_pb2.DiscoveryRequest(
        type_url=type_url, resource_names=resource_names, version_info=version,
        response_nonce="" if nonce == ECHO else nonce, node=node, error_detail=error)
    return Step(message, nonce == ECHO)


def _delta(node: base_pb2.Node | None, type_url: str, subscribe: list[str],
           unsubscribe: list[str], initial: dict[str, str], nonce: str,
           error: status_pb2.Status | None) -> Step:
    message = discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url, resource_names_subscribe=subscribe,
        resource_names_unsubscribe=unsubscribe, initial_resource_versions=initial,
        response_nonce="" if nonce == ECHO else nonce, node=node, error_detail=error)
    return Step(message, nonce == ECHO)


def steps(delta: bool, node: st.SearchStrategy[base_pb2.Node | None]) -> st.SearchStrategy[Step]:
    errors = st.none() | st.none() | error_details
    name_lists = st.lists(names, max_size=4)
    if delta:
        return st.builds(_delta, node, type_urls, name_lists, name_lists,
                         st.dictionaries(names, texts, max_size=3), nonces, errors)
    return st.builds(_sotw, node, type_urls, name_lists, texts, nonces, errors)


@attrs.frozen
class Plan:
    delta: bool
    steps: tuple[Step, ...]
    # "cancel": each request's responses read, then cancelled; "half-close": the client
    # says it is done and reads to the end; "abrupt": cancelled without reading anything;
    # "flood": up to 40 requests written at once (more types than a stream may hold),
    # then read.
    ending: str


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    delta = draw(st.booleans())
    ending = draw(st.sampled_from(["cancel", "cancel", "half-close", "abrupt", "flood"]))
    # The first request names the node (a real client always does; some here do not).
    first_node = st.none() if draw(st.integers(0, 9)) == 0 else nodes
    first = draw(steps(delta, first_node))
    rest = draw(st.lists(steps(delta, st.none() | nodes),
                         max_size=40 if ending == "flood" else 6))
    return Plan(delta, (first, *rest), ending)


def found(node: base_pb2.Node) -> Plan:
    """What the fuzz found (tests/unit/core/test_proxy.py): a node whose metadata raised
    on connect; replayed by every run."""
    return Plan(False, (_sotw(node, types.CLUSTER, [], "", "", None),), "cancel")


# -- running them ---------------------------------------------------------------------------


def address(mesh: LocalMesh) -> str:
    return f"127.0.0.1:{mesh.xds_port}"


def push_status(mesh: LocalMesh) -> dict[str, Any]:
    return dict(http(f"{mesh.debug}/debug/push_status", timeout=2).json())


class Sent:
    """What discovery sent on one stream: the last nonce and version per type URL."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[str, str]] = {}
        self.ended: BaseException | None = None

    def drain(self, stream: AdsStream, quiet: float) -> None:
        """Read responses until none came for ``quiet`` seconds or the stream ended."""
        while self.ended is None:
            try:
                response = stream.response(quiet)
            except TimeoutError:
                return
            except (EOFError, grpc.RpcError) as exc:
                self.ended = exc
                return
            self.last[response.type_url] = (response.nonce, response.system_version_info
                                            if isinstance(response, discovery_pb2
                                                          .DeltaDiscoveryResponse)
                                            else response.version_info)


def send(stream: AdsStream, step: Step, sent: Sent) -> None:
    message = step.message
    if step.echo and message.type_url in sent.last:
        nonce, version = sent.last[message.type_url]
        message = type(message)()
        message.CopyFrom(step.message)
        message.response_nonce = nonce
        if isinstance(message, discovery_pb2.DiscoveryRequest):
            message.version_info = version
    stream.send(message)


def run(mesh: LocalMesh, plan: Plan) -> Sent:
    sent = Sent()
    stream = AdsStream(address(mesh), delta=plan.delta)
    try:
        for step in plan.steps:
            send(stream, step, sent)
            if plan.ending in ("cancel", "half-close"):
                sent.drain(stream, QUIET)
            if sent.ended is not None:
                break
        if plan.ending == "flood":
            sent.drain(stream, 4 * QUIET)
        elif plan.ending == "half-close":
            stream.half_close()
            deadline = time.monotonic() + 2
            while sent.ended is None and time.monotonic() < deadline:
                sent.drain(stream, QUIET)
    finally:
        stream.close()
    return sent


def well_formed_client_is_served(mesh: LocalMesh) -> None:
    for type_url in (types.CLUSTER, types.LISTENER):
        started = time.monotonic()
        reply = fetch(address(mesh), type_url, timeout=1)
        took = time.monotonic() - started
        assert took < 1.0, f"{types.short(type_url)} took {took:.2f}s"
        assert reply.resources, f"no {types.short(type_url)}"
        if type_url == types.CLUSTER:
            clusters = {cluster_pb2.Cluster.FromString(r.value).name for r in reply.resources}
            assert CLUSTER in clusters


class Log:
    """Discovery's log from some point on: tracebacks in it are exceptions nothing caught
    on purpose."""

    def __init__(self, mesh: LocalMesh) -> None:
        self.path = mesh.workdir / "discovery.log"
        self.offset = self.path.stat().st_size

    def check(self) -> None:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            text = log.read().decode(errors="replace")
        self.offset += len(text.encode(errors="replace"))
        assert "Traceback" not in text, text[text.index("Traceback") - 500:][:4000]


WARM_UP_NODES = [("sidecar~10.0.0.{}~w{}.shop~shop.svc.cluster.local", {}),
                 ("router~10.0.0.{}~g{}.shop~shop.svc.cluster.local", {}),
                 ("sidecar~10.0.0.{}~c{}.shop~shop.svc.cluster.local", {"GENERATOR": "grpc"})]


def warm_up(mesh: LocalMesh) -> None:
    """Every proxy kind and type, both flavours, ACKs and NACKs: what the run's RSS and
    the cache's shared encodings are compared with."""
    for index in range(24):
        delta = index % 2 == 1
        node_id, meta = WARM_UP_NODES[index % len(WARM_UP_NODES)]
        stream = AdsStream(address(mesh), node_id=node_id.format(index, index), metadata=meta,
                           delta=delta)
        try:
            sent = Sent()
            for type_url in REAL_TYPES:
                node = stream.node if type_url == REAL_TYPES[0] else None
                names = [CLUSTER] if type_url == types.ENDPOINT else []
                send(stream, _delta(node, type_url, names, [], {}, "", None) if delta else
                     _sotw(node, type_url, names, "", "", None), sent)
                sent.drain(stream, QUIET)
                error = status_pb2.Status(code=3, message="x" * 10_000)
                send(stream, _delta(None, type_url, [], [], {}, ECHO, error) if delta else
                     _sotw(None, type_url, names, "", ECHO, error), sent)
        finally:
            stream.close()
    wait_until(lambda: push_status(mesh)["connections"] == 0, 10, what="warm-up streams to go")


def test_no_request_sequence_hurts_discovery(mesh: LocalMesh, record_property: Any) -> None:
    warm_up(mesh)
    discovery = mesh.processes[0]
    rss_before = discovery.rss_bytes()
    encodings = push_status(mesh)["cache"]["encodings"]
    log = Log(mesh)

    examples = 0

    # Given inside the test: the checks after the last example belong to the same test.
    @given(plans())
    @example(found(_node(VALID_ID, {"POD_PORTS": '[{"name": "http", "containerPort": '
                                                   'Infinity}]'}, "", "", [])))
    @example(found(_node(VALID_ID, {"POD_PORTS": "[" * 5000 + "]" * 5000}, "", "", [])))
    def one_stream(plan: Plan) -> None:
        nonlocal examples
        examples += 1
        sent = run(mesh, plan)
        ended = sent.ended
        if isinstance(ended, grpc.RpcError) and ended.code() is not grpc.StatusCode.CANCELLED:
            event(f"discovery ended the stream: {ended.code().name}")
            assert ended.code() in REFUSALS, (ended.code(), ended.details())
            assert ended.details(), ended.code()
        else:
            event("the client ended the stream")
        # Once discovery holds no connection, whatever the stream made it log is logged.
        wait_until(lambda: push_status(mesh)["connections"] == 0, 5,
                   what="discovery to let go of the stream")
        log.check()
        discovery.check_running()
        well_formed_client_is_served(mesh)

    one_stream()
    record_property("examples", examples)  # hypothesis reports no statistics for it

    def forgotten() -> dict[str, Any] | None:
        status = push_status(mesh)
        idle = status["connections"] == 0 and status["cache"]["sets"] == 0 and (
            status["cache"]["latest"] == 0)
        return status if idle else None

    # Nothing kept for scopes no proxy has; shared encodings only for what the config
    # holds (the same as after the warm-up: the config did not change).
    wait_until(forgotten, 10, what=f"connections and cached scopes to go: {push_status(mesh)}")
    assert push_status(mesh)["cache"]["encodings"] <= encodings
    grown = discovery.rss_bytes() - rss_before
    assert grown < GROWTH, f"discovery's RSS grew {grown / 2 ** 20:.1f} MiB"
    log.check()

