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
