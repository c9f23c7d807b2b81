"""May a node agent have a certificate for another workload's identity?

ztunnel serves every ambient pod of its node with the pod's own SPIFFE certificate, so it
asks the CA for identities that are not its own (metadata ``ImpersonatedIdentity``). As
istiod (``CA_TRUSTED_NODE_ACCOUNTS``, ``security/pkg/server/ca/node_auth.go``), the CA allows
it only when

1. the caller's service account is a trusted node agent's (``istio-system/ztunnel`` or
   ``kube-system/ztunnel`` by default);
2. the caller proved itself with a token bound to its pod — a TokenReview's
   ``authentication.kubernetes.io/pod-name``, or the ``kubernetes.io.pod`` claim of the local
   node's token — and that pod exists (the same one: its UID, when the token names one),
   runs as that service account, and so tells the node (``spec.nodeName``). A certificate
   names no pod, so it does not do;
3. a pod running as the requested identity (not finished) is on that same node.

Pods without ``spec.nodeName`` count as being on one unnamed node: the local node of file
mode, where pods are written without one. On a cluster a node agent that holds a pod token is
scheduled, so it never shares the unnamed node with unscheduled pods.

Sans-IO: the caller, the request and the pods (discovery's config store) in; the identity
to certify, or a ``CertError`` saying why not, out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from pilotfish.core.objects import ConfigObject
from pilotfish.core.security.identity import Identity, IdentityError, parse_spiffe_id
from pilotfish.core.security.provider import CertError, Refusal

IMPERSONATED_IDENTITY = "ImpersonatedIdentity"  # the CSR metadata key, as Istio names it
# Istio's CA_TRUSTED_NODE_ACCOUNTS default: ztunnel's service account where it is installed.
TRUSTED_NODE_ACCOUNTS = ("istio-system/ztunnel", "kube-system/ztunnel")
_FINISHED = ("Succeeded", "Failed")


def _denied(message: str) -> CertError:
    return CertError(Refusal.PERMISSION_DENIED, message)


def service_account(pod: ConfigObject) -> str:
    """The pod's service account, as Kubernetes defaults it."""
    spec = pod.spec
    return str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")


def node_name(pod: ConfigObject) -> str:
    return str(pod.spec.get("nodeName") or "")


def _running(pod: ConfigObject) -> bool:
    return (pod.body.get("status") or {}).get("phase") not in _FINISHED


def authorize_impersonation(caller: Identity, requested: str, trust_domain: str,
                            pods: Iterable[ConfigObject],
                            trusted: Collection[str] = TRUSTED_NODE_ACCOUNTS) -> Identity:
    """The identity ``caller`` may have certified in place of its own when it asks for
    ``requested`` (a SPIFFE ID), or ``CertError``."""
    account = f"{caller.namespace}/{caller.service_account}"
    if account not in trusted:
        raise _denied(f"caller {account} is not a node agent (trusted node accounts: "
                      f"{', '.join(trusted) or 'none'}), so it may not ask for "
                      f"{IMPERSONATED_IDENTITY} {requested}")
    try:
        domain, wanted = parse_spiffe_id(requested)
    except IdentityError as exc:
        raise CertError(Refusal.INVALID_ARGUMENT,
                        f"{IMPERSONATED_IDENTITY}: {exc}") from exc
    if domain != trust_domain:
        raise _denied(f"{IMPERSONATED_IDENTITY} {requested} is in trust domain {domain!r}, "
                      f"not this mesh's {trust_domain!r}")
    if not caller.pod:
        raise _denied(f"node agent {account} proved itself by {caller.source}, which names "
                      "no pod, so its node is unknown: send the pod token (authorization: "
                      "Bearer) to ask for another workload's identity")
    pods = list(pods)
    own = next((p for p in pods if p.kind == "Pod" and p.namespace == caller.namespace
                and p.name == caller.pod), None)
    if own is None:
        raise _denied(f"node agent {account}: its pod {caller.namespace}/{caller.pod} is not "
                      "known to discovery, so its node is unknown")
    uid = str(own.metadata.get("uid") or "")
    if caller.pod_uid and uid and caller.pod_uid != uid:
        # A pod re-created under the same name: the token is the old one's, whose node
        # says nothing about where the new one runs. The agent retries with its new token.
        raise _denied(f"node agent {account}: its token is bound to pod "
                      f"{caller.namespace}/{caller.pod} with UID {caller.pod_uid}, but the "
                      f"pod of that name now has UID {uid}")
    if service_account(own) != caller.service_account:
        raise _denied(f"node agent {account}: its pod {caller.namespace}/{caller.pod} runs as "
                      f"service account {service_account(own)!r}, not "
                      f"{caller.service_account!r}")
    node = node_name(own)
    if not any(p.kind == "Pod" and p.namespace == wanted.namespace
               and service_account(p) == wanted.service_account and node_name(p) == node
               and _running(p) for p in pods):
        where = f"node {node!r}" if node else "the node of pods without spec.nodeName"
        raise _denied(f"identity {requested} is not on the node agent's node: no pod of "
                      f"service account {wanted.namespace}/{wanted.service_account} runs on "
                      f"{where} (where {caller.namespace}/{caller.pod} runs)")
    return Identity(wanted.namespace, wanted.service_account,
                    source=f"{IMPERSONATED_IDENTITY} by {account} ({caller.pod})")
