"""The native proxy's side of its ADS stream, sans-IO: responses in, requests out.

As Envoy subscribes: clusters and listeners by wildcard on the first requests; then, as
accepted clusters and listeners name them, the endpoints of every EDS cluster and the route
tables of every HTTP connection manager by name (dropping names no longer used, and what
was held for them). A type's follow-up subscription goes out after the ACK that caused it,
so clusters are ACKed before their endpoints are asked for, listeners before their routes.
Every response is ACKed with its nonce, or NACKed with an ``error_detail`` saying which
resource, field and type the proxy refused (the state then keeps its last good config).

Two flavours share that (:class:`AdsSession`) and differ in their messages:
:class:`DeltaClientSession` (``DELTA_GRPC``) and :class:`SotwClientSession` (``GRPC``,
state of the world: every request carries the whole subscription and the last version
accepted; a response of a wildcard type is the complete set, so what it lacks is removed,
while one of a named type replaces only what it names). The sessions know nothing of
gRPC; ``xds_client`` moves their messages.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from pilotfish.core.native.config import MESSAGES, ConfigState, Rejected
from pilotfish.core.xds import types
from pilotfish.core.xds.delta_client import DeltaRequests

INVALID_ARGUMENT = 3
WILDCARD = (types.CLUSTER, types.LISTENER)  # as types.WILDCARD_TYPES, in this order
BY_NAME = {types.ENDPOINT: ConfigState.eds_names, types.ROUTE: ConfigState.rds_names,
           # gateway credentials and trust bundles discovery serves itself (sds_config: ads)
           types.SECRET: ConfigState.ads_secret_names}


@attrs.define
class AdsSession:
    """What both flavours of the ADS session share: the subscriptions that follow the
    accepted config, applying an update all or nothing, and readiness."""

    node: base_pb2.Node
    state: ConfigState
    subscribed: dict[str, set[str]] = attrs.field(factory=lambda: {t: set() for t in BY_NAME})
    answered: set[str] = attrs.field(factory=set)  # types a response has come for
    rejected: dict[str, str] = attrs.field(factory=dict)  # type → last NACK's detail
    initialized: bool = False  # ready once: Envoy's /ready does not go back either

    def _take(self, type_url: str, added: Iterable[tuple[str, bytes]],
              removed: Iterable[str], version: str) -> status_pb2.Status | None:
        """Apply one update; the NACK's ``error_detail`` if it is refused, else None."""
        try:
            self.state.apply(type_url, added, removed, version)
        except Rejected as exc:
            return self._refuse(type_url, exc)
        self.rejected.pop(type_url, None)
        self.answered.add(type_url)
        return None

    def _refuse(self, type_url: str, exc: Rejected) -> status_pb2.Status:
        self.rejected[type_url] = str(exc)
        return status_pb2.Status(code=INVALID_ARGUMENT, message=str(exc))

    def _follow(self) -> list[tuple[str, set[str], set[str]]]:
        """The by-name subscriptions the accepted config changed, in order (endpoints,
        then routes): (type, names now, names before). What a dropped name held is
        dropped too: discovery sends nothing more for it."""
        changes = []
        for type_url, wanted in BY_NAME.items():
            names = wanted(self.state)
            have = self.subscribed[type_url]
            if names != have:
                self.state.apply(type_url, (), have - names)
                self.subscribed[type_url] = names
                changes.append((type_url, names, have))
        return changes

    def ready(self) -> str:
        """Why the proxy has not finished initializing yet ("" once it has).

        As Envoy's initialization: clusters warm on their endpoints (Istio's config sources
        wait for them without a timeout, and discovery answers every EDS name, empty ones
        included), then listeners on their route tables. Once initialized the proxy stays
        ready: a cluster or route table added later warms without taking readiness away."""
        if self.initialized:
            return ""
        for type_url in WILDCARD:
            if type_url not in self.answered:
                return f"no {types.short(type_url)} from discovery yet"
        for type_url, have, what in ((types.ENDPOINT, self.state.endpoints, "endpoints"),
                                     (types.ROUTE, self.state.routes, "route tables")):
            missing = self.subscribed[type_url] - set(have)
            if missing:
                return f"{what} not received yet: {', '.join(sorted(missing))}"
        self.initialized = True
        return ""


@attrs.define
class DeltaClientSession(AdsSession, DeltaRequests):
    request_type = discovery_pb2.DeltaDiscoveryRequest
    _sent_node: bool = False

    def start(self) -> list[discovery_pb2.DeltaDiscoveryRequest]:
        """The opening requests of a (new) stream: wildcards, then what is subscribed."""
        self._sent_node = False
        out = [self._request(type_url, initial_resource_versions={
            name: "" for name in self.state.resources[type_url]}) for type_url in WILDCARD]
        for type_url, names in self.subscribed.items():
            if names:
                out.append(self._request(type_url, resource_names_subscribe=sorted(names)))
        return out

    def receive(self, response: discovery_pb2.DeltaDiscoveryResponse
                ) -> list[discovery_pb2.DeltaDiscoveryRequest]:
        """Take a response; the ACK or NACK, then any change of subscriptions it causes."""
        type_url = response.type_url
        error = self._take(type_url, [(r.name, r.resource.value) for r in response.resources],
                           response.removed_resources, response.system_version_info)
        if error is not None:
            return [self._request(type_url, response_nonce=response.nonce,
                                  error_detail=error)]
        out = [self._request(type_url, response_nonce=response.nonce)]
        for follow, names, have in self._follow():
            out.append(self._request(follow, resource_names_subscribe=sorted(names - have),
                                     resource_names_unsubscribe=sorted(have - names)))
        return out


def resources_of(response: discovery_pb2.DiscoveryResponse) -> list[tuple[str, bytes]]:
    """A state-of-the-world response's resources (serialized), by the name each carries
    inside (SotW sends no names beside them); ``Rejected``, naming the entry, if one is
    not of the response's type or does not decode."""
    type_url = response.type_url
    message_type = MESSAGES.get(type_url)
    if message_type is None:
        raise Rejected(f"{type_url}: the native proxy does not take this type")
    out = []
    for index, packed in enumerate(response.resources):
        if packed.type_url != type_url:
            raise Rejected(f"{type_url} resources[{index}]: a {packed.type_url or 'untyped'} "
                           "resource in a response of this type")
        resource = message_type()
        try:
            resource.ParseFromString(packed.value)
        except Exception as exc:  # DecodeError, or a bad UTF-8 string
            raise Rejected(f"{type_url} resources[{index}]: {type(exc).__name__}: "
                           f"{exc}") from None
        out.append((types.resource_name(resource), packed.value))
    return out


@attrs.define
class SotwClientSession(AdsSession):
    """State of the world. Every request repeats the type's whole subscription (empty: the
    wildcard for clusters and listeners) with the last version accepted and the last nonce
    received, so a request that crosses a response is corrected by the next ACK."""

    nonces: dict[str, str] = attrs.field(factory=dict)  # this stream's last, by type
    _sent_node: bool = False

    def _request(self, type_url: str, **fields: object) -> discovery_pb2.DiscoveryRequest:
        fields.setdefault("version_info", self.state.versions.get(type_url, ""))
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url, response_nonce=self.nonces.get(type_url, ""),
            resource_names=sorted(self.subscribed.get(type_url, ())), **fields)
        if not self._sent_node:
            request.node.CopyFrom(self.node)
            self._sent_node = True
        return request

    def start(self) -> list[discovery_pb2.DiscoveryRequest]:
        """The opening requests of a (new) stream: wildcards, then what is subscribed,
        each with the version held (nonces belong to the stream that sent them)."""
        self._sent_node = False
        self.nonces.clear()
        return [self._request(type_url) for type_url in WILDCARD] + [
            self._request(type_url) for type_url, names in self.subscribed.items() if names]

    def receive(self, response: discovery_pb2.DiscoveryResponse
                ) -> list[discovery_pb2.DiscoveryRequest]:
        """Take a response; the ACK or NACK, then any change of subscriptions it causes."""
        type_url = response.type_url
        self.nonces[type_url] = response.nonce
        error: status_pb2.Status | None
        try:
            added = resources_of(response)
        except Rejected as exc:
            error = self._refuse(type_url, exc)
        else:
            if type_url in WILDCARD:  # the complete set: what it lacks is gone
                sent = {name for name, _ in added}
                removed = [n for n in self.state.resources[type_url] if n not in sent]
            else:  # only what it names, and only names subscribed to
                wanted = self.subscribed.get(type_url, set())
                added = [(name, resource) for name, resource in added if name in wanted]
                removed = []
            error = self._take(type_url, added, removed, response.version_info)
        if error is not None:  # version_info: the last accepted, not this one
            return [self._request(type_url, error_detail=error)]
        out = [self._request(type_url, version_info=response.version_info)]
        for follow, _, _ in self._follow():
            out.append(self._request(follow))
        return out


@attrs.define
class SecretSession:
    """The native proxy's side of a delta SDS stream to the agent: the secrets its TLS
    listeners name, subscribed by name as they come and go, each response ACKed or
    NACKed like the ADS session's."""

    node: base_pb2.Node
    state: ConfigState
    subscribed: set[str] = attrs.field(factory=set)
    rejected: str = ""
    always: frozenset[str] = frozenset()  # names wanted whatever the config (xDS's own)

    def start(self) -> list[discovery_pb2.DeltaDiscoveryRequest]:
        return [discovery_pb2.DeltaDiscoveryRequest(
            type_url=types.SECRET, node=self.node,
            resource_names_subscribe=sorted(self.subscribed))] if self.subscribed else []

    def want(self, names: set[str]) -> list[discovery_pb2.DeltaDiscoveryRequest]:
        """The request that makes ``names`` the subscription (none if it already is)."""
        names = set(names) | self.always
        if names == self.subscribed:
            return []
        first = not self.subscribed
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=types.SECRET, resource_names_subscribe=sorted(names - self.subscribed),
            resource_names_unsubscribe=sorted(self.subscribed - names))
        if first:
            request.node.CopyFrom(self.node)
        self.subscribed = set(names)
        return [request]

    def receive(self, response: discovery_pb2.DeltaDiscoveryResponse
                ) -> list[discovery_pb2.DeltaDiscoveryRequest]:
        try:
            self.state.apply(types.SECRET, [(r.name, r.resource.value)
                                            for r in response.resources],
                             response.removed_resources)
        except Rejected as exc:
            self.rejected = str(exc)
            return [discovery_pb2.DeltaDiscoveryRequest(
                type_url=types.SECRET, response_nonce=response.nonce,
                error_detail=status_pb2.Status(code=INVALID_ARGUMENT, message=str(exc)))]
        self.rejected = ""
        return [discovery_pb2.DeltaDiscoveryRequest(type_url=types.SECRET,
                                                    response_nonce=response.nonce)]

    def ready(self) -> str:
        missing = (self.subscribed - self.always) - {
            n for n, s in self.state.secrets.items() if s}
        return f"certificates not received yet: {', '.join(sorted(missing))}" \
            if missing else ""
