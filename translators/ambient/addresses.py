"""The push context → ztunnel's ``istio.workload.Address`` resources, as istiod builds them
(``pilot/pkg/serviceregistry/kube/controller/ambient/{workloads,services}.go``).

- A **Workload** per Pod (with an IP, not finished), per WorkloadEntry and per inline endpoint
  of a ServiceEntry, named by its uid ``CLUSTER//Pod/NS/NAME``,
  ``CLUSTER/networking.istio.io/WorkloadEntry/NS/NAME`` or
  ``CLUSTER/networking.istio.io/ServiceEntry/NS/NAME/ADDRESS``: its
  addresses as bytes, network, identity (service account; the trust domain only when it is not
  ``cluster.local``, which ztunnel assumes), node, canonical name and revision, what owns it,
  health, locality, the services it backs with their port maps (``NS/HOSTNAME`` → service port
  → target port), the selector policies that apply to it (and the PeerAuthentication-derived
  ones, `peer_authentication`, and with ``autoAllowWaypointPolicy`` its waypoints'
  implicit ones, `waypoint_allow`), and its waypoint. The tunnel is
  HBONE for a pod ambient captures (core/ambient/enrollment.py), or one the node agent marked
  redirected, or one labelled ``networking.istio.io/tunnel: http`` (which also receives HBONE
  natively); LEGACY_ISTIO_MTLS for a sidecar's workload (``security.istio.io/tlsMode: istio``);
  NONE (plain TCP) otherwise.
- A **Workload** per address of an EndpointSlice that is not a pod's (a Service without a
  selector), named ``CLUSTER/discovery.k8s.io/EndpointSlice/NS/NAME/ADDRESS``: no identity,
  host network, the slice's Service on the ports it names.
- A **Service** per Kubernetes Service and per ServiceEntry host, named ``NS/HOSTNAME``: its
  VIPs (CIDRs keep their length), ports (a named Kubernetes targetPort is 0 here: each workload
  resolves it), a Kubernetes Service's load balancing, a ServiceEntry's subjectAltNames, and its
  waypoint.

Sans-IO: a push context in, messages out. The ``wds-addresses`` generator serves them to
proxies of kind ``ztunnel`` (every one gets every Address, as istiod sends them without
``XDS_ON_DEMAND``).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from pilotfish.core.ambient import enrollment, waypoints
from pilotfish.core.ambient import workload_pb2 as pb
from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.model import Service, ServicePort, Workload, fqdn
from pilotfish.core.objects import ConfigObject
from pilotfish.core.pod_owner import pod_owner
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext
from pilotfish.core.registry import TLS_MODE_LABEL, entry_workload
from pilotfish.core.xds import types
from pilotfish.translators.ambient import authorization, waypoint_allow
from pilotfish.translators.ambient.waypoint_scope import waypoint_index

DEFAULT_CLUSTER = "Kubernetes"
DEFAULT_TRUST_DOMAIN = "cluster.local"
NETWORK_LABEL = "topology.istio.io/network"
TUNNEL_LABEL = enrollment.TUNNEL_LABEL
_WORKLOAD_TYPE = {"Deployment": pb.DEPLOYMENT, "CronJob": pb.CRONJOB, "Job": pb.JOB}
_GROUP = {"Pod": "", "WorkloadEntry": "networking.istio.io"}


def workload_uid(kind: str, namespace: str, name: str, cluster: str = DEFAULT_CLUSTER) -> str:
    """``cluster/group/kind/namespace/name``, as istiod names Pods and WorkloadEntries."""
    return f"{cluster}/{_GROUP[kind]}/{kind}/{namespace}/{name}"


def service_key(namespace: str, hostname: str) -> str:
    """A service's xDS name and its key in ``Workload.services``."""
    return f"{namespace}/{hostname}"


def _ip_bytes(value: str) -> bytes | None:
    try:
        return ipaddress.ip_address(value).packed
    except ValueError:
        return None


def _network_address(value: str, network: str = "") -> pb.NetworkAddress | None:
    """An IP (a host address) or a CIDR (its address as written, and its length)."""
    try:
        parsed = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None
    if "/" not in value:
        return pb.NetworkAddress(network=network, address=parsed.network_address.packed)
    return pb.NetworkAddress(network=network, address=ipaddress.ip_address(
        value.split("/")[0]).packed, length=parsed.prefixlen)


def _gateway_address(waypoint: waypoints.Waypoint | None) -> pb.GatewayAddress | None:
    if waypoint is None:
        return None
    if waypoint.address:
        return pb.GatewayAddress(address=_network_address(waypoint.address),
                                 hbone_mtls_port=waypoints.HBONE_PORT)
    return pb.GatewayAddress(
        hostname=pb.NamespacedHostname(namespace=waypoint.namespace, hostname=waypoint.hostname),
        hbone_mtls_port=waypoints.HBONE_PORT)


class _Context:
    """What every Address of one push reads, indexed once."""

    def __init__(self, push: PushContext) -> None:
        self.push = push
        self.root_namespace = push.mesh.root_namespace
        trust_domain = push.mesh.trust_domain
        self.trust_domain = "" if trust_domain == DEFAULT_TRUST_DOMAIN else trust_domain
        self.objects = {(obj.kind, obj.namespace, obj.name): obj
                        for kind in ("Pod", "WorkloadEntry") for obj in push.objects(kind)}
        # What each service was made from (its spec's fields the registry does not keep).
        self.sources = {(obj.kind, obj.namespace, obj.name): obj
                        for kind in ("Service", "ServiceEntry") for obj in push.objects(kind)}
        self.waypoints = waypoint_index(push)
        self.policies = authorization.selector_policies(push)
        # The waypoint each service uses, by service key.
        self.service_waypoints = {
            service_key(service.namespace, hostname): waypoints.binding(
                service.labels, service.namespace, self.namespace_labels(service.namespace),
                self.waypoints, waypoints.SERVICE)
            for hostname, service in push.services.items()}
        # Waypoints' service accounts, when workloads are to let their waypoints in.
        self.waypoint_accounts = waypoint_allow.accounts(push.objects("Pod")) \
            if push.mesh.auto_allow_waypoint_policy else {}
        # (namespace, workload name, address) → service key → its ports there.
        members: dict[tuple[str, str, str], dict[str, list[pb.Port]]] = defaultdict(
            lambda: defaultdict(list))
        for (hostname, _), endpoints in sorted(push.registry.endpoints.items()):
            service = push.service(hostname)
            if service is None:
                continue
            for endpoint in endpoints:
                members[(endpoint.namespace, endpoint.workload_name, endpoint.address)][
                    service_key(service.namespace, hostname)].append(
                    pb.Port(service_port=endpoint.service_port, target_port=endpoint.port))
        self.members = members

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        return self.push.namespaces.get(namespace) or {}

    def policy_keys(self, namespace: str, labels: Mapping[str, str]) -> list[str]:
        return authorization.workload_keys(self.push, self.policies, namespace, labels)


def _pod_addresses(pod: ConfigObject, fallback: str) -> list[bytes]:
    status = pod.body.get("status") or {}
    ips = [str(entry.get("ip")) for entry in status.get("podIPs") or () if entry.get("ip")]
    return [b for ip in ips or [fallback] if (b := _ip_bytes(ip)) is not None]


def _workload(ctx: _Context, workload: Workload, obj: ConfigObject, uid: str
              ) -> pb.Workload | None:
    """``workload`` as ztunnel's; ``obj``: the Pod, WorkloadEntry or ServiceEntry it is from."""
    labels = dict(obj.labels) if workload.kind == "Pod" else dict(workload.labels)
    annotations = dict(obj.annotations) if obj.kind != "ServiceEntry" else {}
    ns_labels = ctx.namespace_labels(workload.namespace)
    message = pb.Workload(
        uid=uid, name=obj.name, namespace=workload.namespace,
        network=workload.network or labels.get(NETWORK_LABEL) or ns_labels.get(NETWORK_LABEL, ""),
        trust_domain=ctx.trust_domain, service_account=workload.service_account,
        status=pb.HEALTHY if workload.healthy else pb.UNHEALTHY,
        cluster_id=DEFAULT_CLUSTER,
        authorization_policies=ctx.policy_keys(workload.namespace, labels),
    )
    if workload.kind == "Pod":
        if obj.body.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return None
        message.addresses.extend(_pod_addresses(obj, workload.address))
        message.node = str(obj.spec.get("nodeName") or "")
        owner = pod_owner(obj.body, workload.namespace)
        message.workload_name = owner.name
        message.workload_type = _WORKLOAD_TYPE.get(owner.kind, pb.POD)
        if obj.spec.get("hostNetwork"):
            message.network_mode = pb.HOST_NETWORK
        ambient = enrollment.in_ambient(obj.labels, annotations, ns_labels, obj.spec)
    else:
        packed = _ip_bytes(workload.address)
        if packed is None:
            message.hostname = workload.address
        else:
            message.addresses.append(packed)
        message.workload_name = obj.name
        ambient = False
    # Istio's canonical-service fallbacks: the explicit label, Kubernetes' recommended label,
    # app, then the workload's own name.
    message.canonical_name = (labels.get("service.istio.io/canonical-name")
                              or labels.get("app.kubernetes.io/name") or labels.get("app")
                              or message.workload_name)
    message.canonical_revision = (labels.get("service.istio.io/canonical-revision")
                                  or labels.get("app.kubernetes.io/version")
                                  or labels.get("version") or "latest")
    if ambient or enrollment.redirected(annotations):
        message.tunnel_protocol = pb.HBONE
    if labels.get(TUNNEL_LABEL) == "http":
        message.tunnel_protocol = pb.HBONE
        message.native_tunnel = True
    if message.tunnel_protocol == pb.NONE and labels.get(TLS_MODE_LABEL) == "istio":
        message.tunnel_protocol = pb.LEGACY_ISTIO_MTLS  # a sidecar: Istio's mTLS, no HBONE
    if workload.locality:
        region, zone, subzone = [*workload.locality.split("/"), "", ""][:3]
        message.locality.CopyFrom(pb.Locality(region=region, zone=zone, subzone=subzone))
    for key, ports in ctx.members.get(
            (workload.namespace, workload.name, workload.address), {}).items():
        message.services[key].ports.extend(ports)
    own = waypoints.binding(labels, workload.namespace, ns_labels, ctx.waypoints,
                            waypoints.WORKLOAD)
    waypoint = _gateway_address(own)
    if waypoint is not None:
        message.waypoint.CopyFrom(waypoint)
    if ctx.waypoint_accounts:
        message.authorization_policies.extend(waypoint_allow.workload_keys(
            own, (ctx.service_waypoints.get(key) for key in message.services),
            ctx.waypoint_accounts))
    return message


def _entry_endpoints(ctx: _Context, obj: ConfigObject) -> list[pb.Workload]:
    """A ServiceEntry's inline endpoints (it has no workloadSelector), one Workload per
    address, named ``CLUSTER/networking.istio.io/ServiceEntry/NS/NAME/ADDRESS``."""
    if (obj.spec.get("workloadSelector") or {}).get("labels"):
        return []
    out: dict[str, pb.Workload] = {}
    for index, raw in enumerate(obj.spec.get("endpoints") or ()):
        # Named as the registry names it, so its service ports are found under that name.
        workload = entry_workload(raw, f"{obj.name}-{index}", obj.namespace)
        uid = f"{DEFAULT_CLUSTER}/networking.istio.io/ServiceEntry/{obj.namespace}/" \
              f"{obj.name}/{workload.address}"
        built = _workload(ctx, workload, obj, uid)
        if built is not None:
            out.setdefault(uid, built)
    return list(out.values())


SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def _slice_workloads(ctx: _Context, obj: ConfigObject) -> list[pb.Workload]:
    """An EndpointSlice's endpoints that are not pods (a Service without a selector, filled
    by hand or by a controller), one Workload per address, as istiod makes them: named
    ``CLUSTER/discovery.k8s.io/EndpointSlice/NS/NAME/ADDRESS``, no identity, host network
    (such an address may be shared), backing the Service the slice is for on the ports it
    names. Pods' endpoints are left out: each pod is a Workload of its own."""
    service_name = obj.labels.get(SERVICE_NAME_LABEL)
    if not service_name or obj.body.get("addressType") == "FQDN":
        return []
    hostname = fqdn(service_name, obj.namespace, ctx.push.mesh.domain)
    service = ctx.push.service(hostname)
    if service is None or service.origin is None or service.origin.kind != "Service":
        return []
    ports = []
    for raw in obj.body.get("ports") or ():
        # A port has its name (the Service port's) and number (the target); TCP only.
        name, number = raw.get("name"), raw.get("port")
        if name is None or not isinstance(number, int) or \
                str(raw.get("protocol") or "TCP") != "TCP":
            continue
        port = service.port_by_name(str(name))
        if port is not None:
            ports.append(pb.Port(service_port=port.port, target_port=number))
    key = service_key(obj.namespace, hostname)
    out: dict[str, pb.Workload] = {}
    for endpoint in obj.body.get("endpoints") or ():
        if (endpoint.get("targetRef") or {}).get("kind") == "Pod":
            continue
        packed = [_ip_bytes(str(a)) for a in endpoint.get("addresses") or ()]
        if not packed or any(b is None for b in packed):
            continue  # none, or one that is not an address: skipped, as istiod does
        first = str(endpoint["addresses"][0])
        if first in out:
            continue
        ready = (endpoint.get("conditions") or {}).get("ready")
        message = pb.Workload(
            uid=f"{DEFAULT_CLUSTER}/discovery.k8s.io/EndpointSlice/{obj.namespace}/"
                f"{obj.name}/{first}",
            name=obj.name, namespace=obj.namespace,
            addresses=[b for b in packed if b is not None],
            trust_domain=ctx.trust_domain, cluster_id=DEFAULT_CLUSTER,
            status=pb.HEALTHY if ready is None or ready else pb.UNHEALTHY,
            network_mode=pb.HOST_NETWORK)
        message.services[key].ports.extend(ports)
        out[first] = message
    return list(out.values())


def _target_port(port: ServicePort) -> int:
    """The port number it forwards to: unset is the port itself (Kubernetes defaults it so,
    istiod does so for a ServiceEntry); a named Kubernetes targetPort is 0 (each workload
    resolves it)."""
    target = port.target_port
    if target is None:
        return port.port
    if isinstance(target, int):
        return target
    return int(target) if target.isdigit() else 0


# Prefer the closest endpoints, spilling over where required.
_PREFER_CLOSE = pb.LoadBalancing(
    routing_preference=[pb.LoadBalancing.NETWORK, pb.LoadBalancing.REGION,
                        pb.LoadBalancing.ZONE, pb.LoadBalancing.SUBZONE],
    mode=pb.LoadBalancing.FAILOVER)
_SAME_NODE = pb.LoadBalancing(routing_preference=[pb.LoadBalancing.NODE],
                              mode=pb.LoadBalancing.STRICT)


def _load_balancing(service: Service, spec: Mapping[str, Any]) -> pb.LoadBalancing | None:
    """A Kubernetes Service's: ``internalTrafficPolicy: Local`` keeps to the node;
    ``trafficDistribution: PreferClose``, and a waypoint's own Service, prefer what is close."""
    if spec.get("internalTrafficPolicy") == "Local":
        return _SAME_NODE
    if spec.get("trafficDistribution") == "PreferClose" or \
            service.labels.get(waypoints.MANAGED_LABEL) == waypoints.MESH_CONTROLLER:
        return _PREFER_CLOSE
    return None


def _service(ctx: _Context, service: Service) -> pb.Service:
    ns_labels = ctx.namespace_labels(service.namespace)
    origin = service.origin
    obj = ctx.sources.get((origin.kind, origin.namespace, origin.name)) if origin else None
    spec = obj.spec if obj is not None else {}
    message = pb.Service(
        name=service.name, namespace=service.namespace, hostname=service.hostname,
        addresses=[a for vip in service.vips if (a := _network_address(vip)) is not None],
        ports=[pb.Port(service_port=port.port, target_port=_target_port(port))
               for port in service.ports],
        ingress_use_waypoint=waypoints.ingress_uses_waypoint(service.labels, ns_labels),
    )
    if origin is not None and origin.kind == "ServiceEntry":
        message.subject_alt_names.extend(str(san) for san in spec.get("subjectAltNames") or ())
    else:
        balancing = _load_balancing(service, spec)
        if balancing is not None:
            message.load_balancing.CopyFrom(balancing)
    waypoint = _gateway_address(ctx.service_waypoints.get(
        service_key(service.namespace, service.hostname)))
    if waypoint is not None:
        message.waypoint.CopyFrom(waypoint)
    return message


def addresses(push: PushContext) -> list[pb.Address]:
    """Every workload's and service's Address: workloads in registry order, then services
    by hostname."""
    ctx = _Context(push)
    out = []
    for workload in push.registry.workloads:
        obj = ctx.objects.get((workload.kind, workload.namespace, workload.name))
        built = None if obj is None else _workload(
            ctx, workload, obj, workload_uid(workload.kind, workload.namespace, workload.name))
        if built is not None:
            out.append(pb.Address(workload=built))
    for obj in push.objects("ServiceEntry"):
        out.extend(pb.Address(workload=built) for built in _entry_endpoints(ctx, obj))
    for obj in push.objects("EndpointSlice"):
        out.extend(pb.Address(workload=built) for built in _slice_workloads(ctx, obj))
    for _, service in sorted(push.services.items()):
        if service.external_name:
            continue  # ExternalName: an alias, no address of its own
        out.append(pb.Address(service=_service(ctx, service)))
    return out


class Addresses:
    """``istio.workload.Address`` for ztunnels: the same for every one, made once per epoch."""

    type_url = types.ADDRESS
    proxy_kinds = frozenset({"ztunnel"})
    # Workloads, services, namespaces' labels, waypoints, selector policies: nearly every
    # kind; regenerate on any change rather than miss one.
    depends_on = None

    def generate(self, push: PushContext, proxy: Proxy, memo: dict[Any, Any]
                 ) -> list[pb.Address]:
        if "addresses" not in memo:
            memo["addresses"] = addresses(push)
        built: list[pb.Address] = memo["addresses"]
        return built


@hookimpl
def pilotfish_xds_generator() -> Addresses:
    return Addresses()
