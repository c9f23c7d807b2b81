"""What core asks of an interceptor (group ``pilotfish.interceptors``), and what it hands one.

An interceptor puts a pod's traffic into its proxy. Core describes the pod with
``PodFacts`` — what Kubernetes would know about it: annotations, labels, whether it has a
sidecar, the proxy container's environment and user — and the interceptor turns that into
capture for the pod's network namespace. ``plan`` is pure (it says what ``apply`` would do,
as text a person can read, or that this interceptor leaves the pod alone); ``apply`` and
``remove`` touch the namespace and are safe to repeat: applying twice changes nothing,
removing what is not there is not an error; ``check`` says what differs from the plan.

A profile may activate several interceptors (a sidecar one, an ambient one): the caller
hands a pod to the first whose ``plan`` is not ``None`` (``first_capturing``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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
    # Ambient mode's needs: ztunnel is told who the pod is (its UID, its service account), and
    # a namespace label may enroll every pod in it.
    uid: str = ""  # Kubernetes metadata.uid (CNI_ARGS K8S_POD_UID)
    service_account: str = "default"
    namespace_labels: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_map)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


RUNTIMES = ("cni", "init")


def _check_runtime(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in RUNTIMES:
        raise ValueError(f"{attribute.name}: expected one of {', '.join(RUNTIMES)}, "
                         f"got {value!r}")


@attrs.frozen(kw_only=True)
class InterceptorSettings:
    """Where an interceptor is asked to work (handed to ``pilotfish_interceptor``).

    ``runtime`` is who installs the capture, which changes Istio's defaults: ``"cni"`` at
    pod creation by ``pilotfish-cni`` (Istio CNI's rules), ``"init"`` as the injector's
    ``istio-init`` container would. ``environ`` is the installing process's environment,
    where Istio reads node-wide overrides (not the pod's).
    """

    runtime: str = attrs.field(default="cni", validator=_check_runtime)
    environ: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_map)


class InterceptorError(RuntimeError):
    """Capture could not be planned or put in place; the message names the pod, the network
    namespace and the failing step."""


@runtime_checkable
class Interceptor(Protocol):
    name: str

    def plan(self, pod: PodFacts) -> str | None:
        """What ``apply`` would install, as text; ``None`` when this interceptor does not
        capture the pod. Raises ``InterceptorError`` for facts it cannot use (a bad
        annotation), naming the pod and the field."""
        ...

    def skip_reason(self, pod: PodFacts) -> str:
        """Why ``plan`` is ``None`` for the pod, for the log ("" when it is captured)."""
        ...

    async def apply(self, pod: PodFacts, netns: str) -> None:
        """Install (or confirm) the pod's capture inside ``netns`` (a path or a name)."""
        ...

    async def remove(self, pod: PodFacts, netns: str) -> None:
        """Take the pod's capture out of ``netns``; nothing left is not an error. Must work
        even when the pod's facts are unusable (then remove everything of its own)."""
        ...

    async def check(self, pod: PodFacts, netns: str) -> list[str]:
        """Why what is installed in ``netns`` is not the pod's plan (a captured pod); ``[]``
        when it is exactly in place."""
        ...


def first_capturing(interceptors: Sequence[Interceptor], pod: PodFacts
                    ) -> Interceptor | None:
    """The interceptor that captures ``pod``: the first, in profile order, with a plan."""
    for interceptor in interceptors:
        if interceptor.plan(pod) is not None:
            return interceptor
    return None
