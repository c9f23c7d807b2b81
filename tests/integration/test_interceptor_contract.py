"""Every installed interceptor keeps the contract core relies on, in a real network namespace.

Parametrized over the entry points in ``pilotfish.interceptors``: an interceptor a
distribution adds is held to the same suite (``pilotfish.testing.interceptors``), loaded the
way ``pilotfish-cni`` loads it, through the plugin manager, for both runtimes.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import anyio
import pytest

from pilotfish.core import plugins
from pilotfish.core.interceptor import InterceptorSettings
from pilotfish.testing.interceptors import check_interceptor

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


def test_the_built_in_interceptor_is_installed():
    assert "iptables" in INSTALLED


@pytest.mark.parametrize("runtime", ["cni", "init"])
@pytest.mark.parametrize("name", INSTALLED)
def test_installed_interceptor_keeps_the_contract(name: str, runtime: str, netns: str):
    active = plugins.Plugins([plugins.installed("interceptors")[name]])
    (interceptor,) = active.interceptors(InterceptorSettings(runtime=runtime))
    assert interceptor.name == name
    anyio.run(check_interceptor, interceptor, netns)
