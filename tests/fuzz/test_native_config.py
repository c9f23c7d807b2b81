"""Fuzz: the native proxy's xDS client on any resources discovery (or an impostor) sends.

Every resource the native proxy takes goes through ``ConfigState.apply``
(``core/native/config.py``): decode, check against the supported subset, build the
runtime form, all or nothing. Each example is one update of one type:

* arbitrary bytes as a resource;
* resources a real translator emitted (clusters, endpoints, listeners and routes for a
  gateway and a sidecar, from a config with HTTP, HTTPS and TCP servers, retries,
  rewrites, header edits, mutual TLS), plus hand-made secrets, mutated structurally:
  fields cleared, scalars set to edge values, repeated fields emptied or grown, an
  ``Any``'s type or payload swapped, a field of the message set that the subset may or
  may not allow — several at once, at any depth;
* the same, serialized and then damaged byte by byte.

Properties: the update is accepted, or refused with ``Rejected`` naming the resource and
type — never another exception; a refused update leaves the state exactly as it was (the
same objects, the same versions). At the session level, ``DeltaClientSession`` and
``SotwClientSession`` fed arbitrary responses (resources as above, names, removals, type
URLs real and not) answer each with one ACK or NACK carrying its nonce, and never raise.
"""

from __future__ import annotations

import contextlib
import re
from functools import cache
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import event, given
from hypothesis import strategies as st

from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.native.client_session import DeltaClientSession, SotwClientSession
from pilotfish.core.native.config import MESSAGES, ConfigState, Rejected
from pilotfish.core.proxy import parse_node
from pilotfish.core.xds import types
from pilotfish.core.yamlload import load_text
from pilotfish.testing.config import WEB_SERVICE
from pilotfish.testing.generators import generate

GATEWAY = """\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["web.example.com"]
    tls: {mode: SIMPLE, credentialName: web-cert}
  - {port: {number: 9000, name: tcp, protocol: TCP}, hosts: ["*"]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: ["*", "web.example.com"]
  gateways: [edge, mesh]
  http:
  - match: [{uri: {prefix: /api}, headers: {x-v: {exact: "2"}}}]
    rewrite: {uri: /v2, authority: web.internal}
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,connect-failure"}
    timeout: 10s
    headers: {request: {add: {x-a: b}, remove: [x-c]}, response: {set: {x-d: e}}}
    route:
    - {destination: {host: web.shop.svc.cluster.local, port: {number: 80}}, weight: 90}
    - {destination: {host: web.shop.svc.cluster.local, port: {number: 80}}, weight: 10}
  - match: [{uri: {regex: "/r/[0-9]+"}}]
    redirect: {uri: /elsewhere, redirectCode: 301}
  - route: [{destination: {host: web.shop.svc.cluster.local}}]
  tcp:
  - route: [{destination: {host: web.shop.svc.cluster.local, port: {number: 80}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web.shop.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}, tls: {mode: ISTIO_MUTUAL}}
"""
NODES = [("router~10.0.0.8~gw.shop~shop.svc.cluster.local", {"istio": "ingressgateway"}),
         ("sidecar~10.0.0.1~web-1.shop~shop.svc.cluster.local", {"app": "web"})]
TYPES = [types.CLUSTER, types.ENDPOINT, types.LISTENER, types.ROUTE, types.SECRET]


def _secret(name: str, **fields: Any) -> secret_pb2.Secret:
    return json_format.ParseDict({"name": name, **fields}, secret_pb2.Secret())


@cache
def seeds() -> dict[str, list[Message]]:
    """Real resources by type: what the translators emit for a gateway and a sidecar."""
    objects, errors = load_text(WEB_SERVICE + GATEWAY, "fuzz.yaml")
    assert not errors, errors
    push = push_context.build(objects, MeshSettings(), "fuzz")
    out: dict[str, list[Message]] = {t: [] for t in TYPES}
    for node_id, labels in NODES:
        proxy = parse_node(node_id, {"LABELS": labels})
        for type_url in TYPES[:4]:
            out[type_url] += generate(type_url, push, proxy, {})
    out[types.SECRET] = [
        _secret("default", tls_certificate={"certificate_chain": {"inline_bytes": "Y2VydA=="},
                                            "private_key": {"inline_bytes": "a2V5"}}),
        _secret("ROOTCA", validation_context={"trusted_ca": {"inline_string": "pem"}}),
        _secret("kubernetes://web-cert", tls_certificate={
            "certificate_chain": {"inline_string": "c"}, "private_key": {"filename": "/k"}}),
    ]
    assert all(out.values()), {t: len(v) for t, v in out.items()}
    return out


# -- structural mutations -------------------------------------------------------------------

SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_STRING: st.one_of(st.sampled_from(
        ["", "*", "x", "0.0.0.0", "::", "[", "(", "a" * 300, "\x00", "é", "outbound|80||web"]),
        st.text(max_size=20)),
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=20),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=True),
    FieldDescriptor.TYPE_FLOAT: st.floats(width=32),
}
INTS = st.one_of(st.sampled_from([0, 1, -1, 2**31 - 1, -2**31, 65535, 65536]),
                 st.integers(-2**31, 2**31 - 1))
UINTS = st.one_of(st.sampled_from([0, 1, 2**32 - 1, 65535, 65536]), st.integers(0, 2**32 - 1))
# Payloads an Any may be given: the resource types, and extensions the subset knows or not.
ANY_TYPES = [*(t.removeprefix("type.googleapis.com/") for t in TYPES),
             "envoy.extensions.filters.network.http_connection_manager.v3."
             "HttpConnectionManager",
             "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
             "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
             "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
             "envoy.extensions.filters.http.router.v3.Router",
             "envoy.extensions.filters.http.fault.v3.HTTPFault",
             "google.protobuf.Duration", "no.such.Type", ""]


def _fields(message: Message, present: bool) -> list[tuple[Message, FieldDescriptor]]:
    """(message, field) pairs reachable from ``message`` through set fields: the set
    ones (what the translator emits, so mostly inside the subset), or any."""
    out = []
    stack = [message]
    while stack and len(out) < 4000:
        current = stack.pop()
        listed = current.ListFields()
        for field in [f for f, _ in listed] if present else current.DESCRIPTOR.fields:
            out.append((current, field))
        for field, value in listed:
            if field.type != FieldDescriptor.TYPE_MESSAGE:
                continue
            if field.message_type.GetOptions().map_entry:
                stack.extend(v for v in value.values() if isinstance(v, Message))
            elif field.is_repeated:
                stack.extend(value)
            else:
                stack.append(value)
    return out


def _scalar(draw: st.DrawFn, field: FieldDescriptor) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return draw(st.sampled_from([v.number for v in field.enum_type.values] + [99]))
    if field.type in SCALARS:
        return draw(SCALARS[field.type])
    if field.type in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return draw(UINTS)
    if field.type in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return draw(st.one_of(UINTS, st.just(2**64 - 1)))
    return draw(INTS)


def _mutate_any(draw: st.DrawFn, packed: any_pb2.Any, donors: list[Message]) -> None:
    choice = draw(st.integers(0, 2))
    if choice == 0:
        packed.type_url = "type.googleapis.com/" + draw(st.sampled_from(ANY_TYPES))
    elif choice == 1:
        packed.value = draw(st.binary(max_size=40))
    else:
        packed.Pack(draw(st.sampled_from(donors)))


def _mutate(draw: st.DrawFn, message: Message, donors: list[Message]) -> None:
    places = _fields(message, present=draw(st.integers(0, 3)) > 0) or _fields(message, False)
    owner, field = draw(st.sampled_from(places))
    repeated = field.is_repeated
    is_message = field.type == FieldDescriptor.TYPE_MESSAGE
    action = draw(st.sampled_from(["clear", "set", "set", "grow"]))
    if action == "clear":
        owner.ClearField(field.name)
        return
    if is_message and field.message_type.GetOptions().map_entry:
        mapping = getattr(owner, field.name)
        key = draw(st.sampled_from(["", "k", "tlsMode",
                                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]))
        value_field = field.message_type.fields_by_name["value"]
        if value_field.type == FieldDescriptor.TYPE_MESSAGE:
            target = mapping[key]
            if value_field.message_type.full_name == "google.protobuf.Any":
                _mutate_any(draw, target, donors)
            else:
                target.SetInParent()
        else:
            mapping[key] = _scalar(draw, value_field)
        return
    if repeated:
        values = getattr(owner, field.name)
        if is_message:
            added = values.add()
            if values and draw(st.booleans()) and len(values) > 1:
                added.CopyFrom(values[draw(st.integers(0, len(values) - 2))])
            elif field.message_type.full_name == "google.protobuf.Any":
                _mutate_any(draw, added, donors)
        else:
            values.append(_scalar(draw, field))
        return
    if is_message:
        target = getattr(owner, field.name)
        if field.message_type.full_name == "google.protobuf.Any":
            _mutate_any(draw, target, donors)
        else:
            target.SetInParent()  # present, empty: what a sloppy control plane sends
        return
    with contextlib.suppress(ValueError, TypeError):  # a value the field cannot hold
        setattr(owner, field.name, _scalar(draw, field))


@st.composite
def resources(draw: st.DrawFn, type_url: str) -> tuple[str, bytes]:
    """(name, serialized resource) for one update of ``type_url``."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.text(max_size=10)), draw(st.binary(max_size=200))
    seed = seeds()[type_url]
    message = type(seed[0])()
    message.CopyFrom(draw(st.sampled_from(seed)))
    donors = [m for ms in seeds().values() for m in ms]
    for _ in range(draw(st.integers(0 if kind > 3 else 1, 4))):
        _mutate(draw, message, donors)
    name = types.resource_name(message)
    data = message.SerializeToString()
    if kind == 1 and data:  # damage the wire bytes too
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + draw(st.binary(max_size=4)) + data[at + draw(st.integers(0, 4)):]
    return name, data


def snapshot(state: ConfigState) -> list[Any]:
    tables = [state.clusters, state.endpoints, state.listeners, state.routes, state.secrets,
              *state.resources.values(), state.versions]
    return [sorted((k, id(v)) for k, v in table.items()) for table in tables]


def primed() -> ConfigState:
    """A state holding good config of every type, as a running proxy does (the tables
    copied: what they hold is frozen, and ``apply`` only replaces entries)."""
    held = _primed()
    return ConfigState(
        dict(held.clusters), dict(held.endpoints), dict(held.listeners), dict(held.routes),
        dict(held.secrets), {t: dict(r) for t, r in held.resources.items()},
        dict(held.versions))


@cache
def _primed() -> ConfigState:
    state = ConfigState()
    for type_url, messages in seeds().items():
        good = []
        for message in messages:
            name = types.resource_name(message)
            try:
                ConfigState().apply(type_url, [(name, message.SerializeToString())], [])
            except Rejected:
                continue  # a translator output outside the subset: not for priming
            good.append((name, message.SerializeToString()))
        state.apply(type_url, good, [], "v0")
    return state


# -- ConfigState.apply ----------------------------------------------------------------------


@given(st.data())
def test_an_update_is_taken_whole_or_refused_leaving_the_state_as_it_was(
        data: st.DataObject) -> None:
    type_url = data.draw(st.sampled_from(TYPES))
    added = data.draw(st.lists(resources(type_url), min_size=1, max_size=3))
    removed = data.draw(st.lists(st.sampled_from(
        [types.resource_name(m) for m in seeds()[type_url]] + ["", "nope"]), max_size=2))
    state = primed()
    before = snapshot(state)
    try:
        state.apply(type_url, added, removed, "v1")
    except Rejected as exc:
        # What the builders raised, when not the subset's refusal: worth a look.
        raised = re.search(r": ([A-Z]\w*(?:Error|Exception)): ", str(exc))
        event(f"refused: {raised.group(1)}" if raised else "refused by the subset")
        assert str(exc).startswith(type_url), exc
        assert snapshot(state) == before
    else:
        event("accepted")
        assert state.versions[type_url] == "v1"
        for name, _ in added:
            assert name in state.resources[type_url]


@given(st.sampled_from([*TYPES, types.EXTENSION_CONFIG, "", "x"]),
       st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=300)), max_size=3))
def test_arbitrary_bytes_as_resources_are_taken_or_refused(
        type_url: str, added: list[tuple[str, bytes]]) -> None:
    state = primed()
    before = snapshot(state)
    try:
        state.apply(type_url, added, [])
    except Rejected:
        assert snapshot(state) == before


# -- the sessions ---------------------------------------------------------------------------

NODE = base_pb2.Node(id="router~10.0.0.8~gw.shop~shop.svc.cluster.local")
type_urls = st.one_of(st.sampled_from(TYPES), st.sampled_from(
    [types.EXTENSION_CONFIG, "", types.CLUSTER + "x"]), st.text(max_size=10))


@st.composite
def delta_responses(draw: st.DrawFn) -> discovery_pb2.DeltaDiscoveryResponse:
    type_url = draw(type_urls)
    out = discovery_pb2.DeltaDiscoveryResponse(
        type_url=type_url, nonce=draw(st.text(max_size=6)),
        system_version_info=draw(st.text(max_size=6)),
        removed_resources=draw(st.lists(st.text(max_size=10), max_size=2)))
    for name, value in draw(st.lists(resources(type_url) if type_url in TYPES else
                                     st.tuples(st.text(max_size=8), st.binary(max_size=50)),
                                     max_size=3)):
        entry = out.resources.add(name=draw(st.sampled_from([name, "", "other"])))
        entry.resource.type_url = draw(st.sampled_from([type_url, types.CLUSTER, ""]))
        entry.resource.value = value
    return out


@st.composite
def sotw_responses(draw: st.DrawFn) -> discovery_pb2.DiscoveryResponse:
    type_url = draw(type_urls)
    out = discovery_pb2.DiscoveryResponse(type_url=type_url, nonce=draw(st.text(max_size=6)),
                                          version_info=draw(st.text(max_size=6)))
    for _, value in draw(st.lists(resources(type_url) if type_url in TYPES else
                                  st.tuples(st.text(max_size=8), st.binary(max_size=50)),
                                  max_size=3)):
        out.resources.add(type_url=draw(st.sampled_from([type_url, types.ROUTE, ""])),
                          value=value)
    return out


def _answers(requests: list[Any], response: Any) -> None:
    assert requests and requests[0].type_url == response.type_url
    assert requests[0].response_nonce == response.nonce
    for request in requests[1:]:  # follow-up subscriptions, never another ACK
        assert request.type_url in (types.ENDPOINT, types.ROUTE)
        assert not request.error_detail.message


@given(st.lists(delta_responses(), min_size=1, max_size=4))
def test_the_delta_session_acks_or_nacks_any_response(
        responses: list[discovery_pb2.DeltaDiscoveryResponse]) -> None:
    session = DeltaClientSession(NODE, ConfigState())
    session.start()
    for response in responses:
        _answers(session.receive(response), response)
        session.ready()


@given(st.lists(sotw_responses(), min_size=1, max_size=4))
def test_the_sotw_session_acks_or_nacks_any_response(
        responses: list[discovery_pb2.DiscoveryResponse]) -> None:
    session = SotwClientSession(NODE, ConfigState())
    session.start()
    for response in responses:
        requests = session.receive(response)
        _answers(requests, response)
        if requests[0].error_detail.message:  # a NACK repeats the version held
            assert requests[0].version_info == session.state.versions.get(
                response.type_url, "")
        session.ready()
    assert session.start()  # a reconnect after anything still opens with the wildcards


def test_seeds_cover_every_type_and_mostly_fit_the_subset() -> None:
    """The seeds are worth mutating: real translator output the native proxy takes."""
    state = primed()
    assert state.clusters and state.endpoints and state.listeners and state.routes
    assert set(MESSAGES) >= set(TYPES)
