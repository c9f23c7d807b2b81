"""What guards a proxy's inbound (or gateway) traffic: JWT authentication, then
authorization (CUSTOM through ext_authz, then AUDIT, DENY and ALLOW as RBAC)."""

from __future__ import annotations

import attrs
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2

from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext
from pilotfish.translators import ext_authz
from pilotfish.translators.common import pack
from pilotfish.translators.jwt_authn import jwt_filter
from pilotfish.translators.rbac import (
    NETWORK_RBAC,
    TCP_STAT_PREFIX,
    http_rbac_filters,
    network_rbac_filters,
)


@attrs.frozen
class AuthFilters:
    """What guards a proxy's inbound (or gateway) traffic."""

    # jwt_authn, then CUSTOM (RBAC marker + ext_authz), then RBAC AUDIT, DENY, ALLOW
    http: tuple[hcm_pb2.HttpFilter, ...] = ()
    tcp: tuple[lc_pb2.Filter, ...] = ()  # network RBAC, before tcp_proxy


def auth_filters(push: PushContext, proxy: Proxy) -> AuthFilters:
    policies = push.authorization_policies(proxy)
    tcp = list(network_rbac_filters(policies))
    custom = ext_authz.network_rules(policies)
    if custom is not None:
        tcp.insert(0, lc_pb2.Filter(name=NETWORK_RBAC, typed_config=pack(
            network_rbac_pb2.RBAC(stat_prefix=TCP_STAT_PREFIX, rules=custom))))
    return AuthFilters(
        http=(*jwt_filter(push.request_authentications(proxy)),
              *ext_authz.http_filters(push, policies), *http_rbac_filters(policies)),
        tcp=tuple(tcp),
    )
