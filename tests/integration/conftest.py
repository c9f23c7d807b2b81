"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import attrs
import kubernetes
import pytest

from pilotfish.testing.kube import FakeKubeApi, crds, running
from pilotfish.testing.mesh import LocalMesh


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    """A local mesh in the test's own folder, stopped after the test (a module may keep
    one for all its tests with a ``mesh`` fixture of its own)."""
    local = LocalMesh(tmp_path)
    try:
        yield local
    finally:
        local.stop()


@attrs.frozen
class KubeCluster:
    """The test kit's API server and the official client's APIs for it."""

    api: FakeKubeApi
    client: kubernetes.client.ApiClient
    core: kubernetes.client.CoreV1Api
    custom: kubernetes.client.CustomObjectsApi


@pytest.fixture
def kube_cluster(tmp_path: Path) -> Iterator[KubeCluster]:
    """A fake cluster serving every kind the store accepts (a CRD each), with discovery's
    namespace ``istio-system``; its API server and client end with the test."""
    with running(tmp_path / "api") as api, \
            kubernetes.config.new_client_from_config(str(api.kubeconfig)) as client:
        crds.install(client)
        core = kubernetes.client.CoreV1Api(client)
        core.create_namespace({"metadata": {"name": "istio-system"}})
        yield KubeCluster(api, client, core, kubernetes.client.CustomObjectsApi(client))
