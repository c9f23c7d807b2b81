"""A connected proxy, as the control plane sees it: node id and metadata.

Node ids follow Istio: ``TYPE~IP~NAME.NAMESPACE~NAMESPACE.svc.cluster.local`` with TYPE one of
``sidecar``, ``router``, ``waypoint``, ``ztunnel``. Labels and namespace also come from node
metadata (``LABELS``, ``NAMESPACE``), as pilot-agent sends them.

A proxy's *kind* picks the generators that serve it: the node metadata's ``GENERATOR`` when
set, as Istio reads it (proxyless gRPC clients send ``grpc``), else the node id's type. So a
sidecar-typed gRPC client gets the ``grpc`` generators, and a plugin can serve a kind of its
own to proxies that name it.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from pilotfish.core.model import workload_locality


class ProxyType(enum.Enum):
    SIDECAR = "sidecar"
    ROUTER = "router"
    WAYPOINT = "waypoint"
    ZTUNNEL = "ztunnel"


GENERATOR = "GENERATOR"  # node metadata: the generator set a proxy asks for
# Node metadata: how traffic reaches the proxy (pilot-agent's ISTIO_META_INTERCEPTION_MODE).
INTERCEPTION_MODE = "INTERCEPTION_MODE"
TPROXY = "TPROXY"
# Node metadata: an Envoy agent that compiled pilotfish's metrics module gives its path and
# the file it counts into (``translators/stats_module.py``); listeners then load it.
STATS_MODULE = "PILOTFISH_STATS_MODULE"
STATS_TABLE = "PILOTFISH_STATS_TABLE"
_KIND = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")


class NodeIdError(ValueError):
    pass


@attrs.frozen(cache_hash=True)
class ProxyScope:
    """The proxy attributes generated config depends on.

    Proxies with equal scopes get byte-identical resources, so resources are built and
    serialized once per scope and shared. Patch hooks must decide from these fields only.
    """

    type: ProxyType
    kind: str  # which generators serve it (see the module doc)
    namespace: str
    labels: frozenset[tuple[str, str]]
    dns_domain: str
    # Named container ports (from POD_PORTS): named Service targetPorts resolve through them.
    pod_ports: frozenset[tuple[str, int]] = frozenset()
    locality: str = ""
    # ISTIO_VERSION from the node metadata: EnvoyFilter patches may match on it
    # (``match.proxy.proxyVersion``). Proxies of one agent version share it.
    istio_version: str = ""
    # REDIRECT, TPROXY or NONE (see `interception_mode`): TPROXY makes the capture
    # listeners transparent and keeps the client's address on inbound connections.
    interception_mode: str = "REDIRECT"
    # A ztunnel's node (NODE_NAME): what it is sent is scoped to the workloads there. Empty
    # for every other kind, whose config does not depend on where they run.
    node: str = ""
    # (module path, table path) from STATS_MODULE / STATS_TABLE, "" when not given: the
    # listeners' metrics loggers depend on them. Agents whose pods see the same paths (a
    # fixed config dir in each pod, as Istio's /etc/istio/proxy) still share one scope.
    stats_module: tuple[str, str] = ("", "")

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@attrs.frozen
class Proxy:
    type: ProxyType
    ip_addresses: tuple[str, ...]
    name: str  # pod name
    namespace: str
    dns_domain: str
    labels: Mapping[str, str]
    metadata: Mapping[str, Any]
    node_id: str
    kind: str  # which generators serve it: GENERATOR, else the node id's type
    # The SPIFFE ID discovery proved the caller holds (secure 15012); empty on plaintext
    # 15010. Not part of the scope: generators that need it are `authenticated_only`.
    verified_identity: str = ""
    # Where it runs, ``region/zone/subzone`` (see `parse_node`); locality-aware load
    # balancing orders endpoints from here.
    locality: str = ""

    @property
    def id(self) -> str:
        """``name.namespace``, the form istioctl and /debug endpoints use."""
        return f"{self.name}.{self.namespace}"

    @property
    def ip(self) -> str:
        return self.ip_addresses[0] if self.ip_addresses else ""

    @property
    def service_account(self) -> str:
        return str(self.metadata.get("SERVICE_ACCOUNT") or "default")

    @property
    def pod_ports(self) -> dict[str, int]:
        """Named container ports, from the POD_PORTS metadata pilot-agent sends (JSON)."""
        raw = self.metadata.get("POD_PORTS")
        if not raw:
            return {}
        try:
            ports = json.loads(raw) if isinstance(raw, str) else raw
            return {
                str(p["name"]): int(p["containerPort"])
                for p in ports if isinstance(p, Mapping) and p.get("name")
            }
        except (ValueError, TypeError, KeyError, OverflowError, RecursionError):
            # Whatever a client sends (Infinity, JSON nested past the decoder's recursion)
            # costs it its named ports, never its stream.
            return {}

    @property
    def scope(self) -> ProxyScope:
        """Computed once: every response to the proxy looks its config up by it."""
        return self._scope

    _scope: ProxyScope = attrs.field(init=False, repr=False, eq=False)

    @_scope.default
    def _make_scope(self) -> ProxyScope:
        return ProxyScope(
            self.type, self.kind, self.namespace, frozenset(self.labels.items()),
            self.dns_domain, frozenset(self.pod_ports.items()), self.locality,
            str(self.metadata.get("ISTIO_VERSION") or ""),
            interception_mode(self.metadata),
            str(self.metadata.get("NODE_NAME") or "") if self.type is ProxyType.ZTUNNEL else "",
            (str(self.metadata.get(STATS_MODULE) or ""), str(self.metadata.get(STATS_TABLE) or "")),
        )


def interception_mode(metadata: Mapping[str, Any]) -> str:
    """The node metadata's ``INTERCEPTION_MODE`` as Istio reads it (``GetInterceptionMode``):
    exactly ``TPROXY`` or ``NONE``, anything else (or nothing) is ``REDIRECT``."""
    mode = metadata.get(INTERCEPTION_MODE)
    return mode if mode in (TPROXY, "NONE") else "REDIRECT"


def parse_node(node_id: str, metadata: Mapping[str, Any] | None = None,
               locality: str = "") -> Proxy:
    """Build a Proxy from an Envoy node id and its metadata (a plain dict).

    ``locality``: Envoy's ``node.locality`` as ``region/zone/subzone`` (the agent's
    ``--locality``); without one, the pod's labels say (`model.workload_locality`)."""
    metadata = dict(metadata or {})
    parts = node_id.split("~")
    if len(parts) != 4:
        raise NodeIdError(
            f"node id {node_id!r}: expected TYPE~IP~NAME.NAMESPACE~DOMAIN "
            "(for example sidecar~10.0.0.1~web-1.default~default.svc.cluster.local)"
        )
    type_name, ip, pod, domain = parts
    try:
        proxy_type = ProxyType(type_name)
    except ValueError:
        raise NodeIdError(
            f"node id {node_id!r}: unknown proxy type {type_name!r}; expected one of "
            f"{', '.join(t.value for t in ProxyType)}"
        ) from None
    name, _, namespace = pod.partition(".")
    namespace = str(metadata.get("NAMESPACE") or namespace or "default")
    if not name:
        raise NodeIdError(f"node id {node_id!r}: missing proxy name in NAME.NAMESPACE")
    ips = [ip] if ip else []
    extra = metadata.get("INSTANCE_IPS")
    if isinstance(extra, str):
        ips += [a for a in extra.split(",") if a and a not in ips]
    labels = metadata.get("LABELS") or {}
    if not isinstance(labels, Mapping):
        raise NodeIdError(f"node {node_id!r}: metadata LABELS must be a map of strings")
    kind = metadata.get(GENERATOR) or ""
    if not isinstance(kind, str) or (kind and not _KIND.match(kind)):
        raise NodeIdError(f"node {node_id!r}: metadata {GENERATOR} {kind!r}: expected a "
                          "proxy kind (lowercase letters, digits and '-'), as in grpc")
    labels = {str(k): str(v) for k, v in labels.items()}
    return Proxy(
        type=proxy_type,
        ip_addresses=tuple(ips),
        name=name,
        namespace=namespace,
        dns_domain=domain or f"{namespace}.svc.cluster.local",
        labels=labels,
        metadata=metadata,
        node_id=node_id,
        kind=kind or proxy_type.value,
        locality=locality or workload_locality(labels),
    )
