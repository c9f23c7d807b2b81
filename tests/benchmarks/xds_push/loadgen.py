"""Simulated proxies for the xDS push benchmark: N ADS streams that behave like Envoy.

Each client subscribes to clusters and listeners (wildcard), follows them with endpoint and
route subscriptions for the names they reference, and ACKs every response — in SotW or
delta. The load generator runs the scenario and prints one JSON object with its
measurements. Run it pinned to its own core, away from discovery.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." \
      "HttpConnectionManager"


def eds_names(resources: list[Any]) -> set[str]:
    names = set()
    for packed in resources:
        cluster = cluster_pb2.Cluster.FromString(packed.value)
        if cluster.type == cluster_pb2.Cluster.EDS:
            names.add(cluster.eds_cluster_config.service_name or cluster.name)
    return names


def rds_names(resources: list[Any]) -> set[str]:
    names = set()
    for packed in resources:
        listener = listener_pb2.Listener.FromString(packed.value)
        for chain in listener.filter_chains:
            for flt in chain.filters:
                if flt.typed_config.type_url == HCM:
                    manager = hcm_pb2.HttpConnectionManager.FromString(flt.typed_config.value)
                    if manager.HasField("rds"):
                        names.add(manager.rds.route_config_name)
    return names


class Client:
    def __init__(self, index: int, mode: str, namespace: str, labels: dict[str, str]):
        self.index = index
        self.mode = mode
        metadata = struct_pb2.Struct()
        metadata.update({"NAMESPACE": namespace, "LABELS": labels,
                         "ISTIO_VERSION": "loadgen"})
        self.node = base_pb2.Node(
            id=f"sidecar~10.200.{index // 250}.{index % 250 + 1}~load-{index}.{namespace}~"
               f"{namespace}.svc.cluster.local",
            cluster=f"load.{namespace}", metadata=metadata,
        )
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.subscribed: dict[str, set[str]] = {EDS: set(), RDS: set()}
        self.sotw_nonce: dict[str, str] = {}
        self.sotw_version: dict[str, str] = {}
        self.known: dict[str, set[str]] = {CDS: set(), LDS: set()}
        self.bytes_received = 0
        self.responses = 0
        self.synced = asyncio.Event()
        self.seen_types: set[str] = set()
        self.watch_name: str | None = None  # a resource whose arrival is timed
        self.watch_event = asyncio.Event()
        self.watch_acked_at = 0.0
        self.acks = {CDS: 0, EDS: 0, LDS: 0, RDS: 0}
        self.cds_acked_at = 0.0
        self.first = True

    # -- requests ----------------------------------------------------------------------

    def request(self, type_url: str, **fields: Any) -> None:
        if self.mode == "sotw":
            message = discovery_pb2.DiscoveryRequest(type_url=type_url, **fields)
        else:
            message = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, **fields)
        if self.first:
            message.node.CopyFrom(self.node)
            self.first = False
        self.queue.put_nowait(message)

    async def requests(self):
        while True:
            item = await self.queue.get()
            if item is None:
                return
            yield item

    def start(self) -> None:
        if self.mode == "sotw":
            self.request(CDS)
            self.request(LDS)
        else:
            self.request(CDS)
            self.request(LDS)

    # -- responses ---------------------------------------------------------------------

    def on_sotw(self, response: Any, size: int) -> None:
        type_url = response.type_url
        self.bytes_received += size
        self.responses += 1
        names: list[str] = []
        follow: tuple[str, set[str]] | None = None
        if type_url == CDS:
            follow = (EDS, eds_names(list(response.resources)))
        elif type_url == LDS:
            follow = (RDS, rds_names(list(response.resources)))
        elif type_url in (EDS, RDS):
            names = sorted(self.subscribed[type_url])
        self.sotw_nonce[type_url] = response.nonce
        self.sotw_version[type_url] = response.version_info
        self.request(type_url, version_info=response.version_info,
                     response_nonce=response.nonce, resource_names=names)
        self._acked(type_url, self._sotw_names(response) if type_url == EDS else ())
        if follow is not None:
            dep, wanted = follow
            if wanted != self.subscribed[dep]:
                self.subscribed[dep] = wanted
                self.request(dep, version_info=self.sotw_version.get(dep, ""),
                             response_nonce=self.sotw_nonce.get(dep, ""),
                             resource_names=sorted(wanted))

    def _sotw_names(self, response: Any) -> list[str]:
        if self.watch_name is None:
            return []
        return [endpoint_pb2.ClusterLoadAssignment.FromString(r.value).cluster_name
                for r in response.resources]

    def on_delta(self, response: Any, size: int) -> None:
        type_url = response.type_url
        self.bytes_received += size
        self.responses += 1
        self.request(type_url, response_nonce=response.nonce)
        names = [r.name for r in response.resources]
        self._acked(type_url, names)
        if type_url in (CDS, LDS):
            known = self.known[type_url]
            known |= set(names)
            known -= set(response.removed_resources)
            dep = EDS if type_url == CDS else RDS
            packed = [r.resource for r in response.resources]
            referenced = eds_names(packed) if type_url == CDS else rds_names(packed)
            add = referenced - self.subscribed[dep]
            if add:
                self.subscribed[dep] |= add
                self.request(dep, resource_names_subscribe=sorted(add))

    def _acked(self, type_url: str, names: Any) -> None:
        now = time.monotonic()
        self.acks[type_url] = self.acks.get(type_url, 0) + 1
        if type_url == CDS:
            self.cds_acked_at = now
        self.seen_types.add(type_url)
        if self.watch_name is not None and self.watch_name in names:
            self.watch_acked_at = now
            self.watch_event.set()
        if not self.synced.is_set() and self.seen_types >= {CDS, EDS, LDS, RDS}:
            self.synced.set()

    async def run(self, stub: Any) -> None:
        self.start()
        if self.mode == "sotw":
            call = stub.StreamAggregatedResources(self.requests())
            async for response in call:
                self.on_sotw(response, response.ByteSize())
        else:
            call = stub.DeltaAggregatedResources(self.requests())
            async for response in call:
                self.on_delta(response, response.ByteSize())


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def debug(address: str, path: str) -> Any:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=30) as response:
        return json.loads(response.read())


async def wait_all(events: list[asyncio.Event], timeout: float) -> None:
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), timeout)


async def scenario(args: argparse.Namespace) -> dict[str, Any]:
    config = Path(args.config_dir)
    channels = [grpc.aio.insecure_channel(args.xds, options=[
        ("grpc.max_receive_message_length", 256 * 1024 * 1024)]) for _ in range(
        max(1, args.clients // args.per_channel))]
    stubs = [ads_pb2_grpc.AggregatedDiscoveryServiceStub(c) for c in channels]
    clients = [Client(i, args.mode, f"ns-{i % args.scopes}", {"app": f"app-{i % args.scopes}"})
               for i in range(args.clients)]
    rss_before = rss_kib(args.discovery_pid)
    started = time.monotonic()
    tasks = [asyncio.create_task(c.run(stubs[i % len(stubs)])) for i, c in enumerate(clients)]
    await wait_all([c.synced for c in clients], args.timeout)
    # Settle: let follow-up subscriptions (routes, endpoints) finish.
    await asyncio.sleep(1.0)
    initial = time.monotonic() - started
    rss_after = rss_kib(args.discovery_pid)
    initial_bytes = sum(c.bytes_received for c in clients)

    # One endpoint changes: a pod gets a new IP.
    endpoint_times = []
    for round_ in range(args.rounds):
        target = round_ % args.services
        for client in clients:
            client.watch_name = f"outbound|9080||svc-{target}.ns-0.svc.cluster.local"
            client.watch_event = asyncio.Event()
        before_bytes = sum(c.bytes_received for c in clients)
        path = config / f"svc-{target}.yaml"
        text = path.read_text()
        current = re.search(r"podIP: (\d+)\.(\d+)\.(\d+)\.(\d+)", text)
        assert current is not None, path
        a, b, c, d = (int(x) for x in current.groups())
        new = text.replace(current.group(0), f"podIP: {a}.{(b + 1) % 250}.{c}.{d}")
        written = time.monotonic()
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(new)
        os.replace(tmp, path)
        await wait_all([c.watch_event for c in clients], args.timeout)
        endpoint_times.append(max(c.watch_acked_at for c in clients) - written)
        endpoint_bytes = sum(c.bytes_received for c in clients) - before_bytes
        await asyncio.sleep(0.5)

    async def cluster_change(name: str, text: str) -> tuple[float, int]:
        """Write a rule; time until every client ACKed new clusters, and bytes it cost."""
        for client in clients:
            client.cds_acked_at = 0.0
        cds_before = [c.acks[CDS] for c in clients]
        before_bytes = sum(c.bytes_received for c in clients)
        written = time.monotonic()
        (config / name).write_text(text)

        async def all_cds_acked() -> None:
            while any(c.acks[CDS] <= n for c, n in zip(clients, cds_before, strict=True)):
                await asyncio.sleep(0.01)

        await asyncio.wait_for(all_cds_acked(), args.timeout)
        took = max(c.cds_acked_at for c in clients) - written
        await asyncio.sleep(1.0)  # endpoints for new clusters follow
        return took, sum(c.bytes_received for c in clients) - before_bytes

    # One service changes: a DestinationRule with a subset for it.
    one_service, one_service_bytes = await cluster_change("one-rule.yaml", (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        "metadata: {name: svc-1, namespace: ns-0}\n"
        "spec:\n  host: svc-1.ns-0.svc.cluster.local\n"
        "  subsets: [{name: v1, labels: {app: svc-1}}]\n"
    ))
    # Every cluster changes: a mesh-wide DestinationRule.
    full_push, full_bytes = await cluster_change("mesh-wide-rule.yaml", (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        "metadata: {name: everything, namespace: istio-system}\n"
        "spec:\n  host: '*.svc.cluster.local'\n"
        "  trafficPolicy: {connectionPool: {tcp: {maxConnections: 1000}}}\n"
    ))
    adsz = debug(args.debug, "/debug/adsz")
    push = debug(args.debug, "/debug/push_status")
    for client in clients:
        client.queue.put_nowait(None)
    for task in tasks:
        task.cancel()
    for channel in channels:
        await channel.close()
    return {
        "mode": args.mode,
        "clients": args.clients,
        "services": args.services,
        "scopes": args.scopes,
        "initial_sync_seconds": round(initial, 3),
        "initial_bytes": initial_bytes,
        "one_endpoint_change_seconds": [round(t, 3) for t in endpoint_times],
        "one_endpoint_change_bytes": endpoint_bytes,
        "one_service_change_seconds": round(one_service, 3),
        "one_service_change_bytes": one_service_bytes,
        "full_push_seconds": round(full_push, 3),
        "full_push_bytes": full_bytes,
        "discovery_rss_kib_before": rss_before,
        "discovery_rss_kib_after": rss_after,
        "discovery_rss_kib_per_proxy": round((rss_after - rss_before) / args.clients, 1),
        "server_bytes_sent": sum(c["bytes_sent"] for c in adsz),
        "last_push_build_seconds": push["buildSeconds"],
        "loadgen_max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--xds", required=True)
    parser.add_argument("--debug", required=True)
    parser.add_argument("--discovery-pid", type=int, required=True)
    parser.add_argument("--config-dir", required=True)
    parser.add_argument("--mode", choices=["sotw", "delta"], required=True)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--scopes", type=int, default=10)
    parser.add_argument("--per-channel", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    result = asyncio.run(scenario(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
