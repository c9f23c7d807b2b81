"""ztunnel's side of its Workload Discovery stream, sans-IO: delta responses in, requests out.

As ztunnel subscribes (without on-demand discovery): both of its types by wildcard on the
first request of each stream, naming what it already holds (``initial_resource_versions``)
so that a reconnection sends only what changed. Every response is ACKed with its nonce, or
NACKed with an ``error_detail`` naming the resource the state refused; what it took before
that resource stays (ztunnel applies resources one by one too).

The messages are ``discovery_wire``'s: Envoy's with only the fields ztunnel uses, the same
bytes on the wire (see ``discovery.proto``), decoded and encoded by ``core/protowire.py``
rather than the protobuf runtime.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from pilotfish.core.ambient.state import StateError, WorkloadState
from pilotfish.core.xds import types
from pilotfish.core.xds.delta_client import DeltaRequests
from pilotfish.core.ztunnel import discovery_wire

TYPES = (types.ADDRESS, types.AUTHORIZATION)
INVALID_ARGUMENT = 3


@attrs.define
class WdsSession(DeltaRequests):
    request_type: ClassVar[type[discovery_wire.DeltaDiscoveryRequest]] = \
        discovery_wire.DeltaDiscoveryRequest
    node: discovery_wire.Node
    state: WorkloadState
    held: dict[str, set[str]] = attrs.field(factory=lambda: {t: set() for t in TYPES})
    answered: set[str] = attrs.field(factory=set)
    rejected: dict[str, str] = attrs.field(factory=dict)  # type → last NACK's detail
    _sent_node: bool = False

    def start(self) -> list[discovery_wire.DeltaDiscoveryRequest]:
        self._sent_node = False
        return [self._request(t, initial_resource_versions=dict.fromkeys(self.held[t], ""))
                for t in TYPES]

    def receive(self, response: discovery_wire.DeltaDiscoveryResponse
                ) -> list[discovery_wire.DeltaDiscoveryRequest]:
        type_url = response.type_url
        held = self.held.setdefault(type_url, set())
        try:
            if type_url not in TYPES:
                raise StateError(f"{type_url}: not a type ztunnel subscribes to")
            for name in response.removed_resources:
                self.state.apply(type_url, name, None)
                held.discard(name)
            for resource in response.resources:
                if resource.resource.type_url and resource.resource.type_url != type_url:
                    raise StateError(f"{resource.name}: a {resource.resource.type_url} in a "
                                     f"{type_url} response")
                self.state.apply(type_url, resource.name, resource.resource.value)
                held.add(resource.name)
        except StateError as exc:
            self.rejected[type_url] = str(exc)
            return [self._request(type_url, response_nonce=response.nonce,
                                  error_detail=discovery_wire.Status(code=INVALID_ARGUMENT,
                                                                 message=str(exc)))]
        self.rejected.pop(type_url, None)
        self.answered.add(type_url)
        return [self._request(type_url, response_nonce=response.nonce)]

    def ready(self) -> str:
        """Why ztunnel does not know the mesh yet ("" once it does)."""
        missing = [types.short(t) for t in TYPES if t not in self.answered]
        return f"no {', '.join(missing)} from discovery yet" if missing else ""
