"""How the supervisor reports the way a proxy ended."""

from __future__ import annotations

import os
import signal

import anyio
import pytest

from pilotfish.agent import supervisor
from pilotfish.core.proxy_backend import ProxyOptions
from pilotfish.plugins.proxyless.backend import ProxylessGrpcBackend


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


def test_a_stale_proxy_on_this_bootstrap_is_stopped_and_nothing_else(tmp_path) -> None:
    import subprocess
    import sys

    bootstrap = tmp_path / "envoy-rev.json"
    bootstrap.write_text("{}")
    # A process that looks like the proxy a crashed agent left: running on this bootstrap.
    stale = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                              str(bootstrap)])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / supervisor.PID_FILE).write_text(f"{other.pid}\n")
        assert supervisor.stop_stale(tmp_path, bootstrap) is None  # a reused pid: left alone
        assert other.poll() is None
        assert not (tmp_path / supervisor.PID_FILE).exists()
        (tmp_path / supervisor.PID_FILE).write_text(f"{stale.pid}\n")
        assert supervisor.stop_stale(tmp_path, bootstrap) == stale.pid
        assert stale.wait(5) == -signal.SIGTERM
        assert not (tmp_path / supervisor.PID_FILE).exists()
        assert supervisor.stop_stale(tmp_path, bootstrap) is None  # nothing recorded
    finally:
        for process in (stale, other):
            process.kill()
            process.wait()


def test_the_proxy_is_started_to_die_with_the_agent() -> None:
    argv = supervisor.with_parent_death_signal(["envoy", "-c", "x.json"])
    assert argv[1:] == ["--pdeathsig", "SIGTERM", "--", "envoy", "-c", "x.json"]
    assert argv[0].endswith("setpriv")


def _proxyless(tmp_path) -> supervisor.Supervisor:
    options = ProxyOptions(name="client-1", namespace="grpc", ip="10.0.0.9",
                           discovery_address="127.0.0.1:15010", config_dir=tmp_path)
    backend = ProxylessGrpcBackend()
    return supervisor.Supervisor(backend, options, backend.write_bootstrap(options),
                                 termination_drain=30.0)


@pytest.mark.parametrize("stop", ["request", "SIGTERM"])
def test_a_backend_with_nothing_to_run_holds_until_stopped_then_exits_0(tmp_path, stop):
    held = _proxyless(tmp_path)

    async def main() -> int:
        async with anyio.create_task_group() as tg:
            result: list[int] = []

            async def run() -> None:
                result.append(await held.run())

            tg.start_soon(run)
            await anyio.sleep(0.2)
            assert not result  # still holding: nothing ended it
            if stop == "request":
                held.request_stop()
            else:
                os.kill(os.getpid(), signal.SIGTERM)
            with anyio.fail_after(2):  # no termination drain: nothing listens to drain
                while not result:
                    await anyio.sleep(0.01)
        return result[0]

    assert anyio.run(main) == 0
    assert held.draining  # readiness turns 503 on the way out
    assert not (tmp_path / supervisor.PID_FILE).exists()  # there was no process
