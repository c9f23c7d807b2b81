"""``pilotfish agent request``: the injected sidecar's preStop hook (``POST drain``) against
the agent's own status server."""

from __future__ import annotations

from collections.abc import Iterator

import anyio.abc
import anyio.from_thread
import pytest

from pilotfish.agent.merged_metrics import MergedMetrics
from pilotfish.agent.status_server import StatusPorts, StatusServer
from pilotfish.cli.main import main
from pilotfish.testing.processes import free_port


class Control:
    """The agent's side of a drain: records that it was asked."""

    draining = False

    def request_stop(self) -> None:
        raise AssertionError("not expected")

    async def drain(self) -> None:
        self.draining = True


@pytest.fixture
def agent() -> Iterator[tuple[int, Control]]:
    port, control = free_port(), Control()
    server = StatusServer(StatusPorts(status=port, health=0), control, None,  # type: ignore[arg-type]
                          MergedMetrics(None))  # type: ignore[arg-type]
    with anyio.from_thread.start_blocking_portal() as portal:
        portal.start_task(_serve, server)  # returns once the port is bound
        yield port, control
        portal.call(portal.stop, True)


async def _serve(server: StatusServer, *,
                 task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    async with anyio.create_task_group() as tg:
        await server.start(tg)
        task_status.started()


def test_the_prestop_hook_drains_the_agent(agent: tuple[int, Control], capsys):
    port, control = agent
    assert main(["agent", "request", f"--debug-port={port}", "POST", "drain"]) == 0
    assert control.draining
    assert capsys.readouterr().out


def test_an_error_answer_or_no_answer_is_exit_status_1(agent: tuple[int, Control], capsys):
    port, _ = agent
    assert main(["agent", "request", "--debug-port", str(port), "GET", "/drain"]) == 1
    assert f"GET http://127.0.0.1:{port}/drain: HTTP 405" in capsys.readouterr().err
    assert main(["agent", "request", "--debug-port", str(free_port()), "POST", "drain"]) == 1
    assert "Connection refused" in capsys.readouterr().err
