"""Apps listening on the loopback address only, on a port a Service sends traffic to.

The sidecar delivers inbound connections to the pod's own IP (from 127.0.0.6, so capture
lets them through), not to 127.0.0.1: an app bound to 127.0.0.1 refuses them, although
the same app answered fine before it joined the mesh. Unless the mesh sets
``inboundTrafficPolicy: LOCALHOST``, that port is unreachable through the mesh.

What pods listen on is not config: it comes from running pods. `check_localhost_listeners`
takes it as data, a list of `PodSockets`; the node feeds it from ``ss -ltn`` inside each
pod's network namespace (`parse_ss`), and ``pilotfish analyze --listeners FILE`` reads it
from JSON (`load_listeners`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from pilotfish.analysis.base import Check, Finding, Inputs, IstioMessage, Level, finding
from pilotfish.core.model import labels_match
from pilotfish.core.objects import ConfigObject, FieldPath
from pilotfish.core.push_context import PushContext

LOCALHOST_LISTENER = Check(
    "PF0108", "AppListensOnLocalhost", Level.ERROR,
    "an app listens on 127.0.0.1 only, on a port a Service targets",
    # Istio finds it in `istioctl x precheck`, which reads running pods' sockets too.
    IstioMessage("IST0143", "LocalhostListener", "istioctl x precheck"),
)


@attrs.frozen
class Socket:
    address: str  # "127.0.0.1", "::1", "0.0.0.0", "::", "10.1.0.5", "*"
    port: int

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.address).is_loopback
        except ValueError:
            return False  # "*" and the like: every address

    def __str__(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else (
            f"{self.address}:{self.port}")


@attrs.frozen
class PodSockets:
    """The listening TCP sockets of one running pod."""

    namespace: str
    name: str
    listeners: tuple[Socket, ...]


def parse_socket(text: str) -> Socket:
    """``127.0.0.1:8080``, ``[::1]:8080``, ``*:22``, ``127.0.0.53%lo:53`` → Socket."""
    address, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{text!r}: expected ADDRESS:PORT")
    address = address.strip("[]").partition("%")[0]
    if address.startswith("::ffff:") and "." in address:
        address = address[len("::ffff:"):]  # v4-mapped: the v4 address is what is bound
    return Socket(address or "*", int(port))


def parse_ss(text: str) -> list[Socket]:
    """Listening sockets from ``ss -ltn`` output (header optional)."""
    out = []
    for line in text.splitlines():
        for token in line.split():
            head, _, port = token.rpartition(":")
            if head and port.isdigit():  # the local address; the peer's port is "*"
                out.append(parse_socket(token))
                break
    return out


def load_listeners(data: Any) -> list[PodSockets]:
    """Pods' sockets from JSON: ``[{"pod": "ns/name", "listeners": ["127.0.0.1:8080"]}]``,
    with ``"ss": "<ss -ltn output>"`` instead of ``listeners`` if preferred, or a mapping
    ``{"ns/name": [...]}``. Raises ValueError naming the entry that is wrong."""
    entries = [{"pod": k, "listeners": v} for k, v in data.items()] if isinstance(
        data, Mapping) else data
    if not isinstance(entries, list):
        raise ValueError("expected a list of {pod, listeners} entries or a mapping")
    out = []
    for index, entry in enumerate(entries):
        where = f"[{index}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("pod"), str):
            raise ValueError(f"{where}: expected an object with pod: NAMESPACE/NAME")
        namespace, _, name = entry["pod"].rpartition("/")
        if "ss" in entry:
            sockets = parse_ss(str(entry["ss"]))
        else:
            try:
                sockets = [parse_socket(str(s)) for s in entry.get("listeners") or ()]
            except ValueError as exc:
                raise ValueError(f"{where}.listeners: {exc}") from None
        out.append(PodSockets(namespace or "default", name, tuple(sockets)))
    return out


def _container_port(pod: ConfigObject, number: int) -> FieldPath:
    for i, container in enumerate(pod.spec.get("containers") or ()):
        for j, port in enumerate(container.get("ports") or ()):
            if port.get("containerPort") == number:
                return ("spec", "containers", i, "ports", j, "containerPort")
    return ("metadata", "name")


def _named_ports(pod: ConfigObject) -> dict[str, int]:
    return {str(p["name"]): int(p["containerPort"])
            for c in pod.spec.get("containers") or () for p in c.get("ports") or ()
            if p.get("name") and p.get("containerPort")}


def _targets(push: PushContext, pod: ConfigObject) -> Iterator[tuple[ConfigObject, str, int]]:
    """(Service, port label, target port) for every Service port that selects the pod."""
    named = _named_ports(pod)
    for service in push.objects("Service"):
        selector = service.spec.get("selector")
        if service.namespace != pod.namespace or not selector:
            continue
        if not labels_match(selector, pod.labels):
            continue
        for port in service.spec.get("ports") or ():
            target = port.get("targetPort", port.get("port"))
            number = named.get(target) if isinstance(target, str) and not target.isdigit() \
                else int(target or 0)
            if number:
                yield service, str(port.get("name") or port.get("port")), number


def check_localhost_listeners(
    push: PushContext, pods_sockets: Iterable[PodSockets]
) -> list[Finding]:
    if push.mesh.inbound_traffic_policy == "LOCALHOST":
        return []  # inbound traffic is delivered to 127.0.0.1 then: loopback is right
    pods = {(o.namespace, o.name): o for o in push.objects("Pod")}
    out = []
    for running in pods_sockets:
        pod = pods.get((running.namespace, running.name))
        if pod is None:
            continue
        reachable = {s.port for s in running.listeners if not s.loopback}
        local = {s.port: s for s in running.listeners if s.loopback and s.port not in reachable}
        ip = (pod.body.get("status") or {}).get("podIP") or "its IP"
        for service, label, number in _targets(push, pod):
            socket = local.get(number)
            if socket is None:
                continue
            out.append(finding(
                LOCALHOST_LISTENER, pod, _container_port(pod, number),
                f"the app listens on {socket} only, but Service "
                f"{service.namespace}/{service.name} port {label} sends traffic to port "
                f"{number}; the sidecar delivers it to the pod's IP ({ip}), where nothing "
                "listens. Listen on 0.0.0.0 (or ::), or set the mesh's "
                "inboundTrafficPolicy to LOCALHOST",
            ))
    return out


def analyze(inputs: Inputs) -> Sequence[Finding]:
    return check_localhost_listeners(inputs.push, inputs.sockets)
