"""The agent's access-log service over a real gRPC unix socket: entries become metrics,
bad input costs one stream and never the server."""

from __future__ import annotations

from pathlib import Path

import anyio
import grpc
import pytest
from envoy.service.accesslog.v3 import als_pb2

from pilotfish.plugins.envoy.access_log_service import SERVICE, AccessLogServer
from pilotfish.plugins.envoy.request_metrics import RequestMetrics
from pilotfish.testing.access_logs import http_entry

METHOD = f"/{SERVICE}/StreamAccessLogs"
INBOUND = "inbound|8080||"


def batch(count: int) -> bytes:
    message = als_pb2.StreamAccessLogsMessage()
    message.identifier.log_name = "pilotfish-metrics"
    for _ in range(count):
        message.http_logs.log_entry.add().CopyFrom(http_entry(INBOUND))
    return message.SerializeToString()


async def send(path: Path, *messages: bytes) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
        call = channel.stream_unary(METHOD, request_serializer=lambda raw: raw,
                                    response_deserializer=lambda raw: raw)
        try:
            await call(iter(messages))
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


def test_batches_are_counted_and_garbage_costs_only_its_stream(tmp_path: Path) -> None:
    metrics = RequestMetrics()
    server = AccessLogServer(tmp_path / "ALS", metrics)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            with anyio.fail_after(10):
                assert await send(server.path, batch(3), batch(2)) is grpc.StatusCode.OK
                assert metrics.entries == 5
                assert await send(server.path, b"\xff\xff\xff") is not grpc.StatusCode.OK
                assert await send(server.path, batch(1)) is grpc.StatusCode.OK
                assert metrics.entries == 6
            assert oct(server.path.stat().st_mode & 0o777) == "0o600"
            tg.cancel_scope.cancel()
        assert not server.path.exists()  # removed on the way out

    anyio.run(main)


def test_a_socket_it_cannot_bind_is_an_os_error_naming_it(tmp_path: Path) -> None:
    server = AccessLogServer(tmp_path / "missing-dir" / "ALS", RequestMetrics())

    with pytest.raises(OSError, match=r"cannot listen for access logs on .*missing-dir/ALS"):
        anyio.run(server.serve)
