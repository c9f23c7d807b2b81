"""The controllers a cluster runs besides the kubelet, as the local node runs them (sans-IO).

- Kubernetes' Deployment and ReplicaSet controllers: an ``apps/v1`` Deployment becomes
  ``spec.replicas`` (default 1) Pods named ``<deployment>-<template hash>-<suffix>``,
  labelled as the template says plus ``pod-template-hash``. The hash and the suffixes are
  derived from the Deployment (Kubernetes draws the suffix at random), so the same config
  always gives the same pods: running ``up`` again, or scaling from 2 to 3, keeps the pods
  that were there; editing the template changes the hash, so every pod is replaced.
- Istio's Gateway deployment controller: every Gateway API Gateway of a class Istio
  serves gets what istiod's ``kube-gateway.yaml`` template makes for it, a ServiceAccount,
  a Service and a Deployment ``<gateway>-<class>`` whose pods carry the
  ``gateway.networking.k8s.io/gateway-name`` label and whose only container is the proxy
  (``istio/proxyv2`` with ``proxy router``), which the node runs as ``pilotfish agent
  --type router``. A Gateway of class ``istio-waypoint`` is a waypoint (ambient mode's L7
  proxy): the same three objects, named as the Gateway, with pods labelled
  ``gateway.istio.io/managed: istio.io-mesh-controller`` (and out of ambient capture) whose
  proxy runs as ``proxy waypoint``, and a Service with the HBONE port 15008.

``cluster_view`` puts the user's objects and what these controllers make together: the
objects the cluster holds, and the pods the node must run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from pilotfish.core.ambient.enrollment import DATAPLANE_MODE_LABEL
from pilotfish.core.ambient.waypoints import HBONE_PORT, MESH_CONTROLLER, WAYPOINT_CLASS
from pilotfish.core.gateway_api import BUILTIN_CLASSES, GATEWAY_NAME_LABEL, GROUP
from pilotfish.core.gateway_api.status import CONTROLLER, WAYPOINT_CONTROLLER
from pilotfish.core.objects import ConfigObject, Source

TEMPLATE_HASH_LABEL = "pod-template-hash"
# Kubernetes' rand.SafeEncodeString alphabet: no vowels, no 0/1/3 (no words, no look-alikes).
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
SUFFIX_LENGTH = 5
GATEWAY_CLASS_LABEL = "gateway.networking.k8s.io/gateway-class-name"
MANAGED_LABEL = "gateway.istio.io/managed"
MANAGED_VALUE = "istio.io-gateway-controller"
PROXY_IMAGE = "istio/proxyv2"
STATUS_PORT = 15021
_CONTROLLER_SOURCE = Source("<gateway deployment controller>")
# The class istiod makes for waypoints, served by its mesh controller.


def safe_encode(text: str) -> str:
    """Kubernetes' ``rand.SafeEncodeString``: each byte mapped into ``SAFE_ALPHABET``."""
    return "".join(SAFE_ALPHABET[b % len(SAFE_ALPHABET)] for b in text.encode())


def _fnv32a(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def template_hash(template: Mapping[str, Any]) -> str:
    """The ``pod-template-hash``: FNV-32a of the template, safe-encoded, as Kubernetes
    computes it (over canonical JSON here, where Kubernetes hashes Go's dump of the struct:
    the values differ from a cluster's, the properties are the same)."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    return safe_encode(str(_fnv32a(canonical.encode())))


def pod_suffix(namespace: str, replica_set: str, index: int) -> str:
    """A stable stand-in for the 5 random characters the ReplicaSet controller picks."""
    digest = hashlib.sha256(f"{namespace}/{replica_set}/{index}".encode()).digest()
    return "".join(SAFE_ALPHABET[b % len(SAFE_ALPHABET)] for b in digest[:SUFFIX_LENGTH])


def replicas(deployment: ConfigObject) -> int:
    value = deployment.spec.get("replicas")
    return 1 if value is None else max(0, int(value))


def _uid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "pilotfish:" + "/".join(parts)))


def deployment_pods(deployment: ConfigObject) -> list[ConfigObject]:
    """The Pods a Deployment's ReplicaSet keeps running."""
    template = deployment.spec.get("template") or {}
    if not isinstance(template, Mapping):
        return []
    digest = template_hash(template)
    replica_set = f"{deployment.name}-{digest}"
    metadata = template.get("metadata") or {}
    labels = {**(metadata.get("labels") or {}), TEMPLATE_HASH_LABEL: digest}
    out = []
    for index in range(replicas(deployment)):
        name = f"{replica_set}-{pod_suffix(deployment.namespace, replica_set, index)}"
        meta: dict[str, Any] = {
            "name": name, "namespace": deployment.namespace, "labels": dict(labels),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                 "name": replica_set, "controller": True,
                                 "uid": _uid(deployment.namespace, replica_set)}],
        }
        if metadata.get("annotations"):
            meta["annotations"] = dict(metadata["annotations"])
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                "spec": copy.deepcopy(dict(template.get("spec") or {}))}
        out.append(ConfigObject(api_version="v1", kind="Pod", name=name,
                                namespace=deployment.namespace, body=body,
                                source=deployment.source))
    return out


def is_deployment(obj: ConfigObject) -> bool:
    return obj.kind == "Deployment" and obj.group == "apps"


def gateway_classes(objects: Iterable[ConfigObject]) -> dict[str, str]:
    """Class name → controller name; ``istio`` and ``istio-waypoint`` exist without an
    object, as istiod makes them."""
    out = dict(BUILTIN_CLASSES)
    for obj in objects:
        if obj.kind == "GatewayClass" and obj.group == GROUP:
            out[obj.name] = str(obj.spec.get("controllerName") or "")
    return out


def served_gateways(objects: Sequence[ConfigObject]) -> list[ConfigObject]:
    """The Gateway API Gateways whose class Istio's controllers (so pilotfish) serve:
    gateways, and waypoints."""
    classes = gateway_classes(objects)
    return [o for o in objects if o.kind == "Gateway" and o.group == GROUP
            and classes.get(str(o.spec.get("gatewayClassName") or "")) in (
                CONTROLLER, WAYPOINT_CONTROLLER)]


def is_waypoint(gateway: ConfigObject) -> bool:
    return gateway.spec.get("gatewayClassName") == WAYPOINT_CLASS


def gateway_deployment_name(gateway: ConfigObject) -> str:
    """Istio's ``<gateway>-<class>`` (its ``gateway.istio.io/name-override`` aside); a
    waypoint's objects carry the Gateway's own name."""
    if is_waypoint(gateway):
        return gateway.name
    return f"{gateway.name}-{gateway.spec.get('gatewayClassName')}"


def _controlled(kind: str, api_version: str, gateway: ConfigObject, name: str,
                labels: Mapping[str, str], spec: Mapping[str, Any] | None) -> ConfigObject:
    """One object the controller makes for ``gateway``, owned by it and carrying its
    ``spec.infrastructure`` annotations (its labels are in ``labels``), as Istio's do."""
    annotations = dict((gateway.spec.get("infrastructure") or {}).get("annotations") or {})
    metadata: dict[str, Any] = {
        "name": name, "namespace": gateway.namespace, "labels": dict(labels),
        "ownerReferences": [{"apiVersion": f"{GROUP}/v1", "kind": "Gateway",
                             "name": gateway.name,
                             "uid": _uid(gateway.namespace, "Gateway", gateway.name)}],
    }
    if annotations:
        metadata["annotations"] = annotations
    body: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": metadata}
    if spec is not None:
        body["spec"] = dict(spec)
    return ConfigObject(api_version=api_version, kind=kind, name=name,
                        namespace=gateway.namespace, body=body, source=_CONTROLLER_SOURCE)


def gateway_objects(gateway: ConfigObject) -> list[ConfigObject]:
    """What Istio's deployment controller makes for one Gateway: ServiceAccount, Service,
    Deployment. The Service is ClusterIP unless the Gateway asks for an IP address: then a
    LoadBalancer with that ``loadBalancerIP``, which the node gives from its pool."""
    name = gateway_deployment_name(gateway)
    cls = str(gateway.spec.get("gatewayClassName") or "")
    owned = {GATEWAY_NAME_LABEL: gateway.name, GATEWAY_CLASS_LABEL: cls}
    infrastructure = (gateway.spec.get("infrastructure") or {})
    extra_labels = dict(infrastructure.get("labels") or {})
    extra_annotations = dict(infrastructure.get("annotations") or {})
    waypoint = is_waypoint(gateway)
    managed = MESH_CONTROLLER if waypoint else MANAGED_VALUE
    pod_labels = {"sidecar.istio.io/inject": "false",
                  "service.istio.io/canonical-name": name,
                  "service.istio.io/canonical-revision": "latest",
                  **extra_labels, **owned, MANAGED_LABEL: managed}
    if waypoint:  # a waypoint takes HBONE itself: ztunnel must not capture it
        pod_labels[DATAPLANE_MODE_LABEL] = "none"
    ports = []
    seen: set[int] = set()
    for listener in gateway.spec.get("listeners") or ():
        port = int(listener.get("port") or 0)
        if port and port not in seen:
            seen.add(port)
            name_of = "mesh" if waypoint and port == HBONE_PORT else \
                f"{str(listener.get('protocol') or 'tcp').lower()}-{port}"
            ports.append({"name": name_of, "port": port, "protocol": "TCP"})
    service_ports = [{"name": "status-port", "port": STATUS_PORT, "protocol": "TCP"}, *ports]
    template: dict[str, Any] = {
        "metadata": {"labels": pod_labels,
                     "annotations": {**extra_annotations, "istio.io/rev": "default"}},
        "spec": {
            "serviceAccountName": name,
            # Routers bind the listeners' ports (80, 443) as uid 1337.
            "securityContext": {"sysctls": [
                {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
            "containers": [{
                "name": "istio-proxy", "image": PROXY_IMAGE,
                "args": ["proxy", "waypoint" if waypoint else "router"],
                "securityContext": {"runAsUser": 1337, "runAsGroup": 1337},
            }],
        },
    }
    service: dict[str, Any] = {"type": "ClusterIP",
                               "selector": {GATEWAY_NAME_LABEL: gateway.name},
                               "ports": service_ports}
    asked = [str(a.get("value")) for a in gateway.spec.get("addresses") or ()
             if str(a.get("type") or "IPAddress") == "IPAddress" and a.get("value")]
    if asked:  # as Istio's template: the first address, for the load balancer to give
        service.update(type="LoadBalancer", loadBalancerIP=asked[0])
    return [
        _controlled("ServiceAccount", "v1", gateway, name, {**extra_labels, **owned}, None),
        _controlled("Service", "v1", gateway, name, {**extra_labels, **owned}, service),
        _controlled("Deployment", "apps/v1", gateway, name,
                    {**extra_labels, **owned, MANAGED_LABEL: managed}, {
                        "replicas": 1,
                        "selector": {"matchLabels": {GATEWAY_NAME_LABEL: gateway.name}},
                        "template": template}),
    ]


@attrs.frozen
class ClusterView:
    """The user's objects plus what the controllers made from them."""

    objects: tuple[ConfigObject, ...]  # everything the cluster holds (pods included)
    pods: tuple[ConfigObject, ...]  # the pods the node runs, by (namespace, name) order


def cluster_view(user: Iterable[ConfigObject]) -> ClusterView:
    objects = list(user)
    taken = {(o.kind, o.namespace, o.name) for o in objects}
    made = [made for gateway in served_gateways(objects) for made in gateway_objects(gateway)
            if (made.kind, made.namespace, made.name) not in taken]  # the user's win
    objects += made
    pods = [o for o in objects if o.kind == "Pod" and o.group == ""]
    names = {(p.namespace, p.name) for p in pods}
    for deployment in (o for o in objects if is_deployment(o)):
        for pod in deployment_pods(deployment):
            if (pod.namespace, pod.name) not in names:
                names.add((pod.namespace, pod.name))
                pods.append(pod)
                objects.append(pod)
    pods.sort(key=lambda p: (p.namespace, p.name))
    return ClusterView(tuple(objects), tuple(pods))


def owner(pod: ConfigObject) -> str:
    """``Deployment/NAME`` for a Deployment's pod ("" for a Pod the user wrote)."""
    for ref in pod.metadata.get("ownerReferences") or ():
        if ref.get("kind") == "ReplicaSet":
            name = str(ref.get("name") or "")
            return f"Deployment/{name.rsplit('-', 1)[0]}"
    return ""
