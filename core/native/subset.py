"""The part of Envoy's v3 API the native proxy honours, as data: which fields of which
messages, and which extensions (by type URL) it runs.

A resource is checked against it before it is used (:func:`check`): a field set outside
the subset, or an extension the proxy does not have, is refused with the field's path in
the resource, so the NACK says exactly what the proxy cannot do — never a silent drop.
``docs/native.md`` lists the subset, generated from this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

# The messages and extensions the subset names, so their types resolve (symbol_database).
from envoy.config.rbac.v3 import rbac_pb2  # noqa: F401
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2  # noqa: F401
from envoy.extensions.access_loggers.grpc.v3 import als_pb2  # noqa: F401
from envoy.extensions.access_loggers.stream.v3 import stream_pb2  # noqa: F401
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2  # noqa: F401
from envoy.extensions.filters.http.cors.v3 import cors_pb2  # noqa: F401
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2  # noqa: F401
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2  # noqa: F401
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.http.set_filter_state.v3 import (  # noqa: F401
    set_filter_state_pb2 as http_state_pb2,
)
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2  # noqa: F401
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2  # noqa: F401
from envoy.extensions.filters.listener.original_src.v3 import original_src_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.direct_response.v3 import (  # noqa: F401
    config_pb2 as direct_response_pb2,
)
from envoy.extensions.filters.network.echo.v3 import echo_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2  # noqa: F401
from envoy.extensions.filters.network.set_filter_state.v3 import (  # noqa: F401
    set_filter_state_pb2 as network_state_pb2,
)
from envoy.extensions.filters.network.sni_cluster.v3 import sni_cluster_pb2  # noqa: F401
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.path.match.uri_template.v3 import uri_template_match_pb2  # noqa: F401
from envoy.extensions.request_id.uuid.v3 import uuid_pb2  # noqa: F401
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from envoy.extensions.transport_sockets.internal_upstream.v3 import (  # noqa: F401
    internal_upstream_pb2,
)
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import any_pb2, symbol_database
from google.protobuf.message import Message

ANY_FIELDS = "*"  # a message taken whole (metadata, opaque structs)

# Message full name → the fields the proxy reads (or ANY_FIELDS).
FIELDS: Mapping[str, frozenset[str] | str] = {
    # -- clusters and endpoints ------------------------------------------------------------
    "envoy.config.cluster.v3.Cluster": frozenset({
        "name", "type", "eds_cluster_config", "connect_timeout", "lb_policy",
        "load_assignment", "circuit_breakers", "metadata", "alt_stat_name",
        "typed_extension_protocol_options", "common_lb_config", "respect_dns_ttl",
        "dns_lookup_family", "upstream_bind_config", "transport_socket",
        "transport_socket_matches", "outlier_detection", "ring_hash_lb_config",
        "maglev_lb_config", "upstream_connection_options", "round_robin_lb_config",
        "least_request_lb_config", "original_dst_lb_config", "cleanup_interval"}),
    # ORIGINAL_DST to another port of the original destination (a waypoint's HBONE 15008)
    "envoy.config.cluster.v3.Cluster.OriginalDstLbConfig": frozenset({
        "upstream_port_override"}),
    "envoy.config.cluster.v3.Cluster.RoundRobinLbConfig": frozenset({"slow_start_config"}),
    "envoy.config.cluster.v3.Cluster.LeastRequestLbConfig": frozenset({"slow_start_config"}),
    "envoy.config.cluster.v3.Cluster.SlowStartConfig": frozenset({
        "slow_start_window", "aggression", "min_weight_percent"}),
    "envoy.config.core.v3.RuntimeDouble": frozenset({"default_value", "runtime_key"}),
    # success-rate ejection is not run: enforcing_success_rate must be 0 (config._outlier)
    "envoy.config.cluster.v3.OutlierDetection": frozenset({
        "consecutive_5xx", "consecutive_gateway_failure", "consecutive_local_origin_failure",
        "enforcing_consecutive_5xx", "enforcing_consecutive_gateway_failure",
        "enforcing_consecutive_local_origin_failure", "interval", "base_ejection_time",
        "max_ejection_time", "max_ejection_percent", "split_external_local_origin_errors",
        "enforcing_success_rate", "enforcing_local_origin_success_rate"}),
    # only XX_HASH, the default (config._balancing)
    "envoy.config.cluster.v3.Cluster.RingHashLbConfig": frozenset({
        "minimum_ring_size", "maximum_ring_size", "hash_function"}),
    "envoy.config.cluster.v3.Cluster.MaglevLbConfig": frozenset({"table_size"}),
    "envoy.config.cluster.v3.Cluster.TransportSocketMatch": frozenset({
        "name", "match", "transport_socket"}),
    "envoy.config.core.v3.BindConfig": frozenset({"source_address"}),
    "envoy.config.cluster.v3.Cluster.EdsClusterConfig": frozenset({"eds_config",
                                                                    "service_name"}),
    "envoy.config.cluster.v3.Cluster.CommonLbConfig": frozenset({
        "locality_weighted_lb_config", "healthy_panic_threshold"}),
    "envoy.type.v3.Percent": frozenset({"value"}),
    "envoy.config.cluster.v3.UpstreamConnectionOptions": frozenset({"tcp_keepalive"}),
    "envoy.config.core.v3.TcpKeepalive": frozenset({"keepalive_probes", "keepalive_time",
                                                    "keepalive_interval"}),
    "envoy.config.cluster.v3.Cluster.CommonLbConfig.LocalityWeightedLbConfig": frozenset(),
    "envoy.config.cluster.v3.CircuitBreakers": frozenset({"thresholds"}),
    "envoy.config.cluster.v3.CircuitBreakers.Thresholds": frozenset({
        "priority", "max_connections", "max_pending_requests", "max_requests", "max_retries",
        "track_remaining", "retry_budget"}),
    "envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget": frozenset({
        "budget_percent", "min_retry_concurrency"}),
    "envoy.config.core.v3.ConfigSource": frozenset({"ads", "initial_fetch_timeout",
                                                    "resource_api_version",
                                                    "api_config_source"}),
    "envoy.config.core.v3.AggregatedConfigSource": frozenset(),
    "envoy.config.core.v3.Metadata": ANY_FIELDS,
    "envoy.config.endpoint.v3.ClusterLoadAssignment": frozenset({"cluster_name", "endpoints"}),
    "envoy.config.endpoint.v3.LocalityLbEndpoints": frozenset({
        "locality", "lb_endpoints", "load_balancing_weight", "priority"}),
    "envoy.config.core.v3.Locality": frozenset({"region", "zone", "sub_zone"}),
    "envoy.config.endpoint.v3.LbEndpoint": frozenset({
        "endpoint", "health_status", "metadata", "load_balancing_weight"}),
    "envoy.config.endpoint.v3.Endpoint": frozenset({"address"}),
    "envoy.config.core.v3.Address": frozenset({"socket_address", "envoy_internal_address"}),
    # an internal listener of this proxy, reached in process (a waypoint's hops)
    "envoy.config.core.v3.EnvoyInternalAddress": frozenset({"server_listener_name",
                                                            "endpoint_id"}),
    "envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport":
        frozenset({"passthrough_metadata", "transport_socket"}),
    "envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport"
    ".MetadataValueSource": frozenset({"kind", "name"}),
    "envoy.type.metadata.v3.MetadataKind": frozenset({"host"}),
    "envoy.type.metadata.v3.MetadataKind.Host": frozenset(),
    "envoy.config.core.v3.SocketAddress": frozenset({"address", "port_value"}),
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": frozenset({
        "explicit_http_config", "common_http_protocol_options",
        "use_downstream_protocol_config"}),
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.UseDownstreamHttpConfig":
        frozenset({"http_protocol_options", "http2_protocol_options"}),
    "envoy.config.core.v3.Http2ProtocolOptions": ANY_FIELDS,
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig": frozenset({
        "http_protocol_options", "http2_protocol_options"}),
    "envoy.config.core.v3.Http1ProtocolOptions": frozenset(),
    "envoy.config.core.v3.HttpProtocolOptions": frozenset({
        "idle_timeout", "max_requests_per_connection", "max_connection_duration"}),
    # -- listeners ---------------------------------------------------------------------------
    "envoy.config.listener.v3.Listener": frozenset({
        "name", "address", "filter_chains", "traffic_direction", "listener_filters",
        "use_original_dst", "bind_to_port", "default_filter_chain",
        "listener_filters_timeout", "continue_on_listener_filters_timeout", "transparent",
        "internal_listener", "connection_balance_config"}),
    "envoy.config.listener.v3.Listener.InternalListenerConfig": frozenset(),
    # one accept loop per worker process: connections are spread by SO_REUSEPORT anyway
    "envoy.config.listener.v3.Listener.ConnectionBalanceConfig": frozenset({
        "exact_balance"}),
    "envoy.config.listener.v3.Listener.ConnectionBalanceConfig.ExactBalance": frozenset(),
    "envoy.config.listener.v3.ListenerFilter": frozenset({"name", "typed_config",
                                                          "filter_disabled"}),
    "envoy.config.listener.v3.ListenerFilterChainMatchPredicate": frozenset({
        "or_match", "destination_port_range"}),
    "envoy.config.listener.v3.ListenerFilterChainMatchPredicate.MatchSet": frozenset({
        "rules"}),
    "envoy.type.v3.Int32Range": frozenset({"start", "end"}),
    "envoy.extensions.filters.listener.original_dst.v3.OriginalDst": frozenset(),
    # TPROXY's inbound: upstream connections from the client's address (not bind_port)
    "envoy.extensions.filters.listener.original_src.v3.OriginalSrc": frozenset({"mark"}),
    "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector": frozenset(),
    # SNI is read in the handshake itself (see native/tls.py)
    "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector": frozenset(),
    "envoy.config.listener.v3.FilterChain": frozenset({"filters", "name",
                                                       "filter_chain_match",
                                                       "transport_socket"}),
    "envoy.config.listener.v3.FilterChainMatch": frozenset({
        "destination_port", "server_names", "transport_protocol", "application_protocols",
        "prefix_ranges", "source_prefix_ranges", "source_ports"}),
    "envoy.config.core.v3.TransportSocket": frozenset({"name", "typed_config"}),
    # downstream TLS: the certificate from the agent's SDS, server side only
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext": frozenset({
        "common_tls_context", "require_client_certificate"}),
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext": frozenset({
        "common_tls_context", "sni", "max_session_keys"}),
    "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext": frozenset({
        "tls_params", "alpn_protocols", "tls_certificate_sds_secret_configs",
        "combined_validation_context"}),
    "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext"
    ".CombinedCertificateValidationContext": frozenset({
        "default_validation_context", "validation_context_sds_secret_config"}),
    "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext": frozenset({
        "match_typed_subject_alt_names", "trusted_ca"}),
    "envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher": frozenset({
        "san_type", "matcher"}),
    # cipher suites are OpenSSL's defaults here
    "envoy.extensions.transport_sockets.tls.v3.TlsParameters": frozenset({
        "tls_minimum_protocol_version", "tls_maximum_protocol_version", "cipher_suites"}),
    "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer": frozenset(),
    "envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig": frozenset({"name",
                                                                            "sds_config"}),
    "envoy.config.core.v3.ApiConfigSource": frozenset({
        "api_type", "grpc_services", "set_node_on_first_message_only",
        "transport_api_version"}),
    # ``timeout`` and ``authority`` are ext_authz's check call's (an xDS stream has no
    # deadline, and its authority is the bootstrap's server name, as on Envoy)
    "envoy.config.core.v3.GrpcService": frozenset({"envoy_grpc", "timeout"}),
    "envoy.config.core.v3.GrpcService.EnvoyGrpc": frozenset({"cluster_name", "authority"}),
    "envoy.config.listener.v3.Filter": frozenset({"name", "typed_config"}),
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy": frozenset({
        "stat_prefix", "cluster", "access_log", "access_log_options", "idle_timeout",
        "tunneling_config", "hash_policy"}),
    "envoy.extensions.filters.network.echo.v3.Echo": frozenset(),
    "envoy.extensions.filters.network.direct_response.v3.Config": frozenset({"response"}),
    # set_filter_state: values for the internal hop (see native/filter_state.py)
    "envoy.extensions.filters.network.set_filter_state.v3.Config": frozenset({
        "on_new_connection"}),
    "envoy.extensions.filters.http.set_filter_state.v3.Config": frozenset({
        "on_request_headers"}),
    "envoy.extensions.filters.common.set_filter_state.v3.FilterStateValue": frozenset({
        "object_key", "factory_key", "format_string", "shared_with_upstream",
        "skip_if_empty"}),
    # the SNI names the cluster (AUTO_PASSTHROUGH gateways)
    "envoy.extensions.filters.network.sni_cluster.v3.SniCluster": frozenset(),
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.TunnelingConfig": frozenset({
        "hostname", "use_post"}),
    "envoy.type.v3.HashPolicy": frozenset({"source_ip"}),
    "envoy.type.v3.HashPolicy.SourceIp": frozenset(),
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.TcpAccessLogOptions": frozenset({
        "flush_access_log_on_connected"}),
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager":
        frozenset({"stat_prefix", "rds", "route_config", "http_filters", "access_log",
                   "use_remote_address", "upgrade_configs", "stream_idle_timeout",
                   "normalize_path", "request_id_extension",
                   "path_with_escaped_slashes_action", "codec_type",
                   "http2_protocol_options"}),
    "envoy.extensions.filters.network.http_connection_manager.v3.Rds": frozenset({
        "config_source", "route_config_name"}),
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter": frozenset({
        "name", "typed_config"}),
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    ".UpgradeConfig": frozenset({"upgrade_type", "enabled"}),
    "envoy.extensions.filters.network.http_connection_manager.v3.RequestIDExtension":
        frozenset({"typed_config"}),
    "envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig": ANY_FIELDS,
    "envoy.extensions.filters.http.router.v3.Router": frozenset(),
    # fault injection (delays and aborts) and CORS: per route, or the filter's own
    "envoy.extensions.filters.http.fault.v3.HTTPFault": frozenset({"delay", "abort"}),
    "envoy.extensions.filters.common.fault.v3.FaultDelay": frozenset({"fixed_delay",
                                                                     "percentage"}),
    "envoy.extensions.filters.http.fault.v3.FaultAbort": frozenset({
        "http_status", "grpc_status", "percentage"}),
    "envoy.type.v3.FractionalPercent": frozenset({"numerator", "denominator"}),
    "envoy.extensions.filters.http.cors.v3.Cors": frozenset(),
    "envoy.extensions.filters.http.cors.v3.CorsPolicy": frozenset({
        "allow_origin_string_match", "allow_methods", "allow_headers", "expose_headers",
        "max_age", "allow_credentials", "filter_enabled", "forward_not_matching_preflights"}),
    "envoy.config.core.v3.RuntimeFractionalPercent": frozenset({"default_value",
                                                               "runtime_key"}),
    # authorization (AuthorizationPolicy): the HTTP and the network RBAC filters
    "envoy.extensions.filters.http.rbac.v3.RBAC": frozenset({
        "rules", "shadow_rules", "shadow_rules_stat_prefix"}),
    "envoy.extensions.filters.network.rbac.v3.RBAC": frozenset({
        "rules", "shadow_rules", "shadow_rules_stat_prefix", "stat_prefix"}),
    "envoy.config.rbac.v3.RBAC": frozenset({"action", "policies"}),
    # CUSTOM with an HTTP or a gRPC authorization service (envoyExtAuthzHttp/Grpc)
    "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz": frozenset({
        "transport_api_version", "failure_mode_allow", "status_on_error",
        "filter_enabled_metadata", "http_service", "grpc_service", "allowed_headers"}),
    "envoy.extensions.filters.http.ext_authz.v3.HttpService": frozenset({
        "server_uri", "path_prefix", "authorization_request", "authorization_response"}),
    "envoy.extensions.filters.http.ext_authz.v3.AuthorizationRequest": frozenset({
        "headers_to_add"}),
    "envoy.extensions.filters.http.ext_authz.v3.AuthorizationResponse": frozenset({
        "allowed_upstream_headers", "allowed_client_headers",
        "allowed_client_headers_on_success"}),
    "envoy.config.core.v3.HttpUri": frozenset({"uri", "cluster", "timeout"}),
    "envoy.type.matcher.v3.ListStringMatcher": frozenset({"patterns"}),
    "envoy.type.v3.HttpStatus": frozenset({"code"}),
    "envoy.config.rbac.v3.Policy": frozenset({"permissions", "principals"}),
    "envoy.config.rbac.v3.Permission": frozenset({
        "and_rules", "or_rules", "any", "header", "url_path", "destination_ip",
        "destination_port", "destination_port_range", "metadata", "not_rule",
        "requested_server_name", "uri_template"}),
    "envoy.config.rbac.v3.Permission.Set": frozenset({"rules"}),
    "envoy.config.rbac.v3.Principal": frozenset({
        "and_ids", "or_ids", "any", "authenticated", "direct_remote_ip", "source_ip",
        "remote_ip", "header", "url_path", "metadata", "not_id", "filter_state"}),
    "envoy.type.matcher.v3.FilterStateMatcher": frozenset({"key", "string_match"}),
    "envoy.config.rbac.v3.Principal.Set": frozenset({"ids"}),
    "envoy.config.rbac.v3.Principal.Authenticated": frozenset({"principal_name"}),
    "envoy.config.core.v3.CidrRange": frozenset({"address_prefix", "prefix_len"}),
    "envoy.type.matcher.v3.PathMatcher": frozenset({"path"}),
    "envoy.type.matcher.v3.MetadataMatcher": frozenset({"filter", "path", "value",
                                                       "invert"}),
    "envoy.type.matcher.v3.MetadataMatcher.PathSegment": frozenset({"key"}),
    "envoy.type.matcher.v3.ValueMatcher": frozenset({
        "string_match", "present_match", "list_match", "bool_match", "null_match"}),
    "envoy.type.matcher.v3.ValueMatcher.NullMatch": frozenset(),
    "envoy.type.matcher.v3.ListMatcher": frozenset({"one_of"}),
    "envoy.config.core.v3.TypedExtensionConfig": frozenset({"name", "typed_config"}),
    "envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig": frozenset({
        "path_template"}),
    # request authentication (RequestAuthentication): JWTs against inline key sets
    "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication": frozenset({
        "providers", "rules", "bypass_cors_preflight"}),
    "envoy.extensions.filters.http.jwt_authn.v3.JwtProvider": frozenset({
        "issuer", "audiences", "local_jwks", "forward", "forward_payload_header",
        "payload_in_metadata", "from_params", "from_cookies", "from_headers",
        "claim_to_headers"}),
    "envoy.extensions.filters.http.jwt_authn.v3.JwtHeader": frozenset({"name",
                                                                      "value_prefix"}),
    "envoy.extensions.filters.http.jwt_authn.v3.JwtClaimToHeader": frozenset({
        "header_name", "claim_name"}),
    "envoy.extensions.filters.http.jwt_authn.v3.RequirementRule": frozenset({"match",
                                                                            "requires"}),
    "envoy.extensions.filters.http.jwt_authn.v3.JwtRequirement": frozenset({
        "provider_name", "requires_any", "requires_all", "allow_missing",
        "allow_missing_or_failed"}),
    "envoy.extensions.filters.http.jwt_authn.v3.JwtRequirementOrList": frozenset({
        "requirements"}),
    "envoy.extensions.filters.http.jwt_authn.v3.JwtRequirementAndList": frozenset({
        "requirements"}),
    "google.protobuf.Empty": ANY_FIELDS,
    "envoy.config.accesslog.v3.AccessLog": frozenset({"name", "typed_config", "filter"}),
    "envoy.config.accesslog.v3.AccessLogFilter": frozenset({
        "log_type_filter", "and_filter", "extension_filter"}),
    "envoy.config.accesslog.v3.AndFilter": frozenset({"filters"}),
    "envoy.config.accesslog.v3.ExtensionFilter": frozenset({"name", "typed_config"}),
    "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter": frozenset({
        "expression"}),
    "envoy.config.accesslog.v3.LogTypeFilter": frozenset({"types"}),
    "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog": frozenset({"log_format"}),
    "envoy.config.core.v3.SubstitutionFormatString": frozenset({"text_format_source",
                                                                 "json_format",
                                                                 "omit_empty_values"}),
    "envoy.config.core.v3.DataSource": frozenset({"inline_string", "inline_bytes",
                                                  "filename"}),
    # secrets from the agent's SDS
    "envoy.extensions.transport_sockets.tls.v3.Secret": frozenset({
        "name", "tls_certificate", "validation_context"}),
    "envoy.extensions.transport_sockets.tls.v3.TlsCertificate": frozenset({
        "certificate_chain", "private_key"}),

    # Istio's metrics: the native proxy counts them itself (see docs/native.md)
    "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig": ANY_FIELDS,
    "envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig": ANY_FIELDS,
    # -- routes ------------------------------------------------------------------------------
    "envoy.config.route.v3.RouteConfiguration": frozenset({
        "name", "virtual_hosts", "validate_clusters", "max_direct_response_body_size_bytes",
        "ignore_port_in_host_matching", "request_headers_to_add", "request_headers_to_remove",
        "response_headers_to_add", "response_headers_to_remove"}),
    "envoy.config.route.v3.VirtualHost": frozenset({
        "name", "domains", "routes", "include_request_attempt_count", "retry_policy",
        "request_headers_to_add", "request_headers_to_remove", "response_headers_to_add",
        "response_headers_to_remove", "typed_per_filter_config"}),
    "envoy.config.route.v3.Route": frozenset({
        "name", "match", "route", "direct_response", "redirect", "metadata", "decorator",
        "request_headers_to_add", "request_headers_to_remove", "response_headers_to_add",
        "response_headers_to_remove", "typed_per_filter_config"}),
    "envoy.config.route.v3.Decorator": frozenset({"operation"}),
    "envoy.config.route.v3.RouteMatch": frozenset({
        "prefix", "path", "safe_regex", "path_separated_prefix", "case_sensitive", "headers",
        "query_parameters", "connect_matcher"}),
    "envoy.type.matcher.v3.RegexMatcher": frozenset({"google_re2", "regex"}),
    "envoy.type.matcher.v3.RegexMatcher.GoogleRE2": frozenset(),
    "envoy.config.route.v3.HeaderMatcher": frozenset({
        "name", "present_match", "string_match", "invert_match", "exact_match",
        "prefix_match", "suffix_match", "safe_regex_match", "treat_missing_header_as_empty"}),
    "envoy.config.route.v3.QueryParameterMatcher": frozenset({"name", "string_match",
                                                             "present_match"}),
    "envoy.type.matcher.v3.StringMatcher": frozenset({
        "exact", "prefix", "suffix", "safe_regex", "contains", "ignore_case"}),
    "envoy.config.route.v3.RouteAction": frozenset({
        "cluster", "weighted_clusters", "timeout", "retry_policy", "max_grpc_timeout",
        "prefix_rewrite", "host_rewrite_literal", "auto_host_rewrite", "upgrade_configs",
        "max_stream_duration", "request_mirror_policies", "hash_policy", "regex_rewrite"}),
    "envoy.type.matcher.v3.RegexMatchAndSubstitute": frozenset({"pattern", "substitution"}),
    "envoy.config.route.v3.RouteAction.RequestMirrorPolicy": frozenset({
        "cluster", "runtime_fraction", "trace_sampled"}),
    "envoy.config.route.v3.RouteAction.HashPolicy": frozenset({
        "header", "cookie", "connection_properties", "query_parameter", "terminal"}),
    "envoy.config.route.v3.RouteAction.HashPolicy.Header": frozenset({"header_name"}),
    "envoy.config.route.v3.RouteAction.HashPolicy.Cookie": frozenset({"name", "ttl",
                                                                     "path"}),
    "envoy.config.route.v3.RouteAction.HashPolicy.ConnectionProperties": frozenset({
        "source_ip"}),
    "envoy.config.route.v3.RouteAction.HashPolicy.QueryParameter": frozenset({"name"}),
    # only "no limit" (zero durations) is taken: see routing._action
    "envoy.config.route.v3.RouteAction.MaxStreamDuration": frozenset({
        "max_stream_duration", "grpc_timeout_header_max"}),
    "envoy.config.route.v3.RouteAction.UpgradeConfig": frozenset({"upgrade_type", "enabled",
                                                                  "connect_config"}),
    "envoy.config.route.v3.RouteAction.UpgradeConfig.ConnectConfig": frozenset(),
    "envoy.config.route.v3.RouteMatch.ConnectMatcher": frozenset(),
    "envoy.config.route.v3.WeightedCluster": frozenset({"clusters", "total_weight"}),
    "envoy.config.route.v3.WeightedCluster.ClusterWeight": frozenset({
        "name", "weight", "request_headers_to_add", "request_headers_to_remove",
        "response_headers_to_add", "response_headers_to_remove"}),
    "envoy.config.route.v3.RetryPolicy": frozenset({
        "retry_on", "num_retries", "per_try_timeout", "retry_host_predicate",
        "host_selection_retry_max_attempts", "retriable_status_codes"}),
    "envoy.config.route.v3.RetryPolicy.RetryHostPredicate": frozenset({"name",
                                                                      "typed_config"}),
    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate": frozenset(),
    "envoy.config.route.v3.DirectResponseAction": frozenset({"status", "body"}),
    "envoy.config.route.v3.RedirectAction": frozenset({
        "scheme_redirect", "host_redirect", "port_redirect", "path_redirect",
        "prefix_rewrite", "response_code", "strip_query", "https_redirect", "regex_rewrite"}),
    "envoy.config.core.v3.HeaderValueOption": frozenset({"header", "append_action",
                                                        "keep_empty_value"}),
    "envoy.config.core.v3.HeaderValue": frozenset({"key", "value"}),
    # well-known types
    "google.protobuf.Duration": ANY_FIELDS,
    "google.protobuf.UInt32Value": ANY_FIELDS,
    "google.protobuf.UInt64Value": ANY_FIELDS,
    "google.protobuf.BoolValue": ANY_FIELDS,
    "google.protobuf.Struct": ANY_FIELDS,
}


@attrs.frozen
class Unsupported(Exception):
    """A field or extension outside the subset; ``path`` is where in the resource."""

    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}"


def _unpack(value: any_pb2.Any, path: str) -> Message:
    name = value.type_url.rpartition("/")[2]
    if name not in FIELDS:
        raise Unsupported(path, f"extension {value.type_url} is not supported by the "
                          "native proxy")
    try:
        cls = symbol_database.Default().GetSymbol(name)
    except KeyError:
        raise Unsupported(path, f"extension {value.type_url} is unknown") from None
    message: Message = cls()
    if not value.Unpack(message):
        raise Unsupported(path, f"{value.type_url}: cannot decode")
    return message


def unpack(value: any_pb2.Any, path: str = "typed_config") -> Message:
    """The message in ``value``, checked against the subset."""
    message = _unpack(value, path)
    check(message, path)
    return message


def check(message: Message, path: str = "") -> None:
    """Raise :class:`Unsupported` for the first field of ``message`` (recursively, into
    typed extensions too) that the native proxy does not honour."""
    name = message.DESCRIPTOR.full_name
    allowed = FIELDS.get(name)
    if allowed is None:
        raise Unsupported(path or name, f"{name} is not supported by the native proxy")
    if allowed == ANY_FIELDS:
        return
    for field, value in message.ListFields():
        where = f"{path}.{field.name}" if path else field.name
        if field.name not in allowed:
            raise Unsupported(where, f"{name}.{field.name} is not supported by the native "
                              "proxy")
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            entries = value.items()
            for key, item in entries:
                if isinstance(item, any_pb2.Any):
                    check(_unpack(item, f"{where}[{key}]"), f"{where}[{key}]")
                elif isinstance(item, Message):
                    check(item, f"{where}[{key}]")
            continue
        repeated = _repeated(field)
        items = list(value) if repeated else [value]
        for index, item in enumerate(items):
            at = f"{where}[{index}]" if repeated else where
            if isinstance(item, any_pb2.Any):
                check(_unpack(item, at), at)
            else:
                check(item, at)


def _repeated(field: Any) -> bool:
    is_repeated = getattr(field, "is_repeated", None)  # protobuf 6+; label before
    return bool(is_repeated) if is_repeated is not None else \
        field.label == field.LABEL_REPEATED


MAX_FILE = 1 << 20  # a DataSource file: certificates, keys, key sets, bodies


def data(source: Any) -> bytes:
    """A ``DataSource``'s contents: inline, or read from its file when the config is built
    (as Envoy reads it); an unreadable file fails the update that names it."""
    if source.filename:
        with open(source.filename, "rb") as handle:
            found = handle.read(MAX_FILE + 1)
        if len(found) > MAX_FILE:
            raise ValueError(f"{source.filename}: larger than {MAX_FILE} bytes")
        return found
    return bytes(source.inline_bytes) or source.inline_string.encode()


def markdown() -> str:
    """The subset as a table (docs/native.md): each message and the fields read."""
    lines = ["| message | fields the native proxy reads |", "|---|---|"]
    for name in sorted(FIELDS):
        fields = FIELDS[name]
        shown = "all (taken whole)" if fields == ANY_FIELDS else \
            ", ".join(f"`{f}`" for f in sorted(fields)) or "none (the type itself)"
        lines.append(f"| `{name}` | {shown} |")
    return "\n".join(lines) + "\n"
