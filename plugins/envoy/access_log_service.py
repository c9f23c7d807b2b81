"""The agent's gRPC access-log service (Envoy's ``AccessLogService``) on a unix socket.

Envoy streams batches of HTTP and TCP entries (``translators/access_logs.py``) to the
bootstrap's ``als-grpc`` cluster, which is this socket; each batch goes to a
`RequestMetrics`, which the merged metrics endpoint renders. A batch that cannot be read
is counted and dropped; bytes that are not a batch end that stream only. Entries Envoy
makes while the socket is down (an agent restart) are lost: a gap in the metrics.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import grpc
from envoy.service.accesslog.v3 import als_pb2

from pilotfish.core import unix_grpc
from pilotfish.core.metric_overrides import NO_OVERRIDES, Overrides
from pilotfish.plugins.envoy import slim_entries
from pilotfish.plugins.envoy.request_metrics import RequestMetrics

log = logging.getLogger("pilotfish.als")

SERVICE = "envoy.service.accesslog.v3.AccessLogService"


class AccessLogServer:
    def __init__(self, path: Path, metrics: RequestMetrics) -> None:
        self.path = path
        self.metrics = metrics

    def handler(self) -> grpc.GenericRpcHandler:
        async def stream(requests: AsyncIterator[Any], _: grpc.aio.ServicerContext) -> Any:
            overrides = NO_OVERRIDES  # a Telemetry's, in the stream's first message
            async for message in requests:
                if message.HasField("identifier"):
                    overrides = Overrides.from_log_name(message.identifier.log_name)
                try:
                    self.metrics.record_message(message, overrides)
                except (AttributeError, TypeError, ValueError) as exc:
                    self.metrics.bad_batches += 1
                    log.warning("access log: a batch could not be counted: %s", exc)
            return als_pb2.StreamAccessLogsResponse()

        return grpc.method_handlers_generic_handler(SERVICE, {
            "StreamAccessLogs": grpc.stream_unary_rpc_method_handler(
                # Only the fields the metrics read are decoded (``slim_entries``).
                stream, request_deserializer=slim_entries.StreamAccessLogsMessage.FromString,
                response_serializer=als_pb2.StreamAccessLogsResponse.SerializeToString),
        })

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                    ) -> None:
        """Listen on the socket until cancelled."""
        await unix_grpc.serve(self.path, self.handler(), "access logs", task_status=task_status)
