"""A gRPC server and a proxyless gRPC client for tests of the ``grpc`` profile.

``serve`` runs a gRPC server that answers ``/pilotfish.testing.Echo/Who`` with its own name
(raw bytes: no generated code needed) and the standard health service
(``grpcio-health-checking``). ``call`` is the proxyless client: it dials an ``xds:///``
target through gRPC's own xDS resolver, with a bootstrap file it writes from the flags
(node metadata ``GENERATOR: grpc``, as Istio's agent writes it) or with the bootstrap
file an agent wrote (``GRPC_XDS_BOOTSTRAP``, ``pilotfish agent --proxy grpc``),
checks the health service once, then calls ``Who`` and prints one answer per line (or
``error: ...``) so a test can follow what the client sees while config changes::

    python -m pilotfish.testing.grpc_apps serve --listen 127.0.40.1:7070 --name v1
    python -m pilotfish.testing.grpc_apps call --discovery 127.0.0.1:15010 \\
        --target xds:///echo.grpc.svc.cluster.local:7070 --count 200
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from concurrent import futures
from typing import Any

SERVICE = "pilotfish.testing.Echo"
WHO = f"/{SERVICE}/Who"


def bootstrap(discovery: str, node_id: str, namespace: str) -> dict[str, Any]:
    """gRPC's xDS bootstrap for a proxyless client of discovery (plaintext xDS on 15010)."""
    return {
        "xds_servers": [{"server_uri": discovery, "channel_creds": [{"type": "insecure"}],
                         "server_features": ["xds_v3"]}],
        "node": {"id": node_id, "metadata": {"GENERATOR": "grpc", "NAMESPACE": namespace}},
    }


def serve(listen: str, name: str) -> None:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(8))

    def who(request: bytes, context: grpc.ServicerContext) -> bytes:
        return name.encode()

    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
        "Who": grpc.unary_unary_rpc_method_handler(who),
    })])
    checker = health.HealthServicer()
    checker.set("", health_pb2.HealthCheckResponse.SERVING)
    checker.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    if not server.add_insecure_port(listen):
        raise SystemExit(f"cannot listen on {listen}")
    server.start()
    print(f"serving {name} on {listen}", flush=True)
    server.wait_for_termination()


def call(target: str, discovery: str | None, node_id: str, namespace: str, count: int,
         interval: float, headers: Sequence[tuple[str, str]], timeout: float) -> int:
    # Read once, when the first xds:/// channel of the process starts its xDS client; given
    # inline (gRPC's other bootstrap variable), so there is no file to leave behind. Without
    # --discovery the bootstrap is the one GRPC_XDS_BOOTSTRAP names (an agent wrote it).
    if discovery is not None:
        os.environ["GRPC_XDS_BOOTSTRAP_CONFIG"] = json.dumps(
            bootstrap(discovery, node_id, namespace))
    elif not os.environ.get("GRPC_XDS_BOOTSTRAP"):
        print("error: give --discovery, or a bootstrap file in GRPC_XDS_BOOTSTRAP", flush=True)
        return 2
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + timeout
        while True:  # the first call waits for LDS, RDS, CDS and EDS
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=SERVICE),
                                     timeout=2, wait_for_ready=True)
                print(f"health: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}",
                      flush=True)
                break
            except grpc.RpcError as exc:
                if time.monotonic() > deadline:
                    print(f"error: {exc.code().name}: {exc.details()}", flush=True)
                    return 1
        who = channel.unary_unary(WHO)
        for _ in range(count):
            try:
                print(who(b"", timeout=5, metadata=list(headers)).decode(), flush=True)
            except grpc.RpcError as exc:
                print(f"error: {exc.code().name}: {exc.details()}", flush=True)
            if interval:
                time.sleep(interval)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pilotfish.testing.grpc_apps")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--listen", required=True)
    s.add_argument("--name", required=True)
    c = sub.add_parser("call")
    c.add_argument("--target", required=True, help="xds:///HOST:PORT")
    c.add_argument("--discovery", help="discovery's plaintext xDS HOST:PORT (default: use "
                   "the bootstrap file GRPC_XDS_BOOTSTRAP names, as an agent writes it)")
    c.add_argument("--node-id", default="sidecar~127.0.0.1~client.grpc~grpc.svc.cluster.local")
    c.add_argument("--namespace", default="grpc")
    c.add_argument("--count", type=int, default=1)
    c.add_argument("--interval", type=float, default=0.0, help="seconds between calls")
    c.add_argument("--header", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--timeout", type=float, default=30.0, help="for the first answer")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.listen, args.name)
        return 0
    headers = [tuple(item.split("=", 1)) for item in args.header]
    return call(args.target, args.discovery, args.node_id, args.namespace, args.count,
                args.interval, headers, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
