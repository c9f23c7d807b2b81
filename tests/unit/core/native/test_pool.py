"""Pooled upstream connections: reused while idle for less than the idle timeout and open
for less than the cluster's max_connection_duration; keepalive set on upstream sockets."""

from __future__ import annotations

import socket

from pilotfish.core.native import http1_codec
from pilotfish.core.native.config import Keepalive
from pilotfish.core.native.connection import Http1Connection
from pilotfish.core.native.pool import Pool
from pilotfish.core.native.sockets import set_keepalive


class _Transport:
    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def connection(opened: float) -> Http1Connection:
    made = Http1Connection(http1_codec.Parser(response=True))
    made.transport = _Transport()  # type: ignore[assignment]
    made.opened = opened
    return made


def test_a_connection_open_longer_than_the_max_duration_is_not_reused() -> None:
    import time

    pool, host = Pool(), ("c", "10.0.0.1", 80)
    young, old = connection(time.monotonic()), connection(time.monotonic() - 120)
    pool.give(host, old)
    pool.give(host, young)
    assert pool.take(host, max_duration=60) is young
    assert pool.take(host, max_duration=60) is None  # the old one was closed, not handed out
    pool.give(host, old)
    assert pool.take(host) is old  # no limit set: any age


def test_keepalive_settings_reach_the_socket() -> None:
    with socket.socket() as sock:
        set_keepalive(sock, Keepalive(probes=3, time=30, interval=5))
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        assert (sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)) == (3, 30, 5)
