"""What core asks of an interceptor (group ``pilotfish.interceptors``), and what it hands one.

An interceptor puts a pod's traffic into its proxy. Core describes the pod with
``PodFacts`` — what Kubernetes would know about it: annotations, labels, whether it has a
sidecar, the proxy container's environment and user — and the interceptor turns that into
capture for the pod's network namespace. ``plan`` is pure (it says what ``apply`` would do,
as text a person can read); ``apply`` and ``remove`` touch the namespace and are safe to
repeat: applying twice changes nothing, removing what is not there is not an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

import attrs


def _frozen_map(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return dict(value or {})


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _ints(value: Iterable[int]) -> tuple[int, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class PodFacts:
    """A pod as an interceptor sees it (no Kubernetes API needed)."""

    name: str
    namespace: str
    annotations: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_map)
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_map)
    sidecar: bool = False  # has an injected istio-proxy container
    container_ports: tuple[int, ...] = attrs.field(default=(), converter=_ints)
    proxy_env: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_map)
    run_as_user: int | None = None  # the proxy container's securityContext
    run_as_group: int | None = None
    ips: tuple[str, ...] = attrs.field(default=(), converter=_strings)  # the pod's addresses

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class InterceptorError(RuntimeError):
    """Capture could not be planned or put in place; the message names the pod, the network
    namespace and the failing step."""


@runtime_checkable
class Interceptor(Protocol):
    name: str

    def plan(self, pod: PodFacts) -> str | None:
        """What ``apply`` would install, as text; ``None`` when the pod is not captured."""
        ...

    async def apply(self, pod: PodFacts, netns: str) -> None:
        """Install (or confirm) the pod's capture inside ``netns`` (a path or a name)."""
        ...

    async def remove(self, pod: PodFacts, netns: str) -> None:
        """Take the pod's capture out of ``netns``; nothing left is not an error."""
        ...
