"""Istio's metrics counted inside Envoy, for proxies whose agent provides the module.

Every HCM and tcp_proxy carries a gRPC access logger whose entries the agent folds into
Istio's metrics (`access_logs`). An Envoy agent that compiled pilotfish's counting module
(``plugins/envoy/istio_stats.c``) says so in its node metadata: ``PILOTFISH_STATS_MODULE``
is the module's path, ``PILOTFISH_STATS_TABLE`` the file the module counts into (the agent
reads it). For such a proxy that gRPC logger is replaced by Envoy's dynamic-module access
logger (``envoy.access_loggers.dynamic_modules``) loading that module: no entry leaves
Envoy. A logger a Telemetry's metric overrides changed (its log name carries them, see
`telemetry`) stays on the gRPC path, where the agent evaluates them entry by entry. Every
other proxy — no such metadata, the native proxy — is sent what it was sent before.

A sidecar that takes HBONE hands each tunneled stream to its inbound chains over the
internal listener ``main_internal``, a hop without TLS: the tunnel's identities are filter
state there (``io.istio.peer_principal``, ``io.istio.local_principal``), which Envoy 1.40's
access-logger ABI cannot read (its ``get_filter_state`` always answers no) but its dynamic
metadata it can. So for the module each HCM of that listener starts with two stock filters
that copy them: ``header_mutation`` writes each into a request header (overwriting any the
client sent), ``header_to_metadata`` moves it into the metadata namespace `TUNNEL_METADATA`
and removes the header before anything else sees it. No other listener pays for them.

The xds-protos wheel has no message for that logger's config, so it is declared here, on
the wire exactly as Envoy 1.40 has it (``envoy.extensions.access_loggers.dynamic_modules.
v3.DynamicModuleAccessLog``), with the module config as its own copy: the wheel's
``DynamicModuleConfig`` predates the ``module`` field (a file path) this needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.core.v3 import base_pb2 as core_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.header_to_metadata.v3 import header_to_metadata_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

from pilotfish.core.istio_metrics import LOCAL_PRINCIPAL, PEER_PRINCIPAL
from pilotfish.core.proxy import Proxy, ProxyType
from pilotfish.translators.access_logs import HTTP_GRPC_LOGGER, METRICS_LOG_NAME, TCP_GRPC_LOGGER
from pilotfish.translators.ambient.waypoint_clusters import MAIN_INTERNAL
from pilotfish.translators.common import pack
from pilotfish.translators.http_filters import HCM_FILTER
from pilotfish.translators.telemetry import rewrite_loggers

MODULE_LOGGER = "envoy.access_loggers.dynamic_modules"
LOGGER_NAME = "istio_stats"  # the module has one logger; named for the config dump's reader
_PACKAGE = "envoy.extensions.access_loggers.dynamic_modules.v3"
# Where the tunnel's identities are copied for the module (istio_stats.c reads these names).
TUNNEL_METADATA = "pilotfish.tunnel"
TUNNEL_KEYS = ((PEER_PRINCIPAL, "peer_principal", "x-pilotfish-tunnel-peer"),
               (LOCAL_PRINCIPAL, "local_principal", "x-pilotfish-tunnel-local"))
HEADER_MUTATION = "envoy.filters.http.header_mutation"
HEADER_TO_METADATA = "envoy.filters.http.header_to_metadata"


def _declare() -> Any:
    """The DynamicModuleAccessLog message class, in the default pool (config dumps read it)."""
    pool = descriptor_pool.Default()
    try:
        return message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"{_PACKAGE}.DynamicModuleAccessLog"))
    except KeyError:
        pass  # not in this xds-protos: declare it
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    kinds = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="pilotfish/envoy_dynamic_module_access_log.proto", package=_PACKAGE,
        syntax="proto3", dependency=["envoy/config/core/v3/base.proto",
                                     "google/protobuf/any.proto"])
    module = proto.message_type.add(name="PilotfishDynamicModuleConfig")
    for name, number, kind, type_name in (
            ("name", 1, kinds.TYPE_STRING, ""), ("do_not_close", 3, kinds.TYPE_BOOL, ""),
            ("load_globally", 4, kinds.TYPE_BOOL, ""),
            ("metrics_namespace", 5, kinds.TYPE_STRING, ""),
            ("module", 6, kinds.TYPE_MESSAGE, ".envoy.config.core.v3.AsyncDataSource")):
        field = module.field.add(name=name, number=number, label=optional, type=kind)
        if type_name:
            field.type_name = type_name
    logger = proto.message_type.add(name="DynamicModuleAccessLog")
    for name, number, kind, type_name in (
            ("dynamic_module_config", 1, kinds.TYPE_MESSAGE,
             f".{_PACKAGE}.PilotfishDynamicModuleConfig"),
            ("logger_name", 2, kinds.TYPE_STRING, ""),
            ("logger_config", 3, kinds.TYPE_MESSAGE, ".google.protobuf.Any")):
        field = logger.field.add(name=name, number=number, label=optional, type=kind)
        if type_name:
            field.type_name = type_name
    base_pb2.DESCRIPTOR  # noqa: B018 (its file must be in the pool first)
    any_pb2.DESCRIPTOR  # noqa: B018
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_PACKAGE}.DynamicModuleAccessLog"))


DynamicModuleAccessLog = _declare()


def module_logger(module: str, table: str) -> accesslog_pb2.AccessLog:
    """The dynamic-module logger counting into ``table`` with the module at ``module``.
    ``do_not_close``: the module's table lives as long as Envoy, across LDS updates."""
    config = DynamicModuleAccessLog(logger_name=LOGGER_NAME)
    config.dynamic_module_config.do_not_close = True
    config.dynamic_module_config.module.local.filename = module
    config.logger_config.Pack(wrappers_pb2.StringValue(value=table))
    return accesslog_pb2.AccessLog(name=MODULE_LOGGER, typed_config=pack(config))


def apply(proxy: Proxy, listeners: Sequence[listener_pb2.Listener]) -> None:
    """Swap the metrics' gRPC loggers for the module's, in place, where the proxy's node
    metadata (``STATS_MODULE``, ``STATS_TABLE``; see ``ProxyScope.stats_module``) says the
    module is there and no metric override needs the gRPC path."""
    module, table = proxy.scope.stats_module
    if not module or not table:
        return
    replacement = module_logger(module, table)

    def swap(listener: listener_pb2.Listener, logs: list[accesslog_pb2.AccessLog],
             http: bool) -> list[accesslog_pb2.AccessLog] | None:
        swapped = [replacement if _counts_metrics(log) else log for log in logs]
        return swapped if swapped != logs else None

    rewrite_loggers(listeners, swap)
    if proxy.type is ProxyType.SIDECAR:
        for listener in listeners:
            if listener.name == MAIN_INTERNAL:
                _copy_tunnel_identities(listener)


def tunnel_identity_filters() -> list[hcm_pb2.HttpFilter]:
    """The two filters that put the tunnel's identities where the module reads them."""
    overwrite = core_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    mutation = header_mutation_pb2.HeaderMutation()
    to_metadata = header_to_metadata_pb2.Config()
    for state, key, header in TUNNEL_KEYS:
        mutation.mutations.request_mutations.append(mutation_rules_pb2.HeaderMutation(
            append=core_pb2.HeaderValueOption(
                header=core_pb2.HeaderValue(key=header, value=f"%FILTER_STATE({state}:PLAIN)%"),
                append_action=overwrite)))
        rule = to_metadata.request_rules.add(header=header, remove=True)
        rule.on_header_present.metadata_namespace = TUNNEL_METADATA
        rule.on_header_present.key = key
        rule.on_header_present.type = header_to_metadata_pb2.Config.STRING
    return [hcm_pb2.HttpFilter(name=HEADER_MUTATION, typed_config=pack(mutation)),
            hcm_pb2.HttpFilter(name=HEADER_TO_METADATA, typed_config=pack(to_metadata))]


def _copy_tunnel_identities(listener: listener_pb2.Listener) -> None:
    chains = [*listener.filter_chains, *([listener.default_filter_chain] if
                                         listener.HasField("default_filter_chain") else [])]
    for chain in chains:
        for item in chain.filters:
            manager = hcm_pb2.HttpConnectionManager()
            if item.name != HCM_FILTER or not item.typed_config.Unpack(manager):
                continue
            filters = [*tunnel_identity_filters(), *manager.http_filters]
            del manager.http_filters[:]
            manager.http_filters.extend(filters)
            item.typed_config.CopyFrom(pack(manager))


def _counts_metrics(log: accesslog_pb2.AccessLog) -> bool:
    """The metrics' gRPC logger, unless a Telemetry's overrides ride in its log name (the
    agent needs those entries)."""
    if log.name not in (HTTP_GRPC_LOGGER, TCP_GRPC_LOGGER):
        return False
    config = als_pb2.HttpGrpcAccessLogConfig() if log.name == HTTP_GRPC_LOGGER else \
        als_pb2.TcpGrpcAccessLogConfig()
    log.typed_config.Unpack(config)
    return config.common_config.log_name == METRICS_LOG_NAME
