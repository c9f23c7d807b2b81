"""The native proxy's callback path: a plain HTTP/1.1 request served from the protocols'
callbacks, with no task wake-up and no future.

The serving task of a downstream connection (`NativeProxy._http`) waits in
`Http1Connection.next`; meanwhile the connection hands each whole request to a
:class:`FastServer` from ``data_received``. One whose route runs no HTTP filter, with its
body whole (not streamed) and no upgrade, is routed (`NativeProxy._plan`), sent on an idle
pooled HTTP/1.1 connection (`Http1Connection.send`), and its answer written downstream
from that connection's ``data_received``. What this path cannot finish it hands to the
task part way (`forwarding.Handed`) and the task's own code goes on from there:

- before sending: an HTTP/2 or hashed cluster, a circuit breaker that says no, no idle
  pooled connection (connecting and waiting as a pending request need the task);
- after sending: a failed try (reset, closed, timed out: the retry policy decides in
  `NativeProxy._forward`), a status the policy retries, an answer long enough to stream.

Both paths end a try in `NativeProxy._exchanged` (outlier detection, the pool) and a
request in `NativeProxy._answered` / `_finished` (stats, access log, Istio's metrics), so
the outcomes are the same whichever path served it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from pilotfish.core.native import http1, http1_codec, http_filters, rbac
from pilotfish.core.native.bodies import STREAM_OVER
from pilotfish.core.native.config import HttpManager
from pilotfish.core.native.connection import Http1Connection, Result
from pilotfish.core.native.forwarding import (
    Handed,
    Plan,
    Tried,
    UpstreamFailed,
    speaks_h2,
    try_limit,
)
from pilotfish.core.native.pool import pool_key
from pilotfish.core.native.sockets import UpstreamSource
from pilotfish.core.native.telemetry import Outcome
from pilotfish.core.native.upstreams import HASHED, Upstream

if TYPE_CHECKING:
    from pilotfish.core.native.proxy import NativeProxy

log = logging.getLogger("pilotfish.native")

_NO_PEER = rbac.Facts()


class FastServer:
    """Serves one downstream connection's plain requests from its callbacks, one at a
    time (the connection holds the next until this one's answer is written). Called with
    a whole request: True when it took it, False to leave it to the task untouched."""

    __slots__ = ("_answered", "_config", "_connection", "_destination", "_facts", "_host",
                 "_key", "_local", "_origin", "_peer", "_plan", "_proxy", "_remote",
                 "_request", "_scheme", "_started", "_total", "_upstream",
                 "_upstream_connection")

    def __init__(self, proxy: NativeProxy, config: HttpManager, connection: Http1Connection,
                 scheme: str, destination: tuple[str, int] | None,
                 peer: rbac.Facts | None, origin: UpstreamSource | None,
                 remote: str, local: str) -> None:
        self._proxy, self._config, self._connection = proxy, config, connection
        self._scheme, self._destination, self._origin = scheme, destination, origin
        self._peer, self._facts = peer, peer or _NO_PEER
        self._remote, self._local = remote, local
        self._total = f"http.{config.stat_prefix}.downstream_rq_total"
        self._answered = self.answered  # (bound once, not once a request)
        # the request in flight
        self._request: http1.Message | None = None
        self._plan: Plan | None = None
        self._started = 0.0
        self._upstream: Upstream | None = None
        self._upstream_connection: Http1Connection | None = None
        self._key: tuple[Any, ...] = ()
        self._host: tuple[str, int] = ("", 0)

    def __call__(self, request: http1.Message) -> bool:
        if request.upgrade is not None or request.method == "CONNECT":
            return False
        proxy, config = self._proxy, self._config
        routed = time.monotonic()
        decision = proxy._route(config, request, self._scheme)
        if config.filters and not http_filters.idle(
                config.filters, decision.per_filter if decision else {}):
            return False  # (routed again by the task: filters run before the plan)
        proxy.stats.inc(self._total)
        proxy.fast_taken += 1
        self._request, self._started = request, time.time()
        try:
            planned = proxy._plan(config, request, decision, self._scheme, self._facts, (),
                                  "-", routed, self._origin)
            if isinstance(planned, Plan):
                self._plan = planned
                self._send(planned)
            else:  # the proxy's own answer (no route, a redirect, a direct response)
                self._reply(planned[0], planned[1])
        except Exception:  # one request's bug must not leave its connection hanging
            self._broke()
        return True

    def _send(self, plan: Plan) -> None:
        """The first try, on an idle pooled connection; else the task makes it."""
        proxy, cluster, outgoing = self._proxy, plan.cluster, plan.outgoing
        if cluster.lb in HASHED or speaks_h2(cluster, outgoing):
            self._hand_back(None)
            return
        upstream = proxy._upstream(cluster)
        if not upstream.breaker.start_request():
            self._hand_back(None)  # (the task counts the overflow and answers it)
            return
        endpoint = proxy._pick(cluster, set(), self._destination, None, upstream)
        connection = None
        if endpoint is not None:
            key = pool_key(cluster.name, (endpoint.host, endpoint.port), self._origin)
            connection = proxy.pool.take(key, cluster.idle_timeout,
                                         cluster.max_connection_duration)
        if connection is None or endpoint is None:
            upstream.breaker.end_request()
            proxy._release(cluster.name)
            self._hand_back(None)
            return
        self._upstream, self._upstream_connection, self._key = upstream, connection, key
        host = self._host = (endpoint.host, endpoint.port)
        upstream.balancer.started(host)
        action = plan.action
        retry = action.retry
        connection.send(http1_codec.request_bytes(outgoing), self._answered,
                        outgoing.method == "HEAD",
                        try_limit(action.timeout, retry.per_try_timeout if retry else 0.0),
                        STREAM_OVER)

    def answered(self, result: Result) -> None:
        """The first try's end, from the upstream connection's callbacks."""
        proxy, plan, upstream = self._proxy, self._plan, self._upstream
        connection = self._upstream_connection
        assert plan is not None and upstream is not None and connection is not None
        self._upstream = self._upstream_connection = None
        cluster, host = plan.cluster, self._host
        try:
            upstream.balancer.finished(host)
            try:
                response = proxy._exchanged(cluster, upstream, plan.outgoing, connection,
                                            self._key, host, result)
            finally:
                upstream.breaker.end_request()
                proxy._release(cluster.name)
            retry = plan.action.retry
            if response.streamed or (retry is not None and retry.num_retries and
                                     retry.retries_status(response.status)):
                self._hand_back((response, host))
                return
            self._reply(*proxy._answered(self._config, plan, response, host, self._facts))
        except UpstreamFailed as exc:
            self._hand_back(exc)
        except Exception:
            self._broke()

    def _reply(self, response: http1.Message, outcome: Outcome) -> None:
        """The answer downstream, then the request's end: as the task's path does it."""
        request, connection = self._request, self._connection
        assert request is not None
        self._request = self._plan = None
        connection.write(http1_codec.response_bytes(response, "", request.method == "HEAD"))
        if connection.is_closing():  # the client left: nothing to count (as a failed drain)
            connection.finish()
            return
        self._proxy._finished(self._config, request, outcome, self._started, self._remote,
                              self._local, self._peer)
        if not outcome.keep or not request.keep_alive:
            connection.finish()
        else:
            connection.served()

    def _hand_back(self, first: Tried | None) -> None:
        """The task finishes the request in flight, from its first try's end."""
        request, plan = self._request, self._plan
        assert request is not None and plan is not None
        self._request = self._plan = None
        connection = self._connection
        if connection.is_closing():  # nobody is left to answer
            if isinstance(first, tuple) and first[0].body_source is not None:
                first[0].body_source.close()
            connection.finish()
            return
        self._proxy.fast_handed += 1
        connection.hand_back(Handed(request, plan, self._started, first,
                                    {self._host} if first is not None else set()))

    def _broke(self) -> None:
        log.exception("the callback path failed a request; its connection is closed")
        self._request = self._plan = None
        self._connection.finish()
