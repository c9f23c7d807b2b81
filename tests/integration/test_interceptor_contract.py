"""Every installed interceptor keeps the contract core relies on, in a real network namespace.

Parametrized over the entry points in ``pilotfish.interceptors``: an interceptor a
distribution adds is held to the same suite (``pilotfish.testing.interceptors``), loaded the
way ``pilotfish-cni`` loads it, through the plugin manager, for both runtimes.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import attrs
import pytest

from pilotfish.core import plugins
from pilotfish.core.interceptor import InterceptorSettings
from pilotfish.node.cni_agent import CniAgent
from pilotfish.testing.interceptors import AMBIENT_POD, check_interceptor

INSTALLED = sorted(plugins.installed("interceptors"))


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"pf-ic-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_the_built_in_interceptors_are_installed():
    assert {"iptables", "ztunnel-sockets"} <= set(INSTALLED)


@pytest.mark.parametrize("runtime", ["cni", "init"])
@pytest.mark.parametrize("name", INSTALLED)
def test_installed_interceptor_keeps_the_contract(name: str, runtime: str, netns: str,
                                                  tmp_path: Path):
    environ = {"PILOTFISH_CNI_EVENTS_SOCKET": str(tmp_path / "pluginevent.sock")}
    active = plugins.Plugins([plugins.installed("interceptors")[name]])
    (interceptor,) = active.interceptors(InterceptorSettings(runtime=runtime, environ=environ))
    assert interceptor.name == name
    if name != "ztunnel-sockets":
        anyio.run(check_interceptor, interceptor, netns)
        return

    async def with_the_node_agent() -> None:
        # ztunnel-sockets hands pods to the CNI node agent, which writes their rules.
        agent = CniAgent(tmp_path / "ztunnel.sock", environ["PILOTFISH_CNI_EVENTS_SOCKET"])
        async with anyio.create_task_group() as tasks:
            await tasks.start(agent.run)
            await check_interceptor(interceptor, netns, AMBIENT_POD,
                                    plain=attrs.evolve(AMBIENT_POD, labels={}))
            tasks.cancel_scope.cancel()
    anyio.run(with_the_node_agent)
