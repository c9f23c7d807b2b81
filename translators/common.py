"""Small pieces every translator uses: Istio's resource names, config sources, durations."""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import config_source_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2

from pilotfish.core.meshconfig import parse_duration

INBOUND = "inbound"
OUTBOUND = "outbound"
BLACKHOLE_CLUSTER = "BlackHoleCluster"
PASSTHROUGH_CLUSTER = "PassthroughCluster"
INBOUND_PASSTHROUGH_CLUSTER = "InboundPassthroughCluster"
VIRTUAL_OUTBOUND = "virtualOutbound"
VIRTUAL_INBOUND = "virtualInbound"
OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
# Inbound traffic is sent to the app from this address so that iptables does not capture it
# again (istio-iptables leaves traffic from 127.0.0.6 alone).
INBOUND_SOURCE_ADDRESS = "127.0.0.6"
MAX_UINT32 = 4294967295


def cluster_name(direction: str, port: int, subset: str = "", host: str = "") -> str:
    """``outbound|9080|v1|reviews.default.svc.cluster.local``; ``inbound|8080||``."""
    return f"{direction}|{port}|{subset}|{host}"


def parse_cluster_name(name: str) -> tuple[str, int, str, str] | None:
    parts = name.split("|")
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2], parts[3]


def sni_name(port: int, subset: str, host: str) -> str:
    """The SNI form of a cluster name: ``outbound_.9080_.v1_.reviews.default.svc.cluster.local``."""
    return f"outbound_.{port}_.{subset}_.{host}"


def ads_config_source() -> config_source_pb2.ConfigSource:
    """ADS, wait forever for the first response (as Istio generates)."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        initial_fetch_timeout=duration_pb2.Duration(seconds=0),
        resource_api_version=config_source_pb2.V3,
    )


def duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def istio_duration(value: Any) -> duration_pb2.Duration:
    """An Istio duration string (``1.5s``, ``100ms``) as a protobuf Duration."""
    return duration(parse_duration(value))


def pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(data)
    return out
