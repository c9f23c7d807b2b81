"""Every proxy of a mesh reconnecting at once (discovery restarted under a large mesh) is
served: gRPC's own backlog of streams not yet taken up by the event loop does not cancel
any of them (it cancels at random past 1,000 by default)."""

from __future__ import annotations

import asyncio

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from pilotfish.core.xds import types
from pilotfish.testing.mesh import LocalMesh
from pilotfish.testing.xds_client import METHOD, node

STREAMS = 1500
# Enough services, and a scope per stream (its own labels), that taking up each stream
# costs discovery a generation: the loop falls behind the storm, as under a real mesh.
CONFIG = "---\n".join(f"""\
apiVersion: v1
kind: Service
metadata: {{name: web-{n}, namespace: shop}}
spec:
  selector: {{app: web-{n}}}
  ports: [{{name: http, port: 80}}]
""" for n in range(100))


async def storm(address: str) -> list[str]:
    """Open every stream at once on one connection; what each one ended with."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.stream_stream(
            METHOD, request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString)

        async def one(index: int) -> str:
            request = discovery_pb2.DiscoveryRequest(
                type_url=types.CLUSTER,
                node=node(f"sidecar~10.8.{index // 250}.{index % 250 + 1}~s{index}.shop~"
                          "shop.svc.cluster.local", {"LABELS": {"pod": str(index)}}))
            stream = call(iter([request]))
            try:
                async for _ in stream:
                    return "answered"
                return "ended"
            except grpc.aio.AioRpcError as exc:
                return exc.code().name
            finally:
                stream.cancel()

        return await asyncio.gather(*(one(i) for i in range(STREAMS)))


def test_a_reconnect_storm_loses_no_stream(tmp_path):
    with LocalMesh(tmp_path) as mesh:
        mesh.write("web.yaml", CONFIG)
        # What is tested is gRPC's backlog; on a loaded machine the loop can take longer
        # than the 10 s first-request deadline to read the last streams' requests.
        mesh.start_discovery("discovery: {xdsLimits: {streamsPerPeer: 5000, "
                             "firstRequestTimeout: 120s}}\n")
        outcomes = asyncio.run(storm(f"127.0.0.1:{mesh.xds_port}"))
    failed = {o: outcomes.count(o) for o in set(outcomes) if o != "answered"}
    assert not failed, f"of {STREAMS} streams opened at once: {failed}"
