"""The labels of Istio's standard metrics, as far as the cluster a request went to tells
them. Sans-IO; ``request_metrics`` adds what each request's access-log entry tells.

Istio's cluster names say who the traffic was for: ``outbound|PORT|SUBSET|HOST`` (this
proxy was the client: reporter ``source``) and ``inbound|PORT||`` (this proxy fronts the
server: reporter ``destination``). This proxy's own side comes from its node metadata
(`Workload`), the destination service from the cluster's ``istio`` metadata or its host.
Where nothing can say something the label is ``unknown`` (``-`` for flags), Istio's own
value for "not known"; docs/agent.md has the table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from pilotfish.core.proxy_backend import ProxyOptions

UNKNOWN = "unknown"
PEER_FIELDS = ("workload", "workload_namespace", "principal", "app", "version",
               "canonical_service", "canonical_revision", "cluster")
# Istio's label order (istio_stats); HTTP series add response_code and grpc_response_status.
LABELS = (
    "reporter",
    *(f"source_{f}" for f in PEER_FIELDS),
    *(f"destination_{f}" for f in PEER_FIELDS[:-1]),
    "destination_service", "destination_service_name", "destination_service_namespace",
    "destination_cluster",
    "request_protocol", "response_code", "grpc_response_status", "response_flags",
    "connection_security_policy",
)
HTTP_ONLY = ("response_code", "grpc_response_status")
# The filter state a proxy that terminates HBONE (connect_terminate) leaves for the internal
# hop to its inbound chains, which has no TLS of its own: the tunnel's peer and our own
# identity, as that mTLS handshake proved them. On that hop they stand for the handshake in
# `security_labels`, as they stand for the peer's certificate in RBAC.
PEER_PRINCIPAL = "io.istio.peer_principal"
LOCAL_PRINCIPAL = "io.istio.local_principal"
SPECIAL_CLUSTERS = {  # name → reporter
    "PassthroughCluster": "source",
    "BlackHoleCluster": "source",
    "InboundPassthroughCluster": "destination",
}


@attrs.frozen
class Workload:
    """This proxy's own side of every series (Istio reads it from node metadata)."""

    name: str
    namespace: str
    app: str = UNKNOWN
    version: str = UNKNOWN
    canonical_service: str = UNKNOWN
    canonical_revision: str = "latest"
    cluster: str = "Kubernetes"

    @classmethod
    def from_labels(cls, name: str, namespace: str, labels: Mapping[str, str],
                    cluster: str = "Kubernetes") -> Workload:
        # Istio's canonical-service fallbacks: the explicit label, the recommended
        # Kubernetes label, app, then the workload name.
        service = (labels.get("service.istio.io/canonical-name")
                   or labels.get("app.kubernetes.io/name") or labels.get("app") or name)
        revision = (labels.get("service.istio.io/canonical-revision")
                    or labels.get("app.kubernetes.io/version") or labels.get("version")
                    or "latest")
        return cls(name, namespace, labels.get("app", UNKNOWN), labels.get("version", UNKNOWN),
                   service, revision, cluster)

    @classmethod
    def of(cls, options: ProxyOptions) -> Workload:
        """The proxy's own workload, from its node metadata (as Istio reads it)."""
        return cls.from_labels(
            str(options.metadata.get("WORKLOAD_NAME") or options.name), options.namespace,
            options.labels, str(options.metadata.get("CLUSTER_ID") or "Kubernetes"))

    def labels(self, side: str) -> dict[str, str]:
        return {
            f"{side}_workload": self.name, f"{side}_workload_namespace": self.namespace,
            f"{side}_principal": UNKNOWN,  # only the TLS handshake knows (see docs)
            f"{side}_app": self.app, f"{side}_version": self.version,
            f"{side}_canonical_service": self.canonical_service,
            f"{side}_canonical_revision": self.canonical_revision,
            f"{side}_cluster": self.cluster,
        }


@attrs.frozen
class ServiceRef:
    """A service a cluster leads to, from the cluster's ``istio`` metadata."""

    host: str
    name: str
    namespace: str


@attrs.frozen
class ClusterRef:
    name: str
    direction: str  # inbound, outbound, or the special cluster's own name
    port: str = ""
    subset: str = ""
    host: str = ""


def parse_cluster_name(name: str) -> ClusterRef | None:
    """``outbound|80|v1|web.shop.svc.cluster.local``, ``inbound|8080||`` or a special
    cluster → ClusterRef; None for anything else (xds-grpc, prometheus_stats, ...)."""
    if name in SPECIAL_CLUSTERS:
        return ClusterRef(name, name)
    parts = name.split("|")
    if len(parts) != 4 or parts[0] not in ("inbound", "outbound") or not parts[1].isdigit():
        return None
    return ClusterRef(name, parts[0], parts[1], parts[2], parts[3])


def service_from_host(host: str) -> ServiceRef:
    """``name.ns.svc.<domain>`` → (name, ns); any other host names itself, namespace
    unknown (a ServiceEntry's namespace is only in the cluster metadata)."""
    labels = host.split(".")
    if len(labels) >= 3 and labels[2] == "svc":
        return ServiceRef(host, labels[0], labels[1])
    return ServiceRef(host, host, UNKNOWN)


def spiffe_name(uris: Iterable[str]) -> str:
    """A certificate's identity among its URI names: the SPIFFE ID, else the first."""
    names = list(uris)
    return next((u for u in names if u.startswith("spiffe://")), names[0] if names else "")


def security_labels(reporter: str, peer: str, local: str) -> dict[str, str]:
    """The TLS labels of one request or connection, from the peer's identity and ours as
    the handshake showed them ("" for none). A client-side proxy cannot tell the upstream's
    TLS from its own entry: ``unknown``, as Istio reports. On the server side a certificate
    of ours without the peer's is still mutual TLS: inbound chains that present one
    require the client's, which some entries (tcp_proxy's at connect) do not show yet."""
    if reporter != "destination":
        return {"connection_security_policy": UNKNOWN}
    if not peer and not local:
        return {"connection_security_policy": "none"}
    return {"connection_security_policy": "mutual_tls", "source_principal": peer or UNKNOWN,
            "destination_principal": local or UNKNOWN}


def reporter_of(cluster: ClusterRef) -> str:
    """``source`` when this proxy was the client, ``destination`` when it fronts the server."""
    return SPECIAL_CLUSTERS.get(cluster.direction) or (
        "source" if cluster.direction == "outbound" else "destination")


def series_labels(cluster: ClusterRef, workload: Workload,
                  service: ServiceRef | None) -> dict[str, str]:
    """Every label of one cluster's series except the HTTP-only ones."""
    reporter = reporter_of(cluster)
    labels = {name: UNKNOWN for name in LABELS if name not in HTTP_ONLY}
    labels.update(workload.labels(reporter))  # this proxy is the side that reports
    if service is None and cluster.host:
        service = service_from_host(cluster.host)
    if service is not None:
        labels.update(destination_service=service.host, destination_service_name=service.name,
                      destination_service_namespace=service.namespace)
    elif cluster.direction in SPECIAL_CLUSTERS:
        labels["destination_service_name"] = cluster.name
    labels.update(reporter=reporter, response_flags="-")
    return labels
