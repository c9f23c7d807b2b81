"""Status conditions as the Gateway API spec words them, collected while converting.

Every object the conversion looks at gets a status body of the shape the API server would
store (``conditions`` with ``type``, ``status``, ``reason``, ``message`` and
``observedGeneration``; listeners and route parents in their own lists). Discovery shows
them (``/debug/gateway_status``, printed by ``pilotfish gateway-status``) and, on a
cluster, its leader writes them back (``pilotfish.discovery.gateway_status``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from pilotfish.core.objects import ConfigKey, ConfigObject

CONTROLLER = "istio.io/gateway-controller"
# The controller of the ``istio-waypoint`` class: waypoints, which ambient mode routes
# through, rather than gateways whose listeners become Istio Gateways.
WAYPOINT_CONTROLLER = "istio.io/mesh-controller"


@attrs.frozen
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""

    def as_dict(self, generation: int) -> dict[str, Any]:
        return {"type": self.type, "status": "True" if self.status else "False",
                "reason": self.reason, "message": self.message,
                "observedGeneration": generation}


def generation(obj: ConfigObject) -> int:
    return int(obj.metadata.get("generation") or 1)


def conditions(obj: ConfigObject, found: Iterable[Condition]) -> list[dict[str, Any]]:
    return [c.as_dict(generation(obj)) for c in found]


@attrs.define
class ListenerStatus:
    name: str
    supported_kinds: list[tuple[str, str]] = attrs.Factory(list)  # (group, kind)
    attached_routes: int = 0
    accepted: Condition = Condition("Accepted", True, "Accepted")
    resolved: Condition = Condition("ResolvedRefs", True, "ResolvedRefs")
    conflicted: Condition = Condition("Conflicted", False, "NoConflicts")

    @property
    def ok(self) -> bool:
        return self.accepted.status and self.resolved.status and not self.conflicted.status

    def as_dict(self, obj: ConfigObject) -> dict[str, Any]:
        programmed = Condition("Programmed", True, "Programmed") if self.ok else Condition(
            "Programmed", False, "Invalid", "the listener is not accepted or has unresolved "
            "references")
        return {
            "name": self.name,
            "supportedKinds": [{"group": g, "kind": k} for g, k in self.supported_kinds],
            "attachedRoutes": self.attached_routes,
            "conditions": conditions(obj, [self.accepted, programmed, self.resolved,
                                           self.conflicted]),
        }


@attrs.define
class ParentStatus:
    """A route's status for one parentRef."""

    ref: Mapping[str, Any]  # the parentRef as written, defaults filled in
    accepted: Condition
    resolved: Condition

    def as_dict(self, obj: ConfigObject) -> dict[str, Any]:
        return {"parentRef": dict(self.ref), "controllerName": CONTROLLER,
                "conditions": conditions(obj, [self.accepted, self.resolved])}


@attrs.define
class Statuses:
    """Status bodies by object, filled in as the conversion goes."""

    bodies: dict[ConfigKey, dict[str, Any]] = attrs.Factory(dict)
    objects: dict[ConfigKey, ConfigObject] = attrs.Factory(dict)

    def set(self, obj: ConfigObject, body: dict[str, Any]) -> None:
        self.bodies[obj.key] = body
        self.objects[obj.key] = obj

    def route_parent(self, obj: ConfigObject, parent: ParentStatus) -> None:
        body = self.bodies.setdefault(obj.key, {"parents": []})
        self.objects[obj.key] = obj
        body["parents"].append(parent.as_dict(obj))

    def view(self, origin: str = "") -> list[dict[str, Any]]:
        """Every object's status, as ``kubectl get -o yaml`` would show kind, name, status;
        with ``origin``, only that of objects whose source starts with it."""
        return [
            {"apiVersion": self.objects[key].api_version, "kind": key.kind,
             "namespace": key.namespace, "name": key.name, "status": body}
            for key, body in sorted(self.bodies.items(), key=lambda kv: str(kv[0]))
            if self.objects[key].source.file.startswith(origin)
        ]


def with_proxies(view: list[dict[str, Any]], served: Mapping[tuple[str, str], list[str]]
                 ) -> list[dict[str, Any]]:
    """The status view with each Gateway's address taken from the proxies serving it now
    (``(namespace, gateway name)`` → their IPs), when its config names none: a connected
    router is what makes a Gateway Programmed in file mode."""
    out = []
    for item in view:
        ips = served.get((item["namespace"], item["name"])) if item["kind"] == "Gateway" else None
        status = item["status"]
        if ips and not status.get("addresses"):
            status = {**status, "addresses": [{"type": "IPAddress", "value": ip} for ip in ips],
                      "conditions": [
                          {**c, "status": "True", "reason": "Programmed",
                           "message": "Resource programmed"}
                          if c["type"] == "Programmed" and c["reason"] == "AddressNotAssigned"
                          else c for c in status["conditions"]]}
        out.append({**item, "status": status})
    return out
