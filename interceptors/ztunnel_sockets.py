"""The ``ztunnel-sockets`` interceptor: ambient capture, handed to the CNI node agent.

Registered through the entry point ``ztunnel-sockets`` in group ``pilotfish.interceptors``;
the ``ambient`` profile activates it. It captures the pods ambient mode enrolls
(``core/ambient/enrollment.py``: the pod's or its namespace's ``istio.io/dataplane-mode:
ambient``, no sidecar, not opted out) and plans nothing for any other pod, so that, listed
before ``iptables``, a sidecar pod still goes to the sidecar interceptor (``first_capturing``).

Its plan is the pod's in-pod rules (``ambient_rules``). ``apply`` and ``remove`` do not write
them: as with Istio, the short-lived CNI plugin posts the pod to the long-lived node agent
(``pilotfish cni-agent``) on its events socket, and the agent writes the rules and hands the
pod's netns to ztunnel (``interceptors/ambient_events.py`` has the bodies). ``check`` reads
the rules in the namespace itself.

Settings, from the installing process's environment (the agent reads the same):
``PILOTFISH_CNI_EVENTS_SOCKET`` (default ``/var/run/istio-cni/pluginevent.sock``),
``AMBIENT_DNS_CAPTURE`` and ``AMBIENT_IPV6`` (both on unless ``false``).
"""

from __future__ import annotations

import json
import logging
import os

from pilotfish.core.ambient.enrollment import in_ambient
from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.interceptor import InterceptorError, InterceptorSettings, PodFacts
from pilotfish.interceptors.ambient_events import (
    ADD,
    DEFAULT_SOCKET,
    DELETE,
    add_body,
    delete_body,
)
from pilotfish.interceptors.ambient_rules import AmbientPlan, inpod_plan
from pilotfish.interceptors.ambient_settings import AmbientSettings, pod_overrides
from pilotfish.interceptors.capture_settings import SettingsError, parse_bool

SOCKET_ENV = "PILOTFISH_CNI_EVENTS_SOCKET"
AGENT_TIMEOUT = 10.0  # the agent waits up to 5 s for ztunnel's Ack, plus writing the rules
log = logging.getLogger("pilotfish.interceptors.ztunnel_sockets")


def _flag(environ: dict[str, str], name: str) -> bool:
    # Go's ParseBool, as Istio reads its variables; anything else keeps the default (on).
    value = environ.get(name, "")
    parsed = parse_bool(value) if value else None
    return True if parsed is None else parsed


class ZtunnelSocketsInterceptor:
    name = "ztunnel-sockets"

    def __init__(self, settings: InterceptorSettings | None = None) -> None:
        environ = dict((settings or InterceptorSettings(environ=os.environ)).environ)
        self.socket = environ.get(SOCKET_ENV) or DEFAULT_SOCKET
        self.ambient = AmbientSettings(enable_ipv6=_flag(environ, "AMBIENT_IPV6"),
                                       redirect_dns=_flag(environ, "AMBIENT_DNS_CAPTURE"))

    def inpod_plan(self, pod: PodFacts) -> AmbientPlan | None:
        if not in_ambient(pod.labels, pod.annotations, pod.namespace_labels) or pod.sidecar:
            return None
        try:
            return inpod_plan(self.ambient, pod_overrides(pod.annotations))
        except SettingsError as exc:
            raise InterceptorError(f"pod {pod.key}: {exc}") from None

    def plan(self, pod: PodFacts) -> str | None:
        capture = self.inpod_plan(pod)
        if capture is None:
            return None
        return capture.restore_v4() + (capture.restore_v6() or "")

    def skip_reason(self, pod: PodFacts) -> str:
        if self.inpod_plan(pod) is not None:
            return ""
        if pod.sidecar:
            return "has a sidecar"
        return "not in ambient mode (istio.io/dataplane-mode is not ambient on the pod or " \
               "its namespace, or the pod says none)"

    async def apply(self, pod: PodFacts, netns: str) -> None:
        if self.inpod_plan(pod) is None:
            return
        if not pod.uid:
            raise InterceptorError(f"pod {pod.key}: no UID (CNI_ARGS K8S_POD_UID or the "
                                   "runtime config's uid): ztunnel is told pods by UID")
        await self._post(ADD, add_body(pod, _netns_path(netns)), pod)

    async def remove(self, pod: PodFacts, netns: str) -> None:
        """Ask the agent to let the pod go. A pod this interceptor does not capture (every
        interceptor is asked on DEL) is still named to the agent, which may hold it from when
        it was ambient, but an agent that cannot be reached then fails nothing."""
        if not pod.uid:
            return  # the agent holds pods by UID: without one there is nothing to name
        try:
            ours = self.inpod_plan(pod) is not None
        except InterceptorError:
            ours = True  # facts it cannot read: the agent may well hold the pod
        try:
            await self._post(DELETE, delete_body(pod, _netns_path(netns)), pod)
        except InterceptorError as exc:
            if ours:
                raise
            log.debug("%s", exc)

    async def check(self, pod: PodFacts, netns: str) -> list[str]:
        import anyio

        from pilotfish.interceptors import iptables
        from pilotfish.interceptors.netns_exec import Netns

        capture = self.inpod_plan(pod)
        if capture is None:
            return []
        return await anyio.to_thread.run_sync(iptables.differences, capture, Netns(netns))

    async def _post(self, path: str, body: bytes, pod: PodFacts) -> None:
        from pilotfish.core.http_client import HttpClientError, request

        try:
            reply = await request(f"http://unix{path}", "POST", body=body,
                                  headers=[("Content-Type", "application/json")],
                                  timeout=AGENT_TIMEOUT, unix_socket=self.socket)
        except HttpClientError as exc:
            raise InterceptorError(f"pod {pod.key}: the CNI node agent on {self.socket}: "
                                   f"{exc.reason} (is `pilotfish cni-agent` running?)") from None
        if reply.status != 200:
            try:
                detail = json.loads(reply.body)["error"]
            except (ValueError, KeyError, TypeError):
                detail = reply.text.strip()
            raise InterceptorError(f"pod {pod.key}: the CNI node agent answered "
                                   f"{reply.status}: {detail}")


def _netns_path(netns: str) -> str:
    # A name, as `ip netns` makes them, is a path under /run/netns to the agent.
    return netns if "/" in netns else f"/run/netns/{netns}"


@hookimpl
def pilotfish_interceptor(settings: InterceptorSettings) -> ZtunnelSocketsInterceptor:
    return ZtunnelSocketsInterceptor(settings)
