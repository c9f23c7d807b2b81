"""What every delta xDS client's requests share, for the clients pilotfish runs (the
native proxy's ADS and SDS sessions, ztunnel's WDS session). Kept apart from the native
proxy's config so that ztunnel does not load Envoy's listener and cluster types for it, and
free of Envoy's protos altogether: each session names its request type, ztunnel's being its
slim copy of Envoy's (``core/ztunnel/discovery.proto``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar


class DeltaRequests:
    """What every delta session's requests share: the node rides on a stream's first request
    only, as Envoy sends it (``start`` clears ``_sent_node`` for a new stream). Mixed into
    attrs classes that hold ``node`` and ``_sent_node`` and name their ``request_type``
    (a ``DeltaDiscoveryRequest`` with Envoy's field numbers)."""

    request_type: ClassVar[Callable[..., Any]]
    node: Any  # the request type's Node
    _sent_node: bool

    def _request(self, type_url: str, **fields: object) -> Any:
        if not self._sent_node:
            # Given to the constructor, which copies it with protobuf's classes and holds it
            # with protowire's: neither writes through an unset submessage.
            fields["node"] = self.node
            self._sent_node = True
        return self.request_type(type_url=type_url, **fields)
