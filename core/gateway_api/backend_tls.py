"""BackendTLSPolicy → DestinationRule TLS, as Istio converts it.

A policy targets Services (a ``sectionName`` picks one port by name) and says how the
proxies in front of them originate TLS: ``validation.hostname`` is the SNI and, unless
``subjectAltNames`` say otherwise, the name the backend's certificate must carry; the
trust anchors are ConfigMaps (``ca.crt``) named in ``caCertificateRefs``, served to the
proxies over SDS as ``configmap://NAMESPACE/NAME``, or the system's
(``wellKnownCACertificates: System``). Where two policies target the same Service and
port, the oldest wins and the other is Accepted=False (Conflicted).

Status goes to each policy under the Gateways whose routes send to its Services.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pilotfish.core.gateway_api.status import CONTROLLER, Condition, Statuses, conditions
from pilotfish.core.objects import ConfigObject
from pilotfish.core.security import credentials

if TYPE_CHECKING:
    from pilotfish.core.gateway_api import _Inputs

CONFIGMAP_REF = "configmap://"


def convert(policies: Sequence[ConfigObject], inputs: _Inputs, ancestors: Mapping[
        tuple[str, str], set[tuple[str, str]]], status: Statuses
            ) -> tuple[list[ConfigObject], set[tuple[str, str]]]:
    """DestinationRules for the policies, and the ConfigMaps (namespace, name) they trust.

    ``ancestors``: (namespace, Service) → the Gateways (namespace, name) routing to it."""
    from pilotfish.core.gateway_api import GROUP, derived, service_host

    trusted: set[tuple[str, str]] = set()
    taken: set[tuple[str, str, str]] = set()  # (namespace, service, section)
    # (namespace, service) → the policy first seen, its whole-Service TLS, per-port TLS
    rules: dict[tuple[str, str], tuple[ConfigObject, dict[str, Any], dict[int, Any]]] = {}
    for policy in sorted(policies, key=lambda p: (p.creation, p.namespace, p.name)):
        validation = policy.spec.get("validation") or {}
        resolved = Condition("ResolvedRefs", True, "ResolvedRefs", "All references resolved")
        tls: dict[str, Any] = {"mode": "SIMPLE"}
        hostname = str(validation.get("hostname") or "")
        if hostname:
            tls["sni"] = hostname
        sans = [str(s.get("hostname") or s.get("uri") or "")
                for s in validation.get("subjectAltNames") or ()]
        tls["subjectAltNames"] = [s for s in sans if s] or ([hostname] if hostname else [])
        refs = validation.get("caCertificateRefs") or ()
        for ref in refs[:1]:  # Istio reads the first
            name = str(ref.get("name") or "")
            if str(ref.get("group") or "") != "" or ref.get("kind") != "ConfigMap":
                resolved = Condition("ResolvedRefs", False, "InvalidKind",
                                     f"caCertificateRefs: kind {ref.get('kind')} is not "
                                     "supported")
            elif not _holds_ca(inputs, policy.namespace, name):
                resolved = Condition("ResolvedRefs", False, "InvalidCACertificateRef",
                                     f"ConfigMap {policy.namespace}/{name} holds no PEM "
                                     "certificate under ca.crt")
            else:
                tls["credentialName"] = f"{CONFIGMAP_REF}{policy.namespace}/{name}"
                trusted.add((policy.namespace, name))
        accepted = Condition("Accepted", True, "Accepted", "Policy accepted")
        if not resolved.status:
            accepted = Condition("Accepted", False, "NoValidCACertificate",
                                 "no valid CA certificate")
        gateways: set[tuple[str, str]] = set()
        for target in policy.spec.get("targetRefs") or ():
            if str(target.get("group") or "") != "" or target.get("kind") != "Service":
                continue
            name, section = str(target.get("name") or ""), str(target.get("sectionName") or "")
            service = inputs.services.get((policy.namespace, name))
            if service is None:
                continue
            gateways |= ancestors.get((policy.namespace, name), set())
            key = (policy.namespace, name, section)
            if key in taken:
                accepted = Condition("Accepted", False, "Conflicted",
                                     "an older policy targets the same Service and port")
                continue
            taken.add(key)
            if not resolved.status:
                continue
            port = _port(service, section)
            if section and port is None:
                continue
            _, whole, ports = rules.setdefault((policy.namespace, name), (policy, {}, {}))
            if port is None:
                whole.update(tls)
            else:
                ports[port] = tls
        status.set(policy, {"ancestors": [
            {"ancestorRef": {"group": GROUP, "kind": "Gateway", "namespace": ns,
                             "name": gw},
             "controllerName": CONTROLLER,
             "conditions": conditions(policy, [accepted, resolved])}
            for ns, gw in sorted(gateways)]})
    # One DestinationRule per Service (a proxy takes one per host): the policy for the
    # whole Service as its TLS, those for a port as port-level settings.
    out = []
    for (namespace, name), (origin, whole, ports) in sorted(rules.items()):
        traffic: dict[str, Any] = {}
        if whole:
            traffic["tls"] = whole
        if ports:
            traffic["portLevelSettings"] = [{"port": {"number": port}, "tls": tls}
                                            for port, tls in sorted(ports.items())]
        out.append(derived(origin, "DestinationRule", f"{name}-btls", namespace, {
            "host": service_host(inputs, namespace, name), "trafficPolicy": traffic}))
    return out, trusted


def _holds_ca(inputs: _Inputs, namespace: str, name: str) -> bool:
    configmap = inputs.configmaps.get((namespace, name))
    data = (configmap.body.get("data") or {}) if configmap is not None else {}
    try:
        credentials.pem_certificates(("data", "ca.crt"), str(data.get("ca.crt") or "").encode())
    except credentials.CredentialError:
        return False
    return True


def _port(service: ConfigObject, section: str) -> int | None:
    if not section:
        return None
    for port in service.spec.get("ports") or ():
        if port.get("name") == section:
            return int(port.get("port") or 0) or None
    return None
