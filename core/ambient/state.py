"""ztunnel's view of Workload Discovery: the Addresses and Authorizations discovery sent,
indexed for the questions the data path asks (who has this IP, which service has this VIP,
which pods back it, which policies apply to this workload).

Sans-IO: the xDS stream calls ``apply`` with each delta resource (``None`` when removed) and
the proxy reads. A resource that does not decode, or carries a value no address or port
can have, raises ``StateError`` naming it and leaves the state as it was: the caller NACKs.

Lookups follow ztunnel's keys: addresses by ``network/IP`` (the default network is ``""``),
services by ``NAMESPACE/HOSTNAME``, pods by namespace and name (ZDS names them so), policies
by ``NAMESPACE/NAME``.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from typing import Any

from pilotfish.core.ambient import authorization_wire as apb
from pilotfish.core.ambient import workload_wire as wpb
from pilotfish.core.ambient.model import (
    GatewayAddress,
    Policy,
    Service,
    Workload,
    policy_from,
    service_from,
    workload_from,
)
from pilotfish.core.protowire import WireError

ADDRESS = "type.googleapis.com/istio.workload.Address"
AUTHORIZATION = "type.googleapis.com/istio.security.Authorization"

__all__ = ["ADDRESS", "AUTHORIZATION", "GatewayAddress", "Policy", "Service", "StateError",
           "Workload", "WorkloadState"]


class StateError(ValueError):
    """A WDS resource that cannot be applied; the message names the resource and its type."""


def _canonical_ip(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


class WorkloadState:
    """Every Workload, Service and Policy one ztunnel knows, with its indexes."""

    def __init__(self) -> None:
        self._workloads: dict[str, Workload] = {}  # by resource name
        self._services: dict[str, Service] = {}
        self._policies: dict[str, Policy] = {}
        self._workload_ips: dict[tuple[str, str], dict[str, None]] = defaultdict(dict)
        self._vips: dict[tuple[str, str], dict[str, None]] = defaultdict(dict)
        self._hosts: dict[str, dict[str, None]] = defaultdict(dict)
        self._pods: dict[tuple[str, str], dict[str, None]] = defaultdict(dict)
        # service key → workload resource names listing it
        self._members: dict[str, dict[str, None]] = defaultdict(dict)
        # GLOBAL policies (under "") and NAMESPACE ones (under their namespace), by name
        self._scoped: dict[str, dict[str, None]] = defaultdict(dict)
        # Bumped by every change: open connections were authorized against an older state
        # when theirs is lower (ztunnel re-checks them when policies change).
        self.revision = 0

    # -- the xDS side ----------------------------------------------------------------------

    def apply(self, type_url: str, name: str, resource: bytes | None) -> None:
        """Apply one delta resource: an ``istio.workload.Address`` or an
        ``istio.security.Authorization``, serialized; ``None`` removes ``name``."""
        if type_url == ADDRESS:
            if resource is None:
                if self._remove_address(name):
                    self.revision += 1
                return
            address = self._decode(wpb.Address(), type_url, name, resource)
            which = address.WhichOneof("type")
            try:
                if which == "workload":
                    workload = workload_from(address.workload, name)
                elif which == "service":
                    service = service_from(address.service)
                else:
                    raise ValueError("neither a workload nor a service")
            except ValueError as exc:
                raise StateError(f"{type_url} {name!r}: {which or 'Address'}: {exc}") from exc
            self._remove_address(name)
            if which == "workload":
                self._add_workload(name, workload)
            else:
                self._add_service(name, service)
            self.revision += 1
        elif type_url == AUTHORIZATION:
            if resource is None:
                if self._remove_policy(name):
                    self.revision += 1
                return
            message = self._decode(apb.Authorization(), type_url, name, resource)
            try:
                policy = policy_from(message)
            except ValueError as exc:
                raise StateError(f"{type_url} {name!r}: {exc}") from exc
            self._remove_policy(name)
            self._policies[name] = policy
            if policy.scope in ("GLOBAL", "NAMESPACE"):
                self._scoped["" if policy.scope == "GLOBAL" else policy.namespace][name] = None
            self.revision += 1
        else:
            raise StateError(f"{type_url} {name!r}: not a type ztunnel knows (expected "
                             f"{ADDRESS} or {AUTHORIZATION})")

    @staticmethod
    def _decode(message: Any, type_url: str, name: str, resource: bytes) -> Any:
        try:
            message.ParseFromString(resource)
        except WireError as exc:
            raise StateError(f"{type_url} {name!r}: does not decode ({exc})") from exc
        return message

    def _add_workload(self, name: str, workload: Workload) -> None:
        self._workloads[name] = workload
        for ip in workload.addresses:
            self._workload_ips[(workload.network, ip)][name] = None
        self._pods[(workload.namespace, workload.name)][name] = None
        for key in workload.services:
            self._members[key][name] = None

    def _add_service(self, name: str, service: Service) -> None:
        self._services[name] = service
        for network, address in service.addresses:
            self._vips[(network, address)][name] = None
        self._hosts[service.hostname][name] = None

    def _remove_policy(self, name: str) -> bool:
        policy = self._policies.pop(name, None)
        if policy is None:
            return False
        _discard(self._scoped, "" if policy.scope == "GLOBAL" else policy.namespace, name)
        return True

    def _remove_address(self, name: str) -> bool:
        """Forget the workload or service named ``name``; was there one?"""
        workload = self._workloads.pop(name, None)
        if workload is not None:
            for ip in workload.addresses:
                _discard(self._workload_ips, (workload.network, ip), name)
            _discard(self._pods, (workload.namespace, workload.name), name)
            for key in workload.services:
                _discard(self._members, key, name)
        service = self._services.pop(name, None)
        if service is not None:
            for network, address in service.addresses:
                _discard(self._vips, (network, address), name)
            _discard(self._hosts, service.hostname, name)
        return workload is not None or service is not None

    # -- lookups ---------------------------------------------------------------------------

    def workload_by_ip(self, ip: str, network: str = "") -> Workload | None:
        """The workload with this address; when several share it (host-network pods), the
        one applied last."""
        names = self._workload_ips.get((network, _canonical_ip(ip)))
        return self._workloads[next(reversed(names))] if names else None

    def workload_by_uid(self, uid: str) -> Workload | None:
        found = self._workloads.get(uid)
        if found is not None:
            return found
        return next((w for w in self._workloads.values() if w.uid == uid), None)

    def find_pod(self, namespace: str, name: str) -> Workload | None:
        """The workload of the pod ``namespace/name`` (as ZDS names it): a Pod's uid
        (``CLUSTER//Pod/NS/NAME``) first, else any workload of that name."""
        names = list(self._pods.get((namespace, name)) or ())
        pods = [n for n in names if self._workloads[n].uid.split("/")[2:3] == ["Pod"]]
        chosen = pods or names
        return self._workloads[chosen[-1]] if chosen else None

    def service_by_vip(self, ip: str, network: str = "") -> Service | None:
        names = self._vips.get((network, _canonical_ip(ip)))
        return self._services[next(reversed(names))] if names else None

    def service_by_host(self, hostname: str) -> Service | None:
        """The service with this hostname; when namespaces share it (ServiceEntries), the
        first by ``NAMESPACE/HOSTNAME``."""
        names = self._hosts.get(hostname)
        if not names:
            return None
        return min((self._services[n] for n in names), key=lambda s: s.key)

    def services(self) -> list[Service]:
        return sorted(self._services.values(), key=lambda s: s.key)

    def workloads(self) -> list[Workload]:
        return sorted(self._workloads.values(), key=lambda w: w.uid)

    def policies(self) -> list[Policy]:
        return sorted(self._policies.values(), key=lambda p: p.key)

    def target_port(self, service: Service, workload: Workload, port: int) -> int | None:
        """The port ``workload`` serves ``service``'s ``port`` on: its own map, else the
        service's target port; None when neither knows (a named target port the workload
        does not have) or the service has no such port."""
        if port not in service.ports:
            return None
        own = workload.services.get(service.key, {}).get(port, 0)
        return own or service.ports[port] or None

    def endpoints(self, service: Service, port: int | None = None
                  ) -> list[tuple[Workload, int]]:
        """The workloads backing ``service``, each with its target port for ``port``; with
        no port, one entry per workload and service port (in port order). Workloads that
        cannot serve a port are left out. Ordered by uid, so a pick is reproducible."""
        members = sorted((self._workloads[n] for n in self._members.get(service.key, ())),
                         key=lambda w: w.uid)
        ports = [port] if port is not None else sorted(service.ports)
        out = []
        for workload in members:
            for service_port in ports:
                target = self.target_port(service, workload, service_port)
                if target is not None:
                    out.append((workload, target))
        return out

    def policies_for(self, workload: Workload) -> list[Policy]:
        """The policies that apply to ``workload``: every GLOBAL one, the NAMESPACE ones of
        its namespace, and the ones it lists (its selector policies and PeerAuthentication's
        DENYs); each once, by key."""
        chosen = {key: self._policies[key]
                  for scope in ("", workload.namespace) for key in self._scoped.get(scope, ())}
        for key in workload.authorization_policies:
            policy = self._policies.get(key)
            if policy is not None:
                chosen[key] = policy
        return [chosen[key] for key in sorted(chosen)]

    def dump(self) -> dict[str, Any]:
        """JSON-able, shaped like ztunnel's ``/config_dump``: workloads, services (with their
        endpoints), policies."""
        services = []
        for service in self.services():
            entry = service.as_dict()
            entry["endpoints"] = {
                workload.uid: {"workloadUid": workload.uid,
                               "service": service.key,
                               "port": {str(p): t for p in sorted(service.ports)
                                        if (t := self.target_port(service, workload, p))}}
                for workload in sorted((self._workloads[n] for n in
                                        self._members.get(service.key, ())),
                                       key=lambda w: w.uid)}
            services.append(entry)
        return {"workloads": [w.as_dict() for w in self.workloads()],
                "services": services,
                "policies": [p.as_dict() for p in self.policies()]}

    def statistics(self) -> dict[str, int]:
        return {"workloads": len(self._workloads), "services": len(self._services),
                "policies": len(self._policies), "revision": self.revision}


def _discard(index: dict[Any, dict[str, None]], key: Any, name: str) -> None:
    names = index.get(key)
    if names is None:
        return
    names.pop(name, None)
    if not names:
        del index[key]
