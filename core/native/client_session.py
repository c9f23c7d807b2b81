"""The native proxy's side of a delta ADS stream, sans-IO: responses in, requests out.

As Envoy subscribes: clusters and listeners by wildcard on the first requests; then, as
accepted clusters and listeners name them, the endpoints of every EDS cluster and the route
tables of every HTTP connection manager by name (unsubscribing from names no longer used).
Every response is ACKed with its nonce, or NACKed with an ``error_detail`` saying which
resource, field and type the proxy refused (the state then keeps its last good config).
The session knows nothing of gRPC; ``xds_client`` moves its messages.
"""

from __future__ import annotations

import attrs
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from pilotfish.core.native.config import ConfigState, Rejected
from pilotfish.core.xds import types

INVALID_ARGUMENT = 3
WILDCARD = (types.CLUSTER, types.LISTENER)  # as types.WILDCARD_TYPES, in this order
BY_NAME = {types.ENDPOINT: ConfigState.eds_names, types.ROUTE: ConfigState.rds_names}


@attrs.define
class DeltaClientSession:
    node: base_pb2.Node
    state: ConfigState
    subscribed: dict[str, set[str]] = attrs.field(factory=lambda: {t: set() for t in BY_NAME})
    answered: set[str] = attrs.field(factory=set)  # types a response has come for
    rejected: dict[str, str] = attrs.field(factory=dict)  # type → last NACK's detail
    _sent_node: bool = False

    def _request(self, type_url: str, **fields: object) -> discovery_pb2.DeltaDiscoveryRequest:
        request = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, **fields)
        if not self._sent_node:
            request.node.CopyFrom(self.node)
            self._sent_node = True
        return request

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
        try:
            self.state.apply(type_url, [(r.name, r.resource.value)
                                        for r in response.resources],
                             response.removed_resources, response.system_version_info)
        except Rejected as exc:
            self.rejected[type_url] = str(exc)
            return [self._request(type_url, response_nonce=response.nonce,
                                  error_detail=status_pb2.Status(code=INVALID_ARGUMENT,
                                                                 message=str(exc)))]
        self.rejected.pop(type_url, None)
        self.answered.add(type_url)
        out = [self._request(type_url, response_nonce=response.nonce)]
        for follow, wanted in BY_NAME.items():
            names = wanted(self.state)
            have = self.subscribed[follow]
            if names != have:
                out.append(self._request(follow, resource_names_subscribe=sorted(names - have),
                                         resource_names_unsubscribe=sorted(have - names)))
                self.subscribed[follow] = names
        return out

    def ready(self) -> str:
        """Why the proxy does not hold a full configuration yet ("" once it does)."""
        for type_url in WILDCARD:
            if type_url not in self.answered:
                return f"no {types.short(type_url)} from discovery yet"
        missing = self.subscribed[types.ROUTE] - set(self.state.routes)
        if missing:
            return f"route tables not received yet: {', '.join(sorted(missing))}"
        return ""


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
