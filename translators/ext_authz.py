"""AuthorizationPolicy action CUSTOM: delegate the decision to an ext_authz service.

As Istio does it: the CUSTOM policies' rules become the *shadow* rules of an RBAC filter
whose matches leave the policy name (``istio-ext-authz-...``) in the request's dynamic
metadata, and the ext_authz filter after it runs only for requests carrying that mark
(``filter_enabled_metadata``). So only requests a CUSTOM rule selects are sent to the
provider, before the DENY and ALLOW filters. The provider comes from the mesh config's
``extensionProviders`` (``envoyExtAuthzHttp`` or ``envoyExtAuthzGrpc``), reached through
its service's outbound cluster.

Failing closed, as Istio: a provider that the mesh config does not name, or several
providers for one workload, turn the CUSTOM rules into DENY rules. TCP traffic cannot be
sent to an HTTP check, so on network filters the CUSTOM rules deny too (Istio serves only
gRPC providers there).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from envoy.config.core.v3 import base_pb2, config_source_pb2, grpc_service_pb2, http_uri_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2
from envoy.type.v3 import http_status_pb2

from pilotfish.core.meshconfig import ExtAuthzProvider
from pilotfish.core.push_context import PushContext
from pilotfish.core.security_policies import AuthzPolicy
from pilotfish.translators.common import OUTBOUND, cluster_name, duration, pack
from pilotfish.translators.rbac import HTTP_RBAC, rule_policy

log = logging.getLogger("pilotfish.lds")

EXT_AUTHZ = "envoy.filters.http.ext_authz"
SHADOW_PREFIX = "istio_ext_authz_"
POLICY_PREFIX = "istio-ext-authz-"


def custom_policies(policies: Sequence[AuthzPolicy]) -> list[AuthzPolicy]:
    return [p for p in policies if p.action == "CUSTOM" and not p.dry_run]


def provider_for(push: PushContext, custom: Sequence[AuthzPolicy]) -> ExtAuthzProvider | None:
    """The one provider the CUSTOM policies name, or None (unknown, or several)."""
    names = sorted({p.provider for p in custom})
    if len(names) > 1:
        log.warning("CUSTOM policies %s name several providers (%s); only one may apply to "
                    "a workload: their requests are denied",
                    ", ".join(f"{p.namespace}/{p.name}" for p in custom), ", ".join(names))
        return None
    provider = push.mesh.provider(names[0])
    if provider is None:
        log.warning("CUSTOM policies name provider %r, which the mesh config's "
                    "extensionProviders do not define: their requests are denied", names[0])
    return provider


def http_filters(push: PushContext, policies: Sequence[AuthzPolicy]
                 ) -> list[hcm_pb2.HttpFilter]:
    """The RBAC marker and the ext_authz filter for the CUSTOM policies (none without)."""
    custom = custom_policies(policies)
    if not custom:
        return []
    provider = provider_for(push, custom)
    rules = _rules(custom, tcp=False, action=rbac_pb2.RBAC.DENY)
    if provider is None:
        return [hcm_pb2.HttpFilter(name=HTTP_RBAC, typed_config=pack(
            http_rbac_pb2.RBAC(rules=rules)))]
    marker = http_rbac_pb2.RBAC(shadow_rules=rules, shadow_rules_stat_prefix=SHADOW_PREFIX)
    return [hcm_pb2.HttpFilter(name=HTTP_RBAC, typed_config=pack(marker)),
            hcm_pb2.HttpFilter(name=EXT_AUTHZ, typed_config=pack(_ext_authz(provider)))]


def network_rules(policies: Sequence[AuthzPolicy]) -> rbac_pb2.RBAC | None:
    """DENY rules for TCP connections a CUSTOM rule selects (none without)."""
    custom = custom_policies(policies)
    return _rules(custom, tcp=True, action=rbac_pb2.RBAC.DENY) if custom else None


def _rules(custom: Sequence[AuthzPolicy], *, tcp: bool,
           action: rbac_pb2.RBAC.Action.ValueType) -> rbac_pb2.RBAC:
    out = rbac_pb2.RBAC(action=action)
    for policy in custom:
        for index, rule in enumerate(policy.rules):
            key = f"{POLICY_PREFIX}{policy.rule_key(index)}"
            # Built as a DENY rule: what cannot be expressed widens it (more is checked).
            built = rule_policy(rule, tcp=tcp, action="DENY", where=key)
            if built is not None:
                out.policies[key].CopyFrom(built)
    return out


def _host(provider: ExtAuthzProvider) -> str:
    return provider.service.rpartition("/")[2]  # ``NS/HOST`` names the host's namespace


def _ext_authz(provider: ExtAuthzProvider) -> ext_authz_pb2.ExtAuthz:
    host = _host(provider)
    cluster = cluster_name(OUTBOUND, provider.port, "", host)
    config = ext_authz_pb2.ExtAuthz(
        transport_api_version=config_source_pb2.V3,
        failure_mode_allow=provider.fail_open,
        status_on_error=http_status_pb2.HttpStatus(code=provider.status_on_error),
        filter_enabled_metadata=metadata_pb2.MetadataMatcher(
            filter=HTTP_RBAC,
            path=[metadata_pb2.MetadataMatcher.PathSegment(
                key=f"{SHADOW_PREFIX}shadow_effective_policy_id")],
            value=value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(
                prefix=POLICY_PREFIX)),
        ),
    )
    if provider.grpc:
        config.grpc_service.CopyFrom(grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=cluster,
                                                              authority=host),
            timeout=duration(provider.timeout)))
        return config
    service = config.http_service
    service.server_uri.CopyFrom(http_uri_pb2.HttpUri(
        uri=f"http://{host}", cluster=cluster, timeout=duration(provider.timeout)))
    service.path_prefix = provider.path_prefix
    request = config.http_service.authorization_request
    for name, value in sorted(provider.include_additional_headers.items()):
        request.headers_to_add.append(base_pb2.HeaderValue(key=name, value=value))
    _headers(config, "allowed_headers", provider.include_request_headers)
    response = service.authorization_response
    _headers(response, "allowed_upstream_headers", provider.headers_to_upstream_on_allow)
    _headers(response, "allowed_client_headers", provider.headers_to_downstream_on_deny)
    _headers(response, "allowed_client_headers_on_success",
             provider.headers_to_downstream_on_allow)
    return config


def _headers(message: Any, field: str, names: Sequence[str]) -> None:
    """A header list, set only when it names some (Envoy refuses an empty one)."""
    if names:
        getattr(message, field).patterns.extend(
            string_pb2.StringMatcher(exact=name, ignore_case=True) for name in names)
