"""The status server's request rules that need no proxy."""

from __future__ import annotations

import pytest

from pilotfish.agent.status_server import is_local
from pilotfish.core.http import Request


@pytest.mark.parametrize(("peer", "local"), [
    ("127.0.0.1:41000", True),
    ("127.0.0.6:41000", True),
    ("[::1]:41000", True),
    ("[::ffff:127.0.0.1]:41000", True),
    ("10.0.0.5:41000", False),
    ("[fd00::5]:41000", False),
    ("", False),
    ("garbage", False),
])
def test_controls_accept_loopback_peers_only(peer: str, local: bool) -> None:
    assert is_local(Request("GET", "/", {}, {}, peer=peer).peer_host) is local


class _NoProxy:
    """A proxy admin that must not be asked: refused requests never reach the proxy."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the proxy was asked for {name}")


class _Control:
    draining = False

    def request_stop(self) -> None:
        raise AssertionError("not expected")

    async def drain(self) -> None:
        raise AssertionError("not expected")


def test_config_dump_is_a_get_for_localhost_only() -> None:
    import anyio

    from pilotfish.agent.merged_metrics import MergedMetrics
    from pilotfish.agent.status_server import StatusPorts, StatusServer

    admin = _NoProxy()
    server = StatusServer(StatusPorts(), _Control(), admin,  # type: ignore[arg-type]
                          MergedMetrics(admin))  # type: ignore[arg-type]
    remote = Request("GET", "/config_dump", {}, {}, peer="10.0.0.5:41000")
    assert anyio.run(server.config_dump, remote).status == 403
    post = Request("POST", "/config_dump", {}, {}, peer="127.0.0.1:41000")
    assert anyio.run(server.config_dump, post).status == 405
