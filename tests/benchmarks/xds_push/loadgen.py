"""Simulated proxies for the xDS benchmarks: N ADS streams that behave like Envoy.

Each client has a connection of its own, as every Envoy has (a channel option unique to
the client keeps gRPC from sharing one subchannel between channels to the same target),
subscribes to clusters and listeners (wildcard), follows them with endpoint and route
subscriptions for the names they reference, and ACKs every response — in SotW or delta.

Two scenarios, each printing one JSON object with its measurements: ``push`` (initial sync,
one-endpoint changes, a minute of one change per second, one service's and every cluster's
change) and ``soak`` (proxies reconnecting with fresh labels for a while as config changes
every second). Run it pinned to its own core, away from discovery; its own CPU is reported
beside discovery's, so a saturated generator shows.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
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
    def __init__(self, index: int, mode: str, namespace: str, labels: dict[str, str],
                 name: str = ""):
        self.index = index
        self.mode = mode
        metadata = struct_pb2.Struct()
        metadata.update({"NAMESPACE": namespace, "LABELS": labels,
                         "ISTIO_VERSION": "loadgen"})
        self.node = base_pb2.Node(
            id=f"sidecar~10.200.{index // 250}.{index % 250 + 1}~{name or f'load-{index}'}."
               f"{namespace}~{namespace}.svc.cluster.local",
            cluster=f"load.{namespace}", metadata=metadata,
        )
        self.outbox: list[Any] = []  # requests to write after the response at hand
        # SotW ACKs repeat every subscribed name: one request per type is built when the
        # names change and copied for each ACK (Envoy is C++; the generator must not be
        # what a push waits for).
        self.templates: dict[str, Any] = {}
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
        self._queue(message)

    def _queue(self, message: Any) -> None:
        if self.first:
            message.node.CopyFrom(self.node)
            self.first = False
        self.outbox.append(message)

    def sotw_ack(self, type_url: str, version: str, nonce: str) -> None:
        """An ACK naming the type's subscription, copied from its template."""
        template = self.templates.get(type_url)
        if template is None:
            template = self.templates[type_url] = discovery_pb2.DiscoveryRequest(
                type_url=type_url, resource_names=sorted(self.subscribed.get(type_url, ())))
        message = discovery_pb2.DiscoveryRequest()
        message.CopyFrom(template)
        message.version_info = version
        message.response_nonce = nonce
        self._queue(message)

    async def flush(self, call: Any) -> None:
        while self.outbox:
            await call.write(self.outbox.pop(0))

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
        follow: tuple[str, set[str]] | None = None
        if type_url == CDS:
            follow = (EDS, eds_names(list(response.resources)))
        elif type_url == LDS:
            follow = (RDS, rds_names(list(response.resources)))
        self.sotw_nonce[type_url] = response.nonce
        self.sotw_version[type_url] = response.version_info
        self.sotw_ack(type_url, response.version_info, response.nonce)
        self._acked(type_url, self._sotw_names(response) if type_url == EDS else ())
        if follow is not None:
            dep, wanted = follow
            if wanted != self.subscribed[dep]:
                self.subscribed[dep] = wanted
                self.templates.pop(dep, None)
                self.sotw_ack(dep, self.sotw_version.get(dep, ""),
                              self.sotw_nonce.get(dep, ""))

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

    async def run(self, xds: str) -> None:
        """One connection of the client's own, for as long as the task runs."""
        channel = grpc.aio.insecure_channel(xds, options=[
            ("grpc.max_receive_message_length", 256 * 1024 * 1024),
            ("grpc.pilotfish_loadgen_client", self.node.id)])
        try:
            await self._stream(ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel))
        finally:
            await channel.close(grace=None)

    async def _stream(self, stub: Any) -> None:
        sotw = self.mode == "sotw"
        call = stub.StreamAggregatedResources() if sotw else stub.DeltaAggregatedResources()
        on_response = self.on_sotw if sotw else self.on_delta
        self.start()
        await self.flush(call)
        async for response in call:
            on_response(response, response.ByteSize())
            await self.flush(call)


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU used by discovery and by this generator over a phase, as fractions of a core."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = (time.monotonic(), cpu_seconds(pid), own_cpu_seconds())

    def read(self) -> dict[str, float]:
        wall = time.monotonic() - self.start[0]
        return {"seconds": round(wall, 2),
                "discovery_cores": round((cpu_seconds(self.pid) - self.start[1]) / wall, 3),
                "loadgen_cores": round((own_cpu_seconds() - self.start[2]) / wall, 3)}


def tcp_connections_to(port: int) -> int:
    """This process' established TCP connections to ``port`` (/proc/net/tcp{,6}): proof
    that every simulated proxy has a connection of its own."""
    own = {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
           if os.path.exists(f"/proc/self/fd/{fd}")}
    inodes = {link[len("socket:["):-1] for link in own if link.startswith("socket:[")}
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


def quiet_collector() -> None:
    """The generator stands in for 2,000 Envoys, which have no garbage collector: once the
    clients are set up, keep CPython's full collections (a walk of every client's state,
    a pause of every simulated proxy at once) out of the timed phases."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def change_endpoint(config: Path, target: int) -> None:
    """Move svc-TARGET's pod to a new IP (the file written atomically, as a mounted
    ConfigMap changes)."""
    path = config / f"svc-{target}.yaml"
    text = path.read_text()
    current = re.search(r"podIP: (\d+)\.(\d+)\.(\d+)\.(\d+)", text)
    assert current is not None, path
    a, b, c, d = (int(x) for x in current.groups())
    new = text.replace(current.group(0), f"podIP: {a}.{(b + 1) % 250}.{c}.{d}")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)


def cluster_name(target: int) -> str:
    return f"outbound|9080||svc-{target}.ns-0.svc.cluster.local"


def debug(address: str, path: str) -> Any:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=30) as response:
        return json.loads(response.read())


STREAMS: list[asyncio.Task[None]] = []  # the push scenario's clients, each streaming


async def wait_all(events: list[asyncio.Event], timeout: float) -> None:
    """Until every event is set; a client's stream that ended fails the wait at once
    (its proxy will never ACK), with the stream's error."""
    waiting = asyncio.ensure_future(asyncio.gather(*(e.wait() for e in events)))
    done, _ = await asyncio.wait([waiting, *STREAMS], timeout=timeout,
                                 return_when=asyncio.FIRST_COMPLETED)
    if waiting in done:
        return
    waiting.cancel()
    for task in done:
        task.result()  # raises what ended the stream
        raise RuntimeError("a simulated proxy's stream ended")
    raise TimeoutError(f"not every simulated proxy answered within {timeout:g}s")


async def endpoint_change(clients: list[Client], config: Path, target: int,
                          timeout: float) -> tuple[float, int]:
    """Change one endpoint; seconds until every client ACKed it, and the bytes it cost."""
    for client in clients:
        client.watch_name = cluster_name(target)
        client.watch_event = asyncio.Event()
    before = sum(c.bytes_received for c in clients)
    written = time.monotonic()
    change_endpoint(config, target)
    await wait_all([c.watch_event for c in clients], timeout)
    took = max(c.watch_acked_at for c in clients) - written
    return took, sum(c.bytes_received for c in clients) - before


async def push_scenario(args: argparse.Namespace) -> dict[str, Any]:
    config = Path(args.config_dir)
    clients = [Client(i, args.mode, f"ns-{i % args.scopes}", {"app": f"app-{i % args.scopes}"})
               for i in range(args.clients)]
    rss_before = rss_kib(args.discovery_pid)
    started = time.monotonic()
    sync_cpu = CpuMeter(args.discovery_pid)
    tasks = [asyncio.create_task(c.run(args.xds)) for c in clients]
    STREAMS.extend(tasks)
    await wait_all([c.synced for c in clients], args.timeout)
    initial = time.monotonic() - started
    # Settle: let follow-up subscriptions (routes, endpoints) finish.
    await asyncio.sleep(1.0)
    initial_cpu = sync_cpu.read()
    quiet_collector()
    rss_after = rss_kib(args.discovery_pid)
    initial_bytes = sum(c.bytes_received for c in clients)
    connections = len(debug(args.debug, "/debug/adsz"))
    tcp = tcp_connections_to(int(args.xds.rsplit(":", 1)[1]))

    # One endpoint changes: a pod gets a new IP.
    endpoint_times = []
    endpoint_bytes = 0
    for round_ in range(args.rounds):
        took, endpoint_bytes = await endpoint_change(clients, config, round_ % args.services,
                                                     args.timeout)
        endpoint_times.append(took)
        await asyncio.sleep(0.5)

    # A minute (--churn-seconds) of one endpoint change per second.
    churn_times = []
    churn_cpu = CpuMeter(args.discovery_pid)
    deadline = time.monotonic() + args.churn_seconds
    tick = 0
    while time.monotonic() < deadline:
        began = time.monotonic()
        took, _ = await endpoint_change(clients, config, (args.rounds + tick) % args.services,
                                        args.timeout)
        churn_times.append(took)
        tick += 1
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - began)))
    churn = churn_cpu.read()
    rss_churn = rss_kib(args.discovery_pid)

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
    STREAMS.clear()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "mode": args.mode,
        "clients": args.clients,
        "connections": connections,
        "tcp_connections": tcp,
        "services": args.services,
        "scopes": args.scopes,
        "initial_sync_seconds": round(initial, 3),
        "initial_sync_cpu": initial_cpu,
        "initial_bytes": initial_bytes,
        "one_endpoint_change_seconds": [round(t, 3) for t in endpoint_times],
        "one_endpoint_change_bytes": endpoint_bytes,
        "churn_changes": len(churn_times),
        "churn_change_seconds_max": round(max(churn_times), 3),
        "churn_change_seconds_median": round(sorted(churn_times)[len(churn_times) // 2], 3),
        "churn_cpu": churn,
        "one_service_change_seconds": round(one_service, 3),
        "one_service_change_bytes": one_service_bytes,
        "full_push_seconds": round(full_push, 3),
        "full_push_bytes": full_bytes,
        "discovery_rss_kib_before": rss_before,
        "discovery_rss_kib_after": rss_after,
        "discovery_rss_kib_after_churn": rss_churn,
        "discovery_rss_kib_peak": rss_kib(args.discovery_pid, "VmHWM"),
        "discovery_rss_kib_per_proxy": round((rss_after - rss_before) / args.clients, 1),
        "server_bytes_sent": sum(c["bytes_sent"] for c in adsz),
        "last_push_build_seconds": push["buildSeconds"],
        "loadgen_max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


async def soak_scenario(args: argparse.Namespace) -> dict[str, Any]:
    """N proxy slots, each connecting with fresh labels (a new pod: new name, new scope),
    holding its stream a random while, then leaving; one endpoint change per second, and a
    DestinationRule rewritten every tenth second. Discovery's RSS is sampled throughout."""
    config = Path(args.config_dir)
    rng = random.Random(7)
    generation = [0] * args.clients
    connects = 0
    synced_connects = 0

    async def slot(index: int) -> None:
        nonlocal connects, synced_connects
        await asyncio.sleep(rng.uniform(0, args.hold_min))  # stagger the first wave
        while True:
            generation[index] += 1
            name = f"soak-{index}-{generation[index]}"
            client = Client(index, args.mode, f"ns-{index % args.scopes}",
                            {"app": name, "pod-template-hash": f"{generation[index]}"}, name)
            task = asyncio.create_task(client.run(args.xds))
            connects += 1
            try:
                await asyncio.wait_for(client.synced.wait(), args.timeout)
                synced_connects += 1
                await asyncio.sleep(rng.uniform(args.hold_min, args.hold_max))
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def changes() -> None:
        tick = 0
        while True:
            change_endpoint(config, tick % args.services)
            if tick % 10 == 0:
                (config / "soak-rule.yaml").write_text(
                    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                    "metadata: {name: soak, namespace: ns-0}\n"
                    f"spec:\n  host: svc-{tick % args.services}.ns-0.svc.cluster.local\n"
                    f"  trafficPolicy: {{connectionPool: {{tcp: {{maxConnections: "
                    f"{100 + tick}}}}}}}\n")
            tick += 1
            await asyncio.sleep(1.0)

    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    cpu = CpuMeter(args.discovery_pid)
    workers = [asyncio.create_task(slot(i)) for i in range(args.clients)]
    workers.append(asyncio.create_task(changes()))
    try:
        while (elapsed := time.monotonic() - started) < args.duration:
            await asyncio.sleep(min(args.sample_every, args.duration - elapsed))
            push = debug(args.debug, "/debug/push_status")
            samples.append({"t": round(time.monotonic() - started, 1),
                            "rss_kib": rss_kib(args.discovery_pid),
                            "connections": len(debug(args.debug, "/debug/adsz")),
                            "connects": connects,
                            "cache": push.get("cache", {})})
    finally:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    after_first_minute = next(s for s in samples if s["t"] >= args.baseline_at)
    end = samples[-1]
    return {
        "mode": args.mode,
        "clients": args.clients,
        "services": args.services,
        "duration_seconds": args.duration,
        "hold_seconds": [args.hold_min, args.hold_max],
        "connects": connects,
        "synced_connects": synced_connects,
        "cpu": cpu.read(),
        "baseline_at_seconds": args.baseline_at,
        "rss_kib_after_first_minute": after_first_minute["rss_kib"],
        "rss_kib_end": end["rss_kib"],
        "rss_growth_after_first_minute": round(
            end["rss_kib"] / after_first_minute["rss_kib"] - 1, 4),
        "discovery_rss_kib_peak": rss_kib(args.discovery_pid, "VmHWM"),
        "samples": samples,
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
    parser.add_argument("--scenario", choices=["push", "soak"], default="push")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--churn-seconds", type=float, default=60)
    parser.add_argument("--duration", type=float, default=600, help="soak: seconds")
    parser.add_argument("--hold-min", type=float, default=20, help="soak: shortest stream")
    parser.add_argument("--hold-max", type=float, default=60, help="soak: longest stream")
    parser.add_argument("--sample-every", type=float, default=10, help="soak: RSS samples")
    parser.add_argument("--baseline-at", type=float, default=60,
                        help="soak: the RSS the end is compared with, seconds in")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    raise_open_files_limit()
    result = asyncio.run(push_scenario(args) if args.scenario == "push" else
                         soak_scenario(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
