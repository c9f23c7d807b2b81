"""The Envoy bootstrap for a pilotfish proxy, as plain data (no IO).

Shaped like the bootstrap pilot-agent renders, so discovery sees the same node id and
metadata from either agent: one ADS stream to the static cluster ``xds-grpc``, CDS and
LDS over it with no initial fetch timeout (Envoy waits for discovery however long it
takes), and a static ``sds-grpc`` cluster on the agent's SDS socket that generated TLS
contexts point at. Unlike pilot-agent, there is no local xDS proxy in between:
``xds-grpc`` goes straight to the discovery address in plaintext (15010). With xDS over
mTLS (``ProxyOptions.xds_tls``) it dials the agent's relay on ``CONFIG_DIR/XDS`` instead
and runs TLS through it to discovery, presenting the workload certificate (SDS
``default``) and checking discovery's against ``ROOTCA`` and its name
(``istiod.istio-system.svc``); both secrets come from the agent over ``sds-grpc``, so a
renewed certificate reaches Envoy without a file or a restart (``agent/xds_relay.py``).

When discovery is unreachable Envoy keeps serving its last accepted configuration and
reconnects the ADS stream with jittered exponential backoff from 500 ms up to 30 s.
Those are Envoy's built-in values, which Istio's bootstrap relies on; they are written
out here so they show in the config dump and do not change with an Envoy upgrade (a
``retry_policy`` without them would mean 1 s up to 10 s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pilotfish.core.model import is_ip
from pilotfish.core.proxy_backend import (
    ALS_CLUSTER,
    SDS_CLUSTER,
    XDS_CLUSTER,
    ProxyOptions,
    split_host_port,
)
from pilotfish.plugins.envoy import stats

BOOTSTRAP_FILE = "envoy-rev.json"  # pilot-agent's name, so operators find it
XDS_RETRY_BACKOFF = {"base_interval": "0.5s", "max_interval": "30s"}

# Envoy warns at start-up when no global downstream connection limit is set. The mesh
# has no use for one (per-listener and kernel limits apply), so the limit is "all".
# Envoy 1.40 wants it from the overload manager; the old runtime key
# overload.global_downstream_max_connections is deprecated and still warns.
UNLIMITED = 2**31 - 1

# Generous limits on the control-plane clusters: a single gRPC connection carries every
# stream, and Envoy's default of 1024 pending requests would cap it.
_CIRCUIT_BREAKERS = {
    "thresholds": [
        {
            "priority": priority,
            "max_connections": 100000,
            "max_pending_requests": 100000,
            "max_requests": 100000,
        }
        for priority in ("DEFAULT", "HIGH")
    ]
}


def _http2(keepalive: bool) -> dict[str, Any]:
    http2: dict[str, Any] = {}
    if keepalive:
        # HTTP/2 PINGs notice a dead discovery server long before TCP would.
        http2["connection_keepalive"] = {"interval": "30s", "timeout": "10s"}
    return {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": http2},
        }
    }


def _endpoint(address: dict[str, Any], cluster: str) -> dict[str, Any]:
    return {
        "cluster_name": cluster,
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
    }


def _agent_secret(name: str) -> dict[str, Any]:
    return {"name": name, "sds_config": {
        "api_config_source": {
            "api_type": "GRPC", "set_node_on_first_message_only": True,
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}],
        },
        # Exactly the config source the translators generate (translators/upstream_tls.py):
        # Envoy then keeps one subscription per secret instead of two.
        "resource_api_version": "V3",
    }}


def xds_tls_socket(options: ProxyOptions) -> dict[str, Any]:
    """mTLS to discovery with the agent's workload certificate and mesh root."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/"
                     "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": options.discovery_san,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificate_sds_secret_configs": [_agent_secret("default")],
                "combined_validation_context": {
                    "default_validation_context": {"match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": options.discovery_san}},
                    ]},
                    "validation_context_sds_secret_config": _agent_secret("ROOTCA"),
                },
            },
        },
    }


def _xds_tls_cluster(options: ProxyOptions) -> dict[str, Any]:
    return {
        "name": XDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": _endpoint({"pipe": {"path": str(options.xds_socket)}}, XDS_CLUSTER),
        "circuit_breakers": _CIRCUIT_BREAKERS,
        "transport_socket": xds_tls_socket(options),
        "typed_extension_protocol_options": _http2(keepalive=True),
    }


def xds_cluster(options: ProxyOptions) -> dict[str, Any]:
    if options.xds_tls:
        return _xds_tls_cluster(options)
    host, port = split_host_port(options.discovery_address, "discovery address")
    cluster: dict[str, Any] = {
        "name": XDS_CLUSTER,
        # A name is left to Envoy's resolver so a moved discovery service is followed.
        "type": "STATIC" if is_ip(host) else "STRICT_DNS",
        "connect_timeout": "1s",
        "load_assignment": _endpoint(
            {"socket_address": {"address": host, "port_value": port}}, XDS_CLUSTER
        ),
        "circuit_breakers": _CIRCUIT_BREAKERS,
        "upstream_connection_options": {"tcp_keepalive": {"keepalive_time": 300}},
        "typed_extension_protocol_options": _http2(keepalive=True),
    }
    if not is_ip(host):
        # "localhost" and dual-stack names: prefer the family the proxy binds with.
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    return cluster


def agent_cluster(name: str, socket: Path) -> dict[str, Any]:
    """A gRPC cluster on one of the agent's unix sockets."""
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": _endpoint({"pipe": {"path": str(socket)}}, name),
        "typed_extension_protocol_options": _http2(keepalive=False),
    }


def sds_cluster(options: ProxyOptions) -> dict[str, Any]:
    # Always present: generated clusters and listeners may name it even before the agent
    # serves SDS, and Envoy rejects references to clusters it does not know.
    return agent_cluster(SDS_CLUSTER, options.sds_socket)


def als_cluster(options: ProxyOptions) -> dict[str, Any]:
    # Where generated listeners send access-log entries for the agent's Istio metrics.
    return agent_cluster(ALS_CLUSTER, options.als_socket)


def node_metadata(options: ProxyOptions, version: str) -> dict[str, Any]:
    """The metadata discovery reads (see ``core/proxy.py``), keyed as Istio keys it."""
    defaults = {
        "WORKLOAD_NAME": options.name,
        "CLUSTER_ID": "Kubernetes",
        "INTERCEPTION_MODE": options.interception_mode,
        "ISTIO_VERSION": version,
    }
    # These follow from the flags; letting extra metadata contradict them would give
    # discovery a proxy whose node id and metadata disagree.
    identity: dict[str, Any] = {
        "NAME": options.name,
        "NAMESPACE": options.namespace,
        "LABELS": dict(options.labels),
        "INSTANCE_IPS": options.ip,
        "SERVICE_ACCOUNT": options.service_account,
        # Lets `pilotfish proxy-config` reach this proxy's admin API from its node info.
        "PILOTFISH_ADMIN": f"{options.admin_address}:{options.admin_port}",
    }
    if options.pod_ports:
        identity["POD_PORTS"] = options.pod_ports_json
    return {**defaults, **options.metadata, **identity}


def service_cluster(options: ProxyOptions, metadata: dict[str, Any]) -> str:
    """``app.namespace`` as Istio names the node cluster (tracing uses it)."""
    app = options.labels.get("app") or options.labels.get("app.kubernetes.io/name")
    return f"{app or metadata['WORKLOAD_NAME']}.{options.namespace}"


def static_resources(options: ProxyOptions) -> dict[str, Any]:
    clusters = [xds_cluster(options), sds_cluster(options), als_cluster(options)]
    if not options.prometheus_port:
        return {"clusters": clusters}
    return {"clusters": [*clusters, stats.prometheus_cluster(options)],
            "listeners": [stats.prometheus_listener(options)]}


# Waypoints chain listeners inside Envoy (connect_terminate → main_internal →
# connect_originate), and so do sidecars and gateways that send HBONE (to an ambient pod) or
# sidecars that take it (from ztunnel): internal listeners exist only with this bootstrap
# extension, which Istio's bootstrap always has.
INTERNAL_LISTENER_EXTENSION = {
    "name": "envoy.bootstrap.internal_listener",
    "typed_config": {
        "@type": "type.googleapis.com/"
                 "envoy.extensions.bootstrap.internal_listener.v3.InternalListener",
    },
}


def bootstrap(options: ProxyOptions, version: str) -> dict[str, Any]:
    out = _bootstrap(options, version)
    out["bootstrap_extensions"] = [INTERNAL_LISTENER_EXTENSION]
    return out


def _bootstrap(options: ProxyOptions, version: str) -> dict[str, Any]:
    metadata = node_metadata(options, version)
    config_source = {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}
    node: dict[str, Any] = {
        "id": options.node_id,
        "cluster": service_cluster(options, metadata),
        "metadata": metadata,
    }
    if options.locality:
        region, zone, subzone = [*options.locality.split("/"), "", ""][:3]
        node["locality"] = {"region": region, "zone": zone, "sub_zone": subzone}
    return {
        "node": node,
        "admin": {
            "address": {
                "socket_address": {
                    "address": options.admin_address,
                    "port_value": options.admin_port,
                }
            },
            "access_log": [{
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/"
                             "envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": "/dev/null",
                },
            }],
            "profile_path": str(options.config_dir / "envoy.prof"),
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if options.xds_mode == "delta" else "GRPC",
                "set_node_on_first_message_only": True,
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {
                    "cluster_name": XDS_CLUSTER,
                    "retry_policy": {"retry_back_off": XDS_RETRY_BACKOFF},
                }}],
            },
            "cds_config": dict(config_source),
            "lds_config": dict(config_source),
        },
        "static_resources": static_resources(options),
        "overload_manager": {
            "resource_monitors": [{
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                             "downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": UNLIMITED,
                },
            }]
        },
        # No runtime overrides are needed; the admin layer lets an operator flip a runtime
        # key through /runtime_modify while debugging.
        "layered_runtime": {"layers": [{"name": "admin", "admin_layer": {}}]},
        # Tags (cluster name, response code, ...) that the agent's Istio metrics read.
        "stats_config": stats.stats_config(),
    }
