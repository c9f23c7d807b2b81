"""The agent with a real Envoy: bootstrap check, launch, admin API, signals, clean exit.

No discovery server runs: Envoy stays PRE_INITIALIZING, waiting for its first CDS/LDS,
which is enough to see that it took the bootstrap and that the agent runs it properly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pilotfish.core.proxy_backend import BootstrapError, ProxyOptions
from pilotfish.plugins.envoy.backend import EnvoyBackend, envoy_binary
from pilotfish.testing.processes import free_port

pytestmark = pytest.mark.envoy

# Envoy is part of the dev install (./dev): a missing binary fails loudly, never skips.
ENVOY = envoy_binary()


def options(config_dir: Path, **overrides: Any) -> ProxyOptions:
    values: dict[str, Any] = {
        "name": "web-1", "namespace": "shop", "ip": "10.0.0.5",
        "discovery_address": f"127.0.0.1:{free_port()}", "config_dir": config_dir,
        "labels": {"app": "web"}, "admin_port": free_port(),
    }
    values.update(overrides)
    return ProxyOptions(**values)


def admin_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:  # /ready answers 503 until initialized
        return exc.code, exc.read().decode()


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name may hold spaces; fields after it are fixed.
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


class Agent:
    """``python -m pilotfish.agent.command`` in a subprocess, with its Envoy's pid."""

    def __init__(self, tmp_path: Path, name: str, *extra: str, admin_port: int = 0) -> None:
        self.admin_port = admin_port or free_port()
        self.log = tmp_path / f"{name}.log"
        argv = [
            sys.executable, "-m", "pilotfish.agent.command", "--name", name, "--namespace", "shop",
            "--ip", "10.0.0.5", "--labels", "app=web,version=v1",
            "--discovery", f"127.0.0.1:{free_port()}", "--admin-port", str(self.admin_port),
            "--config-dir", str(tmp_path / name), "--pod-ports", "http:8080",
            "--termination-drain-duration", "1s",
            # Istio's fixed ports would collide between agents sharing this host.
            "--status-port", "0", "--health-port", "0", "--prometheus-port", "0", *extra,
        ]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self.envoy_pid = 0

    def wait_admin(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"agent exited with {self.process.returncode}:\n{self.output()}")
            try:
                admin_get(self.admin_port, "/ready")
            except OSError:
                time.sleep(0.1)
                continue
            [self.envoy_pid] = children(self.process.pid)
            return
        pytest.fail(f"Envoy's admin API never answered:\n{self.output()}")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def cleanup(self) -> None:
        for pid in (self.process.pid, self.envoy_pid):
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(10)


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Any]:
    started: list[Agent] = []

    def start(name: str = "web-1", *extra: str) -> Agent:
        agent = Agent(tmp_path, name, *extra)
        started.append(agent)
        agent.wait_admin()
        return agent

    yield start
    for agent in started:
        agent.cleanup()


@pytest.mark.parametrize("mode", ["delta", "sotw"])
def test_envoy_accepts_the_bootstrap(tmp_path: Path, mode: str) -> None:
    backend = EnvoyBackend()
    for discovery in ("127.0.0.1:15010", "localhost:15010"):
        opts = options(tmp_path, xds_mode=mode, discovery_address=discovery)
        backend.check(backend.write_bootstrap(opts))


def test_envoy_accepts_the_bootstrap_with_xds_over_mtls(tmp_path: Path) -> None:
    backend = EnvoyBackend()
    backend.check(backend.write_bootstrap(options(tmp_path, xds_tls=True)))


def test_envoy_rejects_a_broken_bootstrap_in_its_own_words(tmp_path: Path) -> None:
    backend = EnvoyBackend()
    path = backend.write_bootstrap(options(tmp_path))
    config = json.loads(path.read_text())
    config["static_resources"]["clusters"][0]["connect_timeout"] = "soon"
    path.write_text(json.dumps(config))
    with pytest.raises(BootstrapError) as caught:
        backend.check(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: Envoy rejected the bootstrap")
    assert "critical: error initializing configuration" in message
    assert "soon" in message  # Envoy's own complaint about the field


def test_agent_runs_envoy_and_stops_it_on_sigterm(start_agent: Any) -> None:
    agent = start_agent("web-1")
    _, body = admin_get(agent.admin_port, "/ready")
    assert body.strip() in ("PRE_INITIALIZING", "LIVE")  # no discovery, so not ready

    _, body = admin_get(agent.admin_port, "/server_info")
    info = json.loads(body)
    node = info["node"]
    assert node["id"] == "sidecar~10.0.0.5~web-1.shop~shop.svc.cluster.local"
    assert node["cluster"] == "web.shop"
    meta = node["metadata"]
    assert meta["NAMESPACE"] == "shop"
    assert meta["LABELS"] == {"app": "web", "version": "v1"}
    assert meta["PILOTFISH_ADMIN"] == f"127.0.0.1:{agent.admin_port}"
    assert json.loads(meta["POD_PORTS"]) == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    ]
    assert info["command_line_options"]["disable_hot_restart"] is True

    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0, agent.output()
    assert not alive(agent.envoy_pid)
    assert "draining envoy" in agent.output()
    assert "could not drain" not in agent.output()


def test_router_and_sidecar_run_side_by_side(start_agent: Any) -> None:
    sidecar = start_agent("web-2")
    router = start_agent("gateway", "--type", "router", "--xds-mode", "sotw")
    _, body = admin_get(router.admin_port, "/server_info")
    assert json.loads(body)["node"]["id"].startswith("router~")
    assert admin_get(sidecar.admin_port, "/server_info")[0] == 200

    for agent in (sidecar, router):
        agent.signal(signal.SIGINT)
    for agent in (sidecar, router):
        assert agent.wait() == 0, agent.output()
        assert not alive(agent.envoy_pid)


def test_sighup_is_passed_on_and_a_second_sigterm_cuts_the_drain_short(
    start_agent: Any,
) -> None:
    agent = start_agent("web-3", "--termination-drain-duration", "1h")
    agent.signal(signal.SIGHUP)  # Envoy logs it and carries on
    time.sleep(0.5)
    assert agent.process.poll() is None
    assert admin_get(agent.admin_port, "/ready")[0] in (200, 503)

    agent.signal(signal.SIGTERM)
    time.sleep(0.5)
    assert agent.process.poll() is None  # draining, for up to an hour
    agent.signal(signal.SIGTERM)
    assert agent.wait(timeout=20) == 0, agent.output()
    assert not alive(agent.envoy_pid)
    assert "caught and eating SIGHUP" in agent.output()


def test_agent_exits_with_envoys_status(start_agent: Any) -> None:
    agent = start_agent("web-4")
    os.kill(agent.envoy_pid, signal.SIGKILL)
    assert agent.wait() == 128 + signal.SIGKILL
    assert "envoy exited with status -9" in agent.output()


def test_envoy_dies_with_a_killed_agent_and_the_next_agent_starts(start_agent: Any,
                                                                  tmp_path: Path) -> None:
    """kill -9 of the agent used to orphan Envoy on its admin port: the next agent on the
    node could not start. Envoy now gets SIGTERM from the kernel when the agent dies."""
    first = start_agent("web-5")
    os.kill(first.process.pid, signal.SIGKILL)
    first.wait()
    deadline = time.monotonic() + 10
    while alive(first.envoy_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(first.envoy_pid), "Envoy outlived its killed agent"
    # The same name, config dir and admin port: the next agent starts and serves.
    second = Agent(tmp_path, "web-5", admin_port=first.admin_port)
    try:
        second.wait_admin()
        assert admin_get(first.admin_port, "/ready")[0] in (200, 503)
    finally:
        second.cleanup()
