"""Config sources: what feeds the store (a directory of files, a Kubernetes API server)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import anyio.abc
import attrs

from pilotfish.core.store import ConfigStore
from pilotfish.core.yamlload import DEFAULT_LIMITS, LoadLimits


@attrs.frozen
class SourceSettings:
    """What the command line asked for; each source plugin takes the part it understands."""

    config_dir: Path | None = None
    watch: bool = True
    # Seconds of quiet before a burst of file events is read (editors write in steps).
    file_debounce: float = 0.05
    limits: LoadLimits = DEFAULT_LIMITS  # what one config file may hold (mesh config)
    # A Kubernetes API server: a kubeconfig (and its context), or the pod's own cluster.
    kubeconfig: Path | None = None
    kube_context: str | None = None
    in_cluster: bool = False
    # Where the mesh's own objects live (the ``istio`` mesh config ConfigMap).
    root_namespace: str = "istio-system"


@runtime_checkable
class ConfigSource(Protocol):
    name: str

    async def run(
        self, store: ConfigStore, *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Load everything into the store, call ``task_status.started()``, then keep the
        store up to date until cancelled."""
        ...
