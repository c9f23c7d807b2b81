"""For the unit tests that talk to a Kubernetes API server (the fake one's own, the
Kubernetes source's): a fake API server per test, and the official client pointed at it by
its kubeconfig."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from pilotfish.testing.kube import FakeKubeApi, running


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FakeKubeApi]:
    with running(tmp_path) as server:
        yield server


@pytest.fixture
def client(api: FakeKubeApi) -> Iterator[kubernetes.client.ApiClient]:
    with kubernetes.config.new_client_from_config(str(api.kubeconfig)) as made:
        yield made


@pytest.fixture
def core(client: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(client)
