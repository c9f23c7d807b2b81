"""The Kubernetes source against the fake API server, through the official client: the
server in a thread of its own (``api``, ``client`` and ``core`` come from the unit tests'
conftest), the source with its store in another (a blocking portal), the test driving the
cluster through the client as a user would."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import anyio.from_thread
import attrs
import kubernetes
import pytest

from pilotfish.core.objects import ConfigKey, ConfigObject
from pilotfish.core.store import ConfigStore, StoreUpdate
from pilotfish.plugins.kube.source import KubernetesSource
from pilotfish.testing.kube import FakeKubeApi
from pilotfish.testing.kube import crds as kube_crds
from pilotfish.testing.processes import wait_until
from pilotfish.validation import make_kinds, make_validator

T = TypeVar("T")


@attrs.define
class Running:
    """A source feeding its store; read the store through ``on_loop`` (it lives there)."""

    source: KubernetesSource
    store: ConfigStore
    portal: anyio.from_thread.BlockingPortal
    updates: list[StoreUpdate] = attrs.Factory(list)

    def on_loop(self, fn: Callable[..., T], *args: Any) -> T:
        return self.portal.call(fn, *args)

    def get(self, kind: str, namespace: str, name: str) -> ConfigObject | None:
        return self.on_loop(self.store.get, ConfigKey(kind, namespace, name))

    def wait(self, check: Callable[[], T | None], what: str, timeout: float = 5.0) -> T:
        return wait_until(check, timeout, interval=0.01, what=what)

    def statistics(self) -> dict[str, Any]:
        return self.on_loop(self.source.statistics)


@contextlib.contextmanager
def running_source(api: FakeKubeApi, **options: Any) -> Iterator[Running]:
    store = ConfigStore(make_validator(), make_kinds())
    source = KubernetesSource(api.kubeconfig, **options)
    with anyio.from_thread.start_blocking_portal() as portal:
        found = Running(source, store, portal)
        portal.call(store.subscribe, found.updates.append)
        future, _ = portal.start_task(source.run, store)
        try:
            yield found
        finally:
            future.cancel()


@pytest.fixture
def custom(client: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(client)


@pytest.fixture
def crds(client: kubernetes.client.ApiClient) -> Callable[..., None]:
    """Install the CRDs of the custom kinds pilotfish reads (all, or those named)."""
    return functools.partial(kube_crds.install, client)
