"""Service ports whose protocol is not declared (neither a name prefix nor appProtocol).

pilotfish picks a port's protocol the way Istio does: ``appProtocol``, else the port name's
prefix before the first ``-`` (``http-web``, ``grpc``, ``tcp-db``). A port with neither is
sniffed per connection, which costs a wait on the first bytes, breaks server-first
protocols, and disappears if the mesh config removes the HTTP sniffers. Worth saying so at
the line that can fix it (Istio's analyzer reports the same as a naming-convention issue).

ExternalName services are left out: pilotfish gives them no listener or cluster of their
own (their traffic is their target's, see ``translators/outbound_plan.py``), so their port
names change nothing. Istio warns about them under another code (IST0150).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pilotfish.analysis.base import Check, Finding, Inputs, IstioMessage, Level, finding
from pilotfish.core import protocol
from pilotfish.core.objects import ConfigObject

PORT_PROTOCOL = Check(
    "PF0101", "PortProtocolUndeclared", Level.INFO,
    "a Service port declares no protocol by name prefix or appProtocol",
    IstioMessage("IST0118", "PortNameIsNotUnderNamingConvention", "service.PortNameAnalyzer"),
)

# Kubernetes' and the mesh's own namespaces: their services are not the user's to rename.
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
# Services the mesh itself creates (gateways and waypoints) or installs.
MANAGED_LABEL = "gateway.istio.io/managed"


def _is_system(obj: ConfigObject, root_namespace: str) -> bool:
    if obj.namespace in SYSTEM_NAMESPACES or MANAGED_LABEL in obj.labels:
        return True
    labels = obj.labels
    return obj.namespace == root_namespace and ("istio" in labels or labels.get("release")
                                                == "istio")


def _declared(port: Mapping[str, Any]) -> bool:
    app_protocol = port.get("appProtocol")
    if app_protocol:
        return protocol.from_port(None, 0, str(app_protocol)) is not protocol.Protocol.UNSUPPORTED
    name = str(port.get("name") or "")
    return bool(name) and protocol.from_port(name, 0) is not protocol.Protocol.UNSUPPORTED


def _consequence(number: int) -> str:
    if number in protocol.SERVER_FIRST_PORTS:
        return f"port {number} is a well-known server-first port, so it is treated as TCP"
    return ("its protocol is detected per connection from the first bytes (plain TCP if the "
            "mesh config removes the http1/http2 sniffers)")


def analyze(inputs: Inputs) -> Iterator[Finding]:
    root = inputs.push.mesh.root_namespace
    for obj in inputs.push.objects("Service"):
        if _is_system(obj, root) or obj.spec.get("type") == "ExternalName":
            continue
        for index, port in enumerate(obj.spec.get("ports") or ()):
            if not isinstance(port, Mapping) or str(port.get("protocol") or "TCP") == "UDP":
                continue
            if _declared(port):
                continue
            number = int(port.get("port") or 0)
            name = port.get("name")
            app_protocol = port.get("appProtocol")
            if app_protocol:
                path: tuple[str | int, ...] = ("spec", "ports", index, "appProtocol")
                said = f"appProtocol {app_protocol!r} is not a protocol pilotfish knows"
            elif name:
                path = ("spec", "ports", index, "name")
                said = (f"port name {name!r} does not start with a protocol (http-, http2-, "
                        "grpc-, tcp-, tls-, https-, mongo-, redis-, mysql-)")
            else:
                path = ("spec", "ports", index)
                said = "the port has no name and no appProtocol"
            yield finding(PORT_PROTOCOL, obj, path,
                          f"{said}; {_consequence(number)}. Name it <protocol>[-<suffix>] "
                          "or set appProtocol")
