"""Telemetry applied to a proxy's listeners: access logging and metric overrides.

Every HTTP connection manager and tcp_proxy is built with two access loggers
(`access_logs`): the text line on stdout, and the gRPC entry from which the agent makes
Istio's metrics. The text line stays only where the mesh config's ``accessLogFile`` is
``/dev/stdout`` (Istio's default is no access log) or a Telemetry turns access logging on.
A workload's Telemetry (``core/telemetry.py``) changes them per mode, the mode being SERVER
on inbound listeners and CLIENT elsewhere (a gateway is a client, as in Istio):

- the mesh config's ``accessLogEncoding``/``accessLogFormat`` shape the stdout line
  (``access_logs.log_format``), wherever it is kept;
- access logging turns the stdout logger on (an entry not ``disabled``, provider ``envoy``
  or none named) or off (``disabled``); a ``filter.expression`` (CEL over Envoy's
  attributes) becomes the logger's CEL filter;
- metric overrides travel to the agent in the gRPC logger's ``log_name``
  (``pilotfish-metrics;{json}``, read when a log stream opens): metrics ``disabled``, and
  tags removed or upserted with a CEL value, evaluated by the agent on each entry
  (``plugins/envoy/request_metrics.py``); the request headers such values read are added to
  what the entry carries. When every metric of a protocol is disabled its gRPC logger goes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.access_loggers.stream.v3.stream_pb2 import StdoutAccessLog
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext
from pilotfish.core.telemetry import CLIENT, SERVER, MetricOverride, Settings
from pilotfish.translators.access_logs import (
    HTTP_GRPC_LOGGER,
    METRICS_LOG_NAME,
    STDOUT_LOGGER,
    TCP_GRPC_LOGGER,
    log_format,
)
from pilotfish.translators.common import pack
from pilotfish.translators.http_filters import HCM_FILTER

CEL_FILTER = "envoy.access_loggers.extension_filters.cel"
HTTP_METRICS = ("REQUEST_COUNT", "REQUEST_DURATION", "REQUEST_SIZE", "RESPONSE_SIZE")
TCP_METRICS = ("TCP_OPENED_CONNECTIONS", "TCP_CLOSED_CONNECTIONS", "TCP_SENT_BYTES",
               "TCP_RECEIVED_BYTES")
_HEADER = re.compile(r"""request\.headers\[\s*['"]([^'"]+)['"]\s*\]""")
_TCP_PROXY = "envoy.filters.network.tcp_proxy"


def apply(push: PushContext, proxy: Proxy, listeners: Sequence[listener_pb2.Listener]) -> None:
    """Change the listeners' access loggers in place as the proxy's Telemetry says."""
    settings = push.telemetry_of(proxy)
    text_log = bool(push.mesh.access_log_file)  # the mesh's default, where no Telemetry says
    shape = (push.mesh.access_log_encoding, push.mesh.access_log_format)
    shaped = shape != ("TEXT", "")
    if text_log and not shaped and not settings.access_logging and not settings.metrics:
        return
    line = log_format(*shape) if shaped else None

    def change(listener: listener_pb2.Listener, logs: list[accesslog_pb2.AccessLog],
               http: bool) -> list[accesslog_pb2.AccessLog]:
        mode = SERVER if listener.traffic_direction == base_pb2.INBOUND else CLIENT
        kept = [log for log in (_logger(log, settings, mode, text_log, http) for log in logs)
                if log is not None]
        if line is not None:
            for log in kept:
                if log.name == STDOUT_LOGGER:
                    log.typed_config.CopyFrom(pack(StdoutAccessLog(log_format=line)))
        return kept

    rewrite_loggers(listeners, change)


LoggersChange = Callable[[listener_pb2.Listener, list[accesslog_pb2.AccessLog], bool],
                         list[accesslog_pb2.AccessLog] | None]


def rewrite_loggers(listeners: Sequence[listener_pb2.Listener], change: LoggersChange) -> None:
    """For every HTTP connection manager and tcp_proxy of ``listeners``: ``change(listener,
    its access loggers, http)`` gives their new loggers, or None to leave them as they are;
    the filter's config is repacked only then."""
    for listener in listeners:
        chains = [*listener.filter_chains, *([listener.default_filter_chain] if
                                             listener.HasField("default_filter_chain") else [])]
        for chain in chains:
            for item in chain.filters:
                message: hcm_pb2.HttpConnectionManager | tcp_proxy_pb2.TcpProxy
                if item.name == HCM_FILTER:
                    message = hcm_pb2.HttpConnectionManager()
                elif item.name == _TCP_PROXY:
                    message = tcp_proxy_pb2.TcpProxy()
                else:
                    continue
                if not item.typed_config.Unpack(message):
                    continue
                changed = change(listener, list(message.access_log), item.name == HCM_FILTER)
                if changed is None:
                    continue
                del message.access_log[:]
                message.access_log.extend(changed)
                item.typed_config.CopyFrom(pack(message))


def _logger(log: accesslog_pb2.AccessLog, settings: Settings, mode: str, text_log: bool,
            http: bool) -> accesslog_pb2.AccessLog | None:
    if log.name == STDOUT_LOGGER:
        logging = settings.access_logging.get(mode)
        if logging is None:  # no Telemetry says: the mesh config's accessLogFile does
            return log if text_log else None
        if logging.disabled:
            return None
        if logging.filter:
            cel = accesslog_pb2.ExtensionFilter(
                name=CEL_FILTER, typed_config=pack(cel_pb2.ExpressionFilter(
                    expression=logging.filter)))
            if log.HasField("filter"):  # tcp_proxy's "only at the end": keep both
                kept = accesslog_pb2.AccessLogFilter()
                kept.CopyFrom(log.filter)
                log.filter.Clear()
                log.filter.and_filter.filters.extend(
                    [kept, accesslog_pb2.AccessLogFilter(extension_filter=cel)])
            else:
                log.filter.extension_filter.CopyFrom(cel)
        return log
    if log.name in (HTTP_GRPC_LOGGER, TCP_GRPC_LOGGER):
        overrides = {name: o for name, o in settings.overrides(mode).items()
                     if name in (HTTP_METRICS if http else TCP_METRICS)}
        if not overrides:
            return log
        if all(overrides.get(name, MetricOverride()).disabled
               for name in (HTTP_METRICS if http else TCP_METRICS)):
            return None
        config = als_pb2.HttpGrpcAccessLogConfig() if http else als_pb2.TcpGrpcAccessLogConfig()
        log.typed_config.Unpack(config)
        config.common_config.log_name = f"{METRICS_LOG_NAME};{encode(overrides)}"
        if http:
            assert isinstance(config, als_pb2.HttpGrpcAccessLogConfig)
            wanted = {h.lower() for o in overrides.values() for v in o.tags.values() if v
                      for h in _HEADER.findall(v)}
            config.additional_request_headers_to_log.extend(
                sorted(wanted - set(config.additional_request_headers_to_log)))
        log.typed_config.CopyFrom(pack(config))
        return log
    return log


def encode(overrides: Mapping[str, MetricOverride]) -> str:
    """The overrides as the agent reads them from a log stream's name (compact JSON)."""
    return json.dumps({name: {"disabled": o.disabled, "tags": dict(o.tags)}
                       for name, o in sorted(overrides.items())},
                      separators=(",", ":"), sort_keys=True)
