"""How the supervisor reports the way a proxy ended."""

from __future__ import annotations

import signal

import pytest

from pilotfish.agent import supervisor


@pytest.mark.parametrize(("returncode", "stop_requested", "status"), [
    (0, False, 0),
    (1, False, 1),
    (-signal.SIGSEGV, False, 128 + signal.SIGSEGV),
    (-signal.SIGTERM, True, 0),  # a proxy that simply dies on the SIGTERM we sent
    (-signal.SIGKILL, True, 128 + signal.SIGKILL),  # it had to be killed: say so
    (3, True, 3),
])
def test_exit_status(returncode: int, stop_requested: bool, status: int) -> None:
    assert supervisor.exit_status(returncode, stop_requested) == status
