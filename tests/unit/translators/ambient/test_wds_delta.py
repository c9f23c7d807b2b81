"""A ztunnel's delta subscription to discovery gets its Workload Discovery types over gRPC:
the ``wds-addresses`` and ``wds-authorization`` plugins, added by name in the mesh config."""

from __future__ import annotations

import anyio
import grpc
import pytest
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from pilotfish.core import meshconfig
from pilotfish.core.ambient import authorization_pb2, workload_pb2
from pilotfish.core.plugins import Plugins
from pilotfish.core.xds import types
from pilotfish.core.xds.generator import Generators
from pilotfish.core.yamlload import load_text
from pilotfish.discovery.app import Discovery, DiscoveryOptions
from pilotfish.testing.processes import free_port
from pilotfish.translators.ambient.addresses import Addresses
from pilotfish.translators.ambient.authorization import Authorizations

CONFIG = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: cart-0, namespace: shop, labels: {app: cart}}
spec: {nodeName: node-a, containers: [{name: app}]}
status: {phase: Running, podIP: 10.0.1.5}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {clusterIP: 10.96.0.10, selector: {app: cart}, ports: [{name: http, port: 80}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-evil, namespace: shop}
spec: {action: DENY, rules: [{from: [{source: {namespaces: [evil]}}]}]}
"""
# As docs/ambient.md shows it.
MESH_CONFIG = """
plugins:
  xds: {add: [wds-addresses, wds-authorization]}
"""
ZTUNNEL = "ztunnel~10.0.0.2~ztunnel-x7k2p.istio-system~istio-system.svc.cluster.local"


async def subscribe(port: int, type_url: str) -> discovery_pb2.DeltaDiscoveryResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stream = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel) \
            .DeltaAggregatedResources(timeout=10)
        await stream.write(discovery_pb2.DeltaDiscoveryRequest(
            node=base_pb2.Node(id=ZTUNNEL), type_url=type_url))
        response = await stream.read()
        stream.cancel()
        return response


@pytest.mark.parametrize("mesh_config", [MESH_CONFIG, "profile: [sidecar, ambient]\n"],
                         ids=["added-by-name", "ambient-profile"])
def test_a_ztunnels_delta_subscription_gets_addresses_and_authorizations(
        mesh_config: str) -> None:
    config = meshconfig.from_dict(yaml.safe_load(mesh_config))
    discovery = Discovery(config, Plugins.from_config(config, groups=["xds"]),
                          DiscoveryOptions(xds_address=f"127.0.0.1:{(port := free_port())}",
                                           debug_address=None))
    objects, errors = load_text(CONFIG, "ambient.yaml")
    assert not errors, errors
    discovery.store.replace("test", objects)
    got = {}

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(discovery.run, [])
            for type_url in (types.ADDRESS, types.AUTHORIZATION):
                got[type_url] = await subscribe(port, type_url)
            tg.cancel_scope.cancel()

    anyio.run(main)
    addresses = got[types.ADDRESS]
    assert addresses.type_url == types.ADDRESS
    assert sorted(r.name for r in addresses.resources) == [
        "Kubernetes//Pod/shop/cart-0", "shop/cart.shop.svc.cluster.local"]
    by_name = {r.name: r.resource for r in addresses.resources}
    cart = workload_pb2.Address.FromString(by_name["Kubernetes//Pod/shop/cart-0"].value)
    assert cart.workload.tunnel_protocol == workload_pb2.HBONE
    assert by_name["shop/cart.shop.svc.cluster.local"].type_url == types.ADDRESS
    (policy,) = got[types.AUTHORIZATION].resources
    assert policy.name == "shop/deny-evil"
    assert authorization_pb2.Authorization.FromString(policy.resource.value).action == \
        authorization_pb2.DENY


def test_a_sidecar_gets_no_workload_discovery() -> None:
    """The generators serve proxies of kind ztunnel only."""
    generators = Generators.of(Addresses(), Authorizations())
    assert generators.get("sidecar", types.ADDRESS) is None
    assert generators.get("ztunnel", types.AUTHORIZATION) is not None
