"""The local node's view of the cluster: what an API server and kubelet would fill in.

Sans-IO. Given the user's objects and what the node knows (pod IPs from CNI, which pods got
a sidecar), produce the objects discovery reads: Services get a ClusterIP (allocated from
the service CIDR when the user gave none), Pods get ``status.podIP`` and, when injected,
the ``security.istio.io/tlsMode: istio`` label injection adds (and
``networking.istio.io/tunnel: http`` when its ProxyConfig enables HBONE). Also name resolution for a
pod (``/etc/hosts`` lines, Kubernetes' name forms), kube-proxy's job for pods without a
sidecar (DNAT from a Service VIP:port to its ready endpoints), and a load balancer's: a
``LoadBalancer`` Service asking for a ``loadBalancerIP`` from the node's pool gets it, held
by one of its pods (as MetalLB's layer-2 mode announces it from one node).
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from pilotfish.core.model import Service, labels_match
from pilotfish.core.objects import ConfigObject
from pilotfish.core.push_context import PushContext
from pilotfish.node.pods import hbone_labels

DEFAULT_SERVICE_CIDR = "10.96.0.0/16"
TLS_MODE_LABEL = "security.istio.io/tlsMode"
# The top of the pod subnet (up to 15 addresses, a quarter of a small one) is kept from
# pod IPAM for load-balancer addresses.
LB_POOL_MAX = 15


def load_balancer_pool(subnet: str) -> tuple[str, str]:
    """The subnet's load-balancer pool, as (first, last) address ("", "" when too small);
    pods get the addresses below ``first``."""
    network = ipaddress.ip_network(subnet)
    size = min(LB_POOL_MAX, (network.num_addresses - 2) // 4)
    if size <= 0:
        return "", ""
    last = network.broadcast_address - 1
    return str(last - (size - 1)), str(last)


def pod_range_end(subnet: str) -> str:
    """The last address host-local may give a pod ("" for the whole subnet)."""
    first, _ = load_balancer_pool(subnet)
    return str(ipaddress.ip_address(first) - 1) if first else ""


@attrs.frozen
class LoadBalancerAddress:
    """A Service's load-balancer address and the pod holding it."""

    ip: str
    pod: tuple[str, str]  # (namespace, name)


def load_balancers(objects: Iterable[ConfigObject], pods: Mapping[tuple[str, str], PodRuntime],
                   subnet: str) -> dict[tuple[str, str], LoadBalancerAddress]:
    """The ``LoadBalancer`` Services that get their ``spec.loadBalancerIP``, by (namespace,
    name): the address must be in the node's pool and no other Service's (the first by
    namespace and name keeps it), and a running pod must back it (the first by name). A
    Service left out stays pending, as it would with a cloud that has no such address."""
    first, last = load_balancer_pool(subnet)
    if not first:
        return {}
    low, high = ipaddress.ip_address(first), ipaddress.ip_address(last)
    objects = sorted(objects, key=lambda o: (o.namespace, o.name))
    running = [o for o in objects if o.kind == "Pod" and (o.namespace, o.name) in pods]
    out: dict[tuple[str, str], LoadBalancerAddress] = {}
    taken: set[str] = set()
    for svc in (o for o in objects if o.kind == "Service" and o.group == ""):
        if svc.spec.get("type") != "LoadBalancer":
            continue
        try:
            ip = ipaddress.ip_address(str(svc.spec.get("loadBalancerIP") or ""))
        except ValueError:
            continue
        selector = svc.spec.get("selector") or {}
        backing = [p for p in running if p.namespace == svc.namespace
                   and selector and labels_match(selector, p.labels)]
        if ip.version != low.version or not int(low) <= int(ip) <= int(high) \
                or str(ip) in taken or not backing:
            continue
        taken.add(str(ip))
        out[(svc.namespace, svc.name)] = LoadBalancerAddress(
            str(ip), (backing[0].namespace, backing[0].name))
    return out


def allocate_vip(namespace: str, name: str, cidr: str, taken: set[str]) -> str:
    """A stable ClusterIP for a service: hashed into the CIDR, probing past collisions."""
    network = ipaddress.ip_network(cidr)
    size = network.num_addresses - 2  # no network or broadcast address
    seed = int.from_bytes(hashlib.sha256(f"{namespace}/{name}".encode()).digest()[:8], "big")
    for probe in range(size):
        address = str(network.network_address + 1 + (seed + probe) % size)
        if address not in taken and not address.endswith(".1"):
            taken.add(address)
            return address
    raise ValueError(f"service CIDR {cidr} is full")


@attrs.frozen
class PodRuntime:
    """What the node learned while starting a pod."""

    ip: str
    sidecar: bool


def cluster_objects(
    objects: Iterable[ConfigObject], pods: Mapping[tuple[str, str], PodRuntime],
    service_cidr: str = DEFAULT_SERVICE_CIDR,
    balanced: Mapping[tuple[str, str], LoadBalancerAddress] | None = None,
) -> list[dict[str, Any]]:
    """The user's objects as the cluster holds them (plain dicts, ready to write as YAML);
    ``balanced`` (from :func:`load_balancers`) gives Services their ingress address."""
    objects = list(objects)
    taken = {
        str(o.spec.get("clusterIP")) for o in objects
        if o.kind == "Service" and o.spec.get("clusterIP") not in (None, "", "None")
    }
    out = []
    for obj in sorted(objects, key=lambda o: (o.kind, o.namespace, o.name)):
        body = copy.deepcopy(dict(obj.body))
        body.setdefault("metadata", {})["namespace"] = obj.namespace
        if obj.kind == "Service":
            spec = body.setdefault("spec", {})
            if not spec.get("clusterIP") and spec.get("type") != "ExternalName":
                spec["clusterIP"] = allocate_vip(obj.namespace, obj.name, service_cidr, taken)
            address = (balanced or {}).get((obj.namespace, obj.name))
            if address is not None:
                body.setdefault("status", {})["loadBalancer"] = {"ingress": [{"ip": address.ip}]}
        elif obj.kind == "Pod":
            runtime = pods.get((obj.namespace, obj.name))
            if runtime is None:
                continue  # not running (yet): no endpoints
            body.setdefault("status", {})["podIP"] = runtime.ip
            body["status"]["phase"] = "Running"
            if runtime.sidecar:
                labels = body["metadata"].setdefault("labels", {})
                labels[TLS_MODE_LABEL] = "istio"
                labels.update(hbone_labels(obj))
        out.append(body)
    return out


def host_names(service: Service, viewer_namespace: str, domain: str) -> list[str]:
    """Names a pod in ``viewer_namespace`` may use for a service, as Kubernetes DNS gives."""
    if not service.hostname.endswith(f".svc.{domain}"):
        return [service.hostname]
    names = [service.hostname, f"{service.name}.{service.namespace}.svc",
             f"{service.name}.{service.namespace}"]
    if service.namespace == viewer_namespace:
        names.append(service.name)
    return names


def hosts_file(push: PushContext, pod_name: str, pod_ip: str, namespace: str) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             f"{pod_ip}\t{pod_name}"]
    for service in sorted(push.services.values(), key=lambda s: s.hostname):
        if service.vips and not service.hostname.startswith("*"):
            names = " ".join(host_names(service, namespace, push.mesh.domain))
            lines.append(f"{service.vips[0]}\t{names}")
    return "\n".join(lines) + "\n"


def resolv_conf(namespace: str, domain: str, nameserver: str = "") -> str:
    """A pod's resolv.conf. Every service name is in /etc/hosts (read first). The nameserver
    is the node's own address on the bridge, standing where kube-dns' VIP would: nothing
    answers there, so an unknown name fails at once, but an ambient pod's in-pod rules send
    what is addressed to it to ztunnel, which knows the mesh's names."""
    server = f"nameserver {nameserver}\n" if nameserver else ""
    return (f"{server}search {namespace}.svc.{domain} svc.{domain} {domain}\n"
            "options ndots:5 timeout:1 attempts:1\n")


SERVICES_CHAIN = "PILOTFISH-SERVICES"


def service_nat_rules(push: PushContext) -> str:
    """kube-proxy's rules for one pod's netns, as ``iptables-restore --noflush`` input.

    Locally generated traffic to a VIP:port is DNATed to one ready endpoint, chosen
    uniformly (the statistic match gives endpoint i the probability 1/(n-i) among the
    rest). Sidecar pods get the same rules after Istio's capture: the app's traffic is
    redirected to the proxy first; the proxy connects to endpoints directly.
    """
    lines = ["*nat", f":{SERVICES_CHAIN} - [0:0]"]
    for service in sorted(push.services.values(), key=lambda s: s.hostname):
        if not service.vips:
            continue
        for port in service.ports:
            if port.protocol.value == "UDP":
                continue
            endpoints = [e for e in push.endpoints(service.hostname, port.port)
                         if e.health.value == "HEALTHY"]
            for vip in service.vips:
                if ":" in vip:
                    continue
                lines.extend(_dnat(vip, port.port, [(e.address, e.port) for e in endpoints]))
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def _dnat(vip: str, port: int, endpoints: Sequence[tuple[str, int]]) -> list[str]:
    match = f"-A {SERVICES_CHAIN} -d {vip}/32 -p tcp -m tcp --dport {port}"
    rules = []  # no endpoints: no rule; the VIP itself answers nobody
    for index, (address, target) in enumerate(endpoints):
        left = len(endpoints) - index
        chance = "" if left == 1 else (
            f" -m statistic --mode random --probability {1 / left:.11f}"
        )
        rules.append(f"{match}{chance} -j DNAT --to-destination {address}:{target}")
    return rules
