"""ztunnel's slim delta xDS messages (core/ztunnel/discovery.proto) are Envoy's on the wire:
every field they keep has Envoy's number, type and cardinality, bytes go both ways between
them and Envoy's types, and ztunnel's WDS session gets discovery's real answers through them
over the native gRPC client."""

from __future__ import annotations

import anyio
import pytest
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2 as envoy
from google.protobuf import any_pb2, duration_pb2, struct_pb2
from google.rpc import status_pb2

from pilotfish.core import meshconfig
from pilotfish.core.ambient.state import WorkloadState
from pilotfish.core.native.xds_client import DELTA_METHOD, XdsClient
from pilotfish.core.plugins import Plugins
from pilotfish.core.xds import types
from pilotfish.core.yamlload import load_text
from pilotfish.core.ztunnel import discovery_pb2 as slim
from pilotfish.core.ztunnel import discovery_wire
from pilotfish.core.ztunnel.wds import WdsSession
from pilotfish.discovery.app import Discovery, DiscoveryOptions
from pilotfish.testing.processes import free_port

PAIRS = [(slim.Node, base_pb2.Node), (slim.Status, status_pb2.Status),
         (slim.DeltaDiscoveryRequest, envoy.DeltaDiscoveryRequest),
         (slim.Resource, envoy.Resource),
         (slim.DeltaDiscoveryResponse, envoy.DeltaDiscoveryResponse)]


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=[p[1].__name__ for p in PAIRS])
def test_every_kept_field_is_envoys(ours, theirs) -> None:
    envoys = {f.name: f for f in theirs.DESCRIPTOR.fields}
    for field in ours.DESCRIPTOR.fields:
        real = envoys[field.name]
        assert (field.number, field.type, field.is_repeated) == \
            (real.number, real.type, real.is_repeated), field.full_name
        if field.message_type is not None:  # same shape: the name without the package
            assert field.message_type.name == real.message_type.name, field.full_name


@pytest.mark.parametrize("ours", [slim, discovery_wire], ids=["protobuf", "protowire"])
def test_a_request_reads_as_envoys_with_every_field(ours) -> None:
    # ztunnel sends protowire's (core/protowire.py); the protobuf classes are the reference.
    metadata = (struct_pb2.Struct(fields={"NAME": struct_pb2.Value(string_value="z")})
                if ours is slim else
                discovery_wire.Struct(fields={"NAME": discovery_wire.Value(string_value="z")}))
    request = ours.DeltaDiscoveryRequest(
        node=ours.Node(id="ztunnel~10.0.0.2~z.istio-system~istio-system.svc.cluster.local",
                       cluster="Kubernetes", metadata=metadata),
        type_url=types.ADDRESS, resource_names_subscribe=["a"],
        resource_names_unsubscribe=["b"], initial_resource_versions={"c": "1"},
        response_nonce="n1", error_detail=ours.Status(code=3, message="bad c"))
    real = envoy.DeltaDiscoveryRequest.FromString(request.SerializeToString())
    assert real.node.id.startswith("ztunnel~") and real.node.cluster == "Kubernetes"
    assert real.node.metadata["NAME"] == "z"
    assert (list(real.resource_names_subscribe), list(real.resource_names_unsubscribe),
            dict(real.initial_resource_versions)) == (["a"], ["b"], {"c": "1"})
    assert real.response_nonce == "n1"
    assert (real.error_detail.code, real.error_detail.message) == (3, "bad c")


def test_a_response_reads_as_ours_and_keeps_what_ours_leaves_out() -> None:
    real = envoy.DeltaDiscoveryResponse(
        system_version_info="v7", type_url=types.ADDRESS, nonce="n2",
        removed_resources=["gone"],
        resources=[envoy.Resource(name="x", version="3", aliases=["y"],
                                  resource=any_pb2.Any(type_url=types.ADDRESS, value=b"\x01"),
                                  ttl=duration_pb2.Duration(seconds=5))])
    real.control_plane.identifier = "istiod-1"
    ours = slim.DeltaDiscoveryResponse.FromString(real.SerializeToString())
    assert (ours.system_version_info, ours.type_url, ours.nonce) == ("v7", types.ADDRESS, "n2")
    assert list(ours.removed_resources) == ["gone"]
    (resource,) = ours.resources
    assert (resource.name, resource.version, list(resource.aliases)) == ("x", "3", ["y"])
    assert resource.resource.value == b"\x01"
    # ttl and control_plane are not ours, but they survive a round trip as unknown fields.
    assert envoy.DeltaDiscoveryResponse.FromString(ours.SerializeToString()) == real


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
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-evil, namespace: shop}
spec: {action: DENY, rules: [{from: [{source: {namespaces: [evil]}}]}]}
"""
ZTUNNEL = "ztunnel~10.0.0.2~ztunnel-x7k2p.istio-system~istio-system.svc.cluster.local"


def test_the_wds_session_takes_discoverys_answers_through_the_slim_types() -> None:
    config = meshconfig.from_dict(yaml.safe_load("profile: [sidecar, ambient]\n"))
    port = free_port()
    discovery = Discovery(config, Plugins.from_config(config, groups=["xds"]),
                          DiscoveryOptions(xds_address=f"127.0.0.1:{port}",
                                           debug_address=None))
    objects, errors = load_text(CONFIG, "ambient.yaml")
    assert not errors, errors
    discovery.store.replace("test", objects)
    state = WorkloadState()
    session = WdsSession(discovery_wire.Node(id=ZTUNNEL, cluster="Kubernetes"), state)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(discovery.run, [])
            ready = anyio.Event()

            async def changed() -> None:
                if not session.ready():
                    ready.set()

            client = XdsClient(f"127.0.0.1:{port}", session, changed, DELTA_METHOD,
                               response_type=discovery_wire.DeltaDiscoveryResponse)
            tg.start_soon(client.run)
            with anyio.fail_after(10):
                await ready.wait()
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert [w.name for w in state.workloads()] == ["cart-0"]
    assert [p.name for p in state.policies()] == ["deny-evil"]
    assert session.rejected == {}
