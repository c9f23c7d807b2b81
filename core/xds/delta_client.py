"""What every delta xDS client's requests share, for the clients pilotfish runs (the
native proxy's ADS and SDS sessions, ztunnel's WDS session). Kept apart from the native
proxy's config so that ztunnel does not load Envoy's listener and cluster types for it."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2


class DeltaRequests:
    """What every delta session's requests share: the node rides on a stream's first request
    only, as Envoy sends it (``start`` clears ``_sent_node`` for a new stream). Mixed into
    attrs classes that hold ``node`` and ``_sent_node``; ztunnel's WDS session uses it too."""

    node: base_pb2.Node
    _sent_node: bool

    def _request(self, type_url: str, **fields: object) -> discovery_pb2.DeltaDiscoveryRequest:
        request = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, **fields)
        if not self._sent_node:
            request.node.CopyFrom(self.node)
            self._sent_node = True
        return request
