"""Upstream HTTP/1.1 connections kept for reuse, and a streamed answer's body that holds
its connection until it has all come.
"""

from __future__ import annotations

import time
from typing import Any

from pilotfish.core.native import http1
from pilotfish.core.native.connection import Http1Connection
from pilotfish.core.native.sockets import UpstreamSource

IDLE_TIMEOUT = 3600.0  # Envoy's default: an idle upstream connection is not reused after


def pool_key(cluster: str, host: tuple[str, int], origin: UpstreamSource | None = None
             ) -> tuple[Any, ...]:
    """Pooled upstream connections go by cluster and host, and under original_src by the
    client's address too (Envoy keeps a pool per source): a connection made from one
    client's address must not carry another client's requests."""
    return (cluster, *host) if origin is None else (cluster, *host, origin.address)


class Connecting:
    """A connection being made: it counts against max_connections already (as Envoy's)."""

    def __init__(self) -> None:
        self.done = False

    def is_closing(self) -> bool:
        return self.done


class Pool:
    """Idle upstream HTTP/1.1 connections by (cluster, host, port): a cluster's TLS is its
    own. A connection is reused while idle for less than the cluster's idle timeout (Envoy's
    hour, ``IDLE_TIMEOUT``, when it sets none), while its upstream has not closed it, and
    for no more requests than the cluster allows."""

    def __init__(self) -> None:
        self.idle: dict[tuple[Any, ...], list[tuple[float, Http1Connection]]] = {}
        self.used: dict[Http1Connection, int] = {}

    def take(self, host: tuple[Any, ...], idle_timeout: float = 0.0,
             max_duration: float = 0.0) -> Http1Connection | None:
        """An idle connection to reuse; one idle too long, open longer than
        ``max_duration`` (the cluster's ``max_connection_duration``) or closed by its
        upstream is closed instead."""
        now = time.monotonic()
        limit = idle_timeout or IDLE_TIMEOUT
        entries = self.idle.get(host) or []
        while entries:
            since, connection = entries.pop()
            if now - since < limit and not connection.is_closing() and not (
                    max_duration and now - connection.opened >= max_duration):
                return connection
            self.forget(connection)
            connection.close()
        return None

    def give(self, host: tuple[Any, ...], connection: Http1Connection,
             max_requests: int = 0) -> bool:
        """Keep ``connection`` for reuse unless it served its last request; False: close
        it."""
        used = self.used.get(connection, 0) + 1
        if max_requests and used >= max_requests:
            self.forget(connection)
            return False
        self.used[connection] = used
        self.idle.setdefault(host, []).append((time.monotonic(), connection))
        return True

    def forget(self, connection: Http1Connection) -> None:
        """``connection`` is not reused."""
        self.used.pop(connection, None)


class UpstreamBody:
    """The rest of a streamed answer's body, read from its upstream connection; the
    connection goes back to the pool once the body has all come, and is closed when it
    broke off or the rest is not wanted."""

    def __init__(self, pool: Pool, key: tuple[Any, ...], connection: Http1Connection,
                 keep: bool, max_requests: int) -> None:
        self.pool, self.key, self.connection = pool, key, connection
        self.keep, self.max_requests = keep, max_requests

    @property
    def taken(self) -> int:
        return self.connection.taken

    async def chunk(self) -> bytes:
        try:
            data = await self.connection.chunk()
        except (OSError, EOFError, http1.ParseError):
            self.close()
            raise
        if not data and not (self.keep and self.pool.give(self.key, self.connection,
                                                           self.max_requests)):
            self.close()
        return data

    def close(self) -> None:
        self.pool.forget(self.connection)
        self.connection.close()
