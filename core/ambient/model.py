"""ztunnel's view of a WDS resource: frozen snapshots converted from the protos.

What the data path asks about — an IP as text, an identity as its SPIFFE ID, a waypoint as
an address and port, a port map as a mapping — instead of bytes and enum numbers. Each
``*_from`` function checks what it converts and raises ``ValueError`` naming the field and
the value, so a malformed resource is refused whole (``state.StateError``, then a NACK) and
never half-applied.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from pilotfish.core.ambient import authorization_wire as apb
from pilotfish.core.ambient import workload_wire as wpb

DEFAULT_TRUST_DOMAIN = "cluster.local"  # ztunnel's, when a Workload leaves it empty
DEFAULT_SERVICE_ACCOUNT = "default"
_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def ip_text(raw: bytes, field: str) -> str:
    """4 or 16 bytes → the address as text."""
    if len(raw) not in (4, 16):
        raise ValueError(f"{field}: {len(raw)} bytes ({raw.hex() or 'empty'}) is not an "
                         "IPv4 (4 bytes) or IPv6 (16 bytes) address")
    return str(ipaddress.ip_address(raw))


def _port(value: int, field: str) -> int:
    if not 0 <= value <= 65535:
        raise ValueError(f"{field}: {value} is not a port (0-65535)")
    return value


@attrs.frozen
class GatewayAddress:
    """Where a waypoint (or network gateway) takes HBONE: an IP, or a service's hostname,
    and its HBONE port (15008)."""

    address: str = ""  # IP text; "" when given by hostname
    network: str = ""
    hostname: str = ""  # the waypoint Service's hostname, when given by name
    namespace: str = ""
    port: int = 15008

    def as_dict(self) -> dict[str, Any]:
        if self.address:
            return {"destination": f"{self.network}/{self.address}",
                    "hboneMtlsPort": self.port}
        return {"destination": f"{self.namespace}/{self.hostname}", "hboneMtlsPort": self.port}


def gateway_from(message: wpb.GatewayAddress, field: str) -> GatewayAddress:
    port = _port(message.hbone_mtls_port, f"{field}.hbone_mtls_port") or 15008
    which = message.WhichOneof("destination")
    if which == "address":
        return GatewayAddress(address=ip_text(message.address.address, f"{field}.address"),
                              network=message.address.network, port=port)
    if which == "hostname":
        if not message.hostname.hostname:
            raise ValueError(f"{field}.hostname: empty hostname")
        return GatewayAddress(hostname=message.hostname.hostname,
                              namespace=message.hostname.namespace, port=port)
    raise ValueError(f"{field}: neither an address nor a hostname")


@attrs.frozen
class Locality:
    region: str = ""
    zone: str = ""
    subzone: str = ""


@attrs.frozen
class Workload:
    """One ``istio.workload.Workload``. Hashed by its uid (the port maps are not hashed)."""

    uid: str
    name: str
    namespace: str
    addresses: tuple[str, ...] = ()
    hostname: str = ""
    network: str = ""
    tunnel: str = "NONE"  # TunnelProtocol name: NONE, HBONE, LEGACY_ISTIO_MTLS
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    waypoint: GatewayAddress | None = None
    network_gateway: GatewayAddress | None = None
    node: str = ""
    canonical_name: str = ""
    canonical_revision: str = ""
    workload_name: str = ""
    workload_type: str = "DEPLOYMENT"
    native_tunnel: bool = False
    application_tunnel: tuple[str, int] | None = None  # (protocol, port)
    # service key (NS/HOSTNAME) → service port → target port (0: the service's own).
    services: Mapping[str, Mapping[int, int]] = attrs.field(factory=dict, hash=False)
    authorization_policies: tuple[str, ...] = ()
    healthy: bool = True
    cluster_id: str = ""
    locality: Locality = Locality()
    host_network: bool = False

    @property
    def identity(self) -> str:
        """``spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT``."""
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def as_dict(self) -> dict[str, Any]:
        """As ztunnel's ``/config_dump`` shows a workload."""
        out: dict[str, Any] = {
            "uid": self.uid, "workloadIps": list(self.addresses), "protocol": self.tunnel,
            "name": self.name, "namespace": self.namespace,
            "serviceAccount": self.service_account, "workloadName": self.workload_name,
            "workloadType": self.workload_type.lower(), "canonicalName": self.canonical_name,
            "canonicalRevision": self.canonical_revision, "clusterId": self.cluster_id,
            "trustDomain": self.trust_domain, "node": self.node, "network": self.network,
            "status": "Healthy" if self.healthy else "Unhealthy",
            "services": {key: {str(p): t for p, t in ports.items()}
                         for key, ports in sorted(self.services.items())},
            "authorizationPolicies": list(self.authorization_policies),
            "identity": self.identity,
        }
        if self.hostname:
            out["hostname"] = self.hostname
        if self.waypoint is not None:
            out["waypoint"] = self.waypoint.as_dict()
        if self.network_gateway is not None:
            out["networkGateway"] = self.network_gateway.as_dict()
        if any(attrs.astuple(self.locality)):
            out["locality"] = attrs.asdict(self.locality)
        if self.native_tunnel:
            out["nativeTunnel"] = True
        if self.application_tunnel is not None:
            out["applicationTunnel"] = {"protocol": self.application_tunnel[0],
                                        "port": self.application_tunnel[1]}
        if self.host_network:
            out["networkMode"] = "HostNetwork"
        return out


def _port_map(ports: Iterable[wpb.Port], field: str) -> dict[int, int]:
    out = {}
    for index, port in enumerate(ports):
        where = f"{field}[{index}]"
        service_port = _port(port.service_port, f"{where}.service_port")
        out[service_port] = _port(port.target_port, f"{where}.target_port")
    return out


def workload_from(message: wpb.Workload, name: str) -> Workload:
    """The snapshot of a Workload named ``name`` (its uid when the message has none)."""
    tunnel = message.application_tunnel if message.HasField("application_tunnel") else None
    return Workload(
        uid=message.uid or name, name=message.name, namespace=message.namespace,
        addresses=tuple(ip_text(raw, f"addresses[{i}]")
                        for i, raw in enumerate(message.addresses)),
        hostname=message.hostname, network=message.network,
        tunnel=wpb.TunnelProtocol.Name(message.tunnel_protocol),
        trust_domain=message.trust_domain or DEFAULT_TRUST_DOMAIN,
        service_account=message.service_account or DEFAULT_SERVICE_ACCOUNT,
        waypoint=gateway_from(message.waypoint, "waypoint")
        if message.HasField("waypoint") else None,
        network_gateway=gateway_from(message.network_gateway, "network_gateway")
        if message.HasField("network_gateway") else None,
        node=message.node, canonical_name=message.canonical_name,
        canonical_revision=message.canonical_revision, workload_name=message.workload_name,
        workload_type=wpb.WorkloadType.Name(message.workload_type),
        native_tunnel=message.native_tunnel,
        application_tunnel=None if tunnel is None else (
            wpb.ApplicationTunnel.Protocol.Name(tunnel.protocol),
            _port(tunnel.port, "application_tunnel.port")),
        services={key: _port_map(ports.ports, f"services[{key!r}]")
                  for key, ports in sorted(message.services.items())},
        authorization_policies=tuple(message.authorization_policies),
        healthy=message.status == wpb.HEALTHY, cluster_id=message.cluster_id,
        locality=Locality(message.locality.region, message.locality.zone,
                          message.locality.subzone),
        host_network=message.network_mode == wpb.HOST_NETWORK,
    )


@attrs.frozen
class LoadBalancing:
    routing_preference: tuple[str, ...] = ()  # Scope names, closest first
    mode: str = "UNSPECIFIED_MODE"  # STRICT, FAILOVER, PASSTHROUGH
    health_policy: str = "ONLY_HEALTHY"  # or ALLOW_ALL


@attrs.frozen
class Service:
    """One ``istio.workload.Service``. Hashed by its key (the port map is not hashed)."""

    name: str
    namespace: str
    hostname: str
    addresses: tuple[tuple[str, str], ...] = ()  # (network, IP or CIDR text)
    ports: Mapping[int, int] = attrs.field(factory=dict, hash=False)  # service → target
    subject_alt_names: tuple[str, ...] = ()
    waypoint: GatewayAddress | None = None
    load_balancing: LoadBalancing | None = None
    ingress_use_waypoint: bool = False

    @property
    def key(self) -> str:
        """``NAMESPACE/HOSTNAME``: its xDS name and its key in ``Workload.services``."""
        return f"{self.namespace}/{self.hostname}"

    @property
    def vips(self) -> tuple[str, ...]:
        return tuple(address for _, address in self.addresses)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "namespace": self.namespace, "hostname": self.hostname,
            "vips": [f"{network}/{address}" for network, address in self.addresses],
            "ports": {str(port): target for port, target in sorted(self.ports.items())},
            "subjectAltNames": list(self.subject_alt_names),
        }
        if self.waypoint is not None:
            out["waypoint"] = self.waypoint.as_dict()
        if self.load_balancing is not None:
            out["loadBalancer"] = {
                "routingPreferences": list(self.load_balancing.routing_preference),
                "mode": self.load_balancing.mode,
                "healthPolicy": self.load_balancing.health_policy}
        if self.ingress_use_waypoint:
            out["ingressUseWaypoint"] = True
        return out


def _network_address(message: wpb.NetworkAddress, field: str) -> tuple[str, str]:
    ip = ip_text(message.address, field)
    if message.length:
        try:
            network = ipaddress.ip_network(f"{ip}/{message.length}", strict=False)
        except ValueError as exc:
            raise ValueError(f"{field}: prefix length {message.length} ({exc})") from exc
        return message.network, f"{ip}/{network.prefixlen}"
    return message.network, ip


def service_from(message: wpb.Service) -> Service:
    balancing = None
    if message.HasField("load_balancing"):
        lb = message.load_balancing
        balancing = LoadBalancing(
            tuple(wpb.LoadBalancing.Scope.Name(s) for s in lb.routing_preference),
            wpb.LoadBalancing.Mode.Name(lb.mode),
            wpb.LoadBalancing.HealthPolicy.Name(lb.health_policy))
    if not message.hostname:
        raise ValueError("hostname: empty")
    return Service(
        name=message.name, namespace=message.namespace, hostname=message.hostname,
        addresses=tuple(_network_address(a, f"addresses[{i}]")
                        for i, a in enumerate(message.addresses)),
        ports=_port_map(message.ports, "ports"),
        subject_alt_names=tuple(message.subject_alt_names),
        waypoint=gateway_from(message.waypoint, "waypoint")
        if message.HasField("waypoint") else None,
        load_balancing=balancing, ingress_use_waypoint=message.ingress_use_waypoint)


# -- Authorization ---------------------------------------------------------------------


@attrs.frozen
class StringMatch:
    kind: str  # exact, prefix, suffix, presence
    value: str = ""

    def holds(self, actual: str) -> bool:
        if self.kind == "exact":
            return actual == self.value
        if self.kind == "prefix":
            return actual.startswith(self.value)
        if self.kind == "suffix":
            return actual.endswith(self.value)
        return actual != ""  # presence

    def __str__(self) -> str:
        return {"exact": self.value, "prefix": f"{self.value}*", "suffix": f"*{self.value}",
                "presence": "*"}[self.kind]


@attrs.frozen
class Match:
    """Fields of different kinds are AND-ed, values of one kind OR-ed; empty matches all."""

    namespaces: tuple[StringMatch, ...] = ()
    not_namespaces: tuple[StringMatch, ...] = ()
    service_accounts: tuple[tuple[str, str], ...] = ()  # (namespace, service account)
    not_service_accounts: tuple[tuple[str, str], ...] = ()
    principals: tuple[StringMatch, ...] = ()
    not_principals: tuple[StringMatch, ...] = ()
    source_ips: tuple[_IPNetwork, ...] = ()
    not_source_ips: tuple[_IPNetwork, ...] = ()
    destination_ips: tuple[_IPNetwork, ...] = ()
    not_destination_ips: tuple[_IPNetwork, ...] = ()
    destination_ports: tuple[int, ...] = ()
    not_destination_ports: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field in attrs.fields(Match):
            values = getattr(self, field.name)
            if values:
                out[_camel(field.name)] = [
                    "/".join(v) if isinstance(v, tuple) else v if isinstance(v, int)
                    else str(v) for v in values]
        return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


# A rule's clauses are AND-ed; a clause's matches OR-ed.
Clause = tuple[Match, ...]
Rule = tuple[Clause, ...]


@attrs.frozen
class Policy:
    """One ``istio.security.Authorization``."""

    name: str
    namespace: str
    scope: str  # GLOBAL, NAMESPACE, WORKLOAD_SELECTOR
    action: str  # ALLOW, DENY
    rules: tuple[Rule, ...] = ()
    dry_run: bool = False

    @property
    def key(self) -> str:
        """``NAMESPACE/NAME``: its xDS name and its key in ``Workload.authorization_policies``."""
        return f"{self.namespace}/{self.name}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "namespace": self.namespace,
                "scope": self.scope.replace("_", " ").title().replace(" ", ""),
                "action": self.action.title(), "dryRun": self.dry_run,
                "rules": [[[match.as_dict() for match in clause] for clause in rule]
                          for rule in self.rules]}


def _strings(values: Iterable[apb.StringMatch], field: str) -> tuple[StringMatch, ...]:
    out = []
    for index, value in enumerate(values):
        kind = value.WhichOneof("match_type")
        if kind is None:
            raise ValueError(f"{field}[{index}]: a StringMatch with no exact, prefix, suffix "
                             "or presence")
        out.append(StringMatch(kind, "" if kind == "presence" else getattr(value, kind)))
    return tuple(out)


def _networks(values: Iterable[apb.Address], field: str) -> tuple[_IPNetwork, ...]:
    out = []
    for index, value in enumerate(values):
        ip = ip_text(value.address, f"{field}[{index}]")
        try:
            out.append(ipaddress.ip_network(f"{ip}/{value.length}", strict=False))
        except ValueError as exc:
            raise ValueError(f"{field}[{index}]: prefix length {value.length} ({exc})") \
                from exc
    return tuple(out)


def _ports(values: Iterable[int], field: str) -> tuple[int, ...]:
    return tuple(_port(v, f"{field}[{i}]") for i, v in enumerate(values))


def match_from(message: apb.Match, field: str) -> Match:
    def accounts(values: Iterable[apb.ServiceAccountMatch]) -> tuple[tuple[str, str], ...]:
        return tuple((v.namespace, v.serviceAccount) for v in values)

    return Match(
        namespaces=_strings(message.namespaces, f"{field}.namespaces"),
        not_namespaces=_strings(message.not_namespaces, f"{field}.not_namespaces"),
        service_accounts=accounts(message.service_accounts),
        not_service_accounts=accounts(message.not_service_accounts),
        principals=_strings(message.principals, f"{field}.principals"),
        not_principals=_strings(message.not_principals, f"{field}.not_principals"),
        source_ips=_networks(message.source_ips, f"{field}.source_ips"),
        not_source_ips=_networks(message.not_source_ips, f"{field}.not_source_ips"),
        destination_ips=_networks(message.destination_ips, f"{field}.destination_ips"),
        not_destination_ips=_networks(message.not_destination_ips,
                                      f"{field}.not_destination_ips"),
        destination_ports=_ports(message.destination_ports, f"{field}.destination_ports"),
        not_destination_ports=_ports(message.not_destination_ports,
                                     f"{field}.not_destination_ports"),
    )


def policy_from(message: apb.Authorization) -> Policy:
    if not message.name:
        raise ValueError("name: empty")
    return Policy(
        name=message.name, namespace=message.namespace,
        scope=apb.Scope.Name(message.scope), action=apb.Action.Name(message.action),
        rules=tuple(
            tuple(tuple(match_from(m, f"rules[{r}].clauses[{c}].matches[{i}]")
                        for i, m in enumerate(clause.matches))
                  for c, clause in enumerate(rule.clauses))
            for r, rule in enumerate(message.rules)),
        dry_run=message.dry_run)
