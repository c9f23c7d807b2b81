"""Connections to internal listeners (Envoy's ``envoy_internal_address``), in process.

A cluster endpoint at an internal address names one of this proxy's own listeners. The
connection to it is a connected pair of sockets (``socket.socketpair``: the kernel's
buffers, no port, nothing reachable from outside the process): the upstream side goes to
the code that connected, the other is served by the listener as if it had accepted it.
What a socket cannot carry travels beside it in a :class:`Handoff`: the filter state the
connecting side shares with its upstream and the host metadata the cluster's
``internal_upstream`` transport passes through, from which the listener's original
destination filter restores the addresses (`filter_state.restored`).

The connecting side waits for the listener's verdict (:meth:`Handoff.wait_accepted`):
a listener with no chain for the connection refuses it before a byte moves, so an HTTP
CONNECT that led there is answered 503, as Envoy answers it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping

import attrs

from pilotfish.core.native import filter_state
from pilotfish.core.native.config import Cluster, Endpoint


@attrs.define
class Handoff:
    """What travels with one internal connection to its listener."""

    listener: str
    state: dict[str, filter_state.Value]  # the connecting side's state shared upstream
    metadata: Mapping[str, Mapping[str, str]]  # the host's metadata passed through
    source: tuple[str, int] = ("", 0)  # the connecting side's downstream address
    accepted: asyncio.Future[bool] | None = None

    def answer(self, accepted: bool) -> None:
        """The listener's verdict (only the first counts)."""
        if self.accepted is not None and not self.accepted.done():
            self.accepted.set_result(accepted)

    async def wait_accepted(self, timeout: float) -> bool:
        assert self.accepted is not None
        try:
            return await asyncio.wait_for(asyncio.shield(self.accepted), timeout)
        except TimeoutError:
            return False

    def restored(self) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
        return filter_state.restored(self.state, self.metadata)


def handoff(cluster: Cluster, endpoint: Endpoint, shared: filter_state.State,
            source: tuple[str, int] = ("", 0)) -> Handoff:
    """The handoff for a connection from ``cluster`` to its internal ``endpoint``: the
    state the downstream shares, the endpoint's metadata in the namespaces passed through."""
    passed = set(cluster.passthrough_for(endpoint) or ())
    metadata: dict[str, dict[str, str]] = {}
    for namespace, key, value in endpoint.metadata:
        if namespace in passed:
            metadata.setdefault(namespace, {})[key] = value
    return Handoff(endpoint.internal, filter_state.upstream_share(shared), metadata, source,
                   asyncio.get_running_loop().create_future())


def pair() -> tuple[socket.socket, socket.socket]:
    """(the connecting side, the listener's side), both non-blocking."""
    upstream, downstream = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    upstream.setblocking(False)
    downstream.setblocking(False)
    return upstream, downstream
