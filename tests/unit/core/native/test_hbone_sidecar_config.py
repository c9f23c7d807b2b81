"""The native proxy as a sidecar that sees ambient pods: it takes the sidecar kind's xDS as
discovery sends it (the generators' real output) and picks each endpoint's transport by
every key of its ``envoy.transport_socket_match`` metadata — HBONE's internal hop for an
ambient pod, with the host metadata the hop passes through; Istio's mTLS for a sidecar's
pod; plaintext for a plain one — in a service that mixes them too. Sans-IO."""

from __future__ import annotations

import asyncio

from pilotfish.core.native import internal
from pilotfish.core.native.config import ConfigState, Endpoint
from pilotfish.core.xds import types
from pilotfish.translators.cds import SidecarClusters
from pilotfish.translators.eds import Endpoints
from tests.unit.translators.test_hbone_sidecar import (
    AMBIENT,
    CONFIG,
    LEGACY,
    PLAIN,
    _push,
    _sidecar,
)

MIXED = "outbound|9080||mixed.shop.svc.cluster.local"
# One service backed by an ambient pod and by a sidecar's pod.
MIXED_CONFIG = CONFIG + """\
---
apiVersion: v1
kind: Pod
metadata: {name: mixed-ambient, namespace: shop, labels: {app: mixed}}
spec: {serviceAccountName: mixed, containers: [{name: app, ports: [{containerPort: 8080}]}]}
status: {phase: Running, podIP: 10.0.0.41}
---
apiVersion: v1
kind: Pod
metadata:
  name: mixed-sidecar
  namespace: shop
  labels: {app: mixed, security.istio.io/tlsMode: istio, istio.io/dataplane-mode: none}
  annotations: {sidecar.istio.io/status: '{}'}
spec: {serviceAccountName: mixed, containers: [{name: app, ports: [{containerPort: 8080}]}]}
status: {phase: Running, podIP: 10.0.0.42}
---
apiVersion: v1
kind: Service
metadata: {name: mixed, namespace: shop}
spec:
  selector: {app: mixed}
  ports: [{name: http, port: 9080, targetPort: 8080}]
"""


def state() -> ConfigState:
    push, proxy = _push(MIXED_CONFIG), _sidecar()
    found = ConfigState()
    for type_url, generator in ((types.CLUSTER, SidecarClusters()),
                                (types.ENDPOINT, Endpoints())):
        found.apply(type_url, [(getattr(m, "cluster_name", "") or m.name,
                                m.SerializeToString())
                               for m in generator.generate(push, proxy, {})], [])
    return found


def endpoints(found: ConfigState, name: str) -> dict[str, Endpoint]:
    return {e.host: e for e in found.endpoints_of(found.clusters[name])}


def test_an_ambient_pod_goes_through_the_internal_hop_with_its_metadata() -> None:
    found = state()
    cluster = found.clusters[AMBIENT]
    (server,) = endpoints(found, AMBIENT).values()
    assert server.internal == "connect_originate"
    assert cluster.passthrough_for(server) == ("envoy.filters.listener.original_dst", "tunnel")

    async def handed() -> internal.Handoff:
        return internal.handoff(cluster, server, {})

    handoff = asyncio.run(handed())
    # what connect_originate's original_dst filter restores the pod's address from
    assert handoff.metadata["envoy.filters.listener.original_dst"] == {
        "local": "10.0.0.11:8080"}
    assert handoff.metadata["tunnel"]["identity"] == "spiffe://cluster.local/ns/shop/sa/server"


def test_sidecars_pods_keep_mutual_tls_and_plain_pods_plaintext() -> None:
    found = state()
    (legacy,) = endpoints(found, LEGACY).values()
    assert found.clusters[LEGACY].origination(legacy) is not None
    (plain,) = endpoints(found, PLAIN).values()
    assert found.clusters[PLAIN].origination(plain) is None


def test_a_service_of_both_kinds_gives_each_endpoint_its_own_transport() -> None:
    found = state()
    cluster = found.clusters[MIXED]
    by_host = endpoints(found, MIXED)
    ambient = next(e for e in by_host.values() if e.internal)
    assert cluster.passthrough_for(ambient) is not None
    # The HBONE match asks for tunnel=http, which the sidecar's pod has not: its mTLS.
    sidecar = by_host["10.0.0.42"]
    origination = cluster.origination(sidecar)
    assert origination is not None and origination.secret == "default"  # its own certificate
    assert cluster.passthrough_for(sidecar) is None
