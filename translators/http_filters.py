"""The HTTP connection manager every generated listener uses, and its HTTP filters.

One builder serves sidecar outbound (RDS by port), sidecar inbound (an inline route to the
inbound cluster) and gateways (RDS by server), so the three differ only where Istio makes
them differ: the route source, the stat prefix and whether the client address is trusted.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.request_id.uuid.v3 import uuid_pb2

from pilotfish.translators import access_logs
from pilotfish.translators.common import ads_config_source, duration, pack

HCM_FILTER = "envoy.filters.network.http_connection_manager"
# The RDS translator attaches per-route config under exactly these names.
FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
ROUTER_FILTER = "envoy.filters.http.router"

def http_filters(auth: Sequence[hcm_pb2.HttpFilter] = ()) -> list[hcm_pb2.HttpFilter]:
    """Authentication and authorization (``jwt_authn``, then RBAC), fault, CORS, then the
    router: Istio's order without its proxy-only filters.

    Fault and CORS are inert until a route enables them through per-filter config, so they
    are always present and a VirtualService change never has to touch a listener. Policy
    filters come first so that a refused request never reaches fault injection or a route.
    """
    return [
        *auth,
        hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=pack(fault_pb2.HTTPFault())),
        hcm_pb2.HttpFilter(name=CORS_FILTER, typed_config=pack(cors_pb2.Cors())),
        hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router())),
    ]


def http_connection_manager(
    stat_prefix: str,
    *,
    rds: str | None = None,
    route_config: route_pb2.RouteConfiguration | None = None,
    use_remote_address: bool = False,
    auth_filters: Sequence[hcm_pb2.HttpFilter] = (),
) -> listener_components_pb2.Filter:
    """The HCM network filter, routing by RDS name (over ADS) or by an inline route table.

    ``auth_filters``: the JWT and RBAC filters guarding the listener (see `rbac`)."""
    if (rds is None) == (route_config is None):
        raise ValueError("http_connection_manager: give exactly one of rds or route_config")
    manager = hcm_pb2.HttpConnectionManager(
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        stat_prefix=stat_prefix,
        http_filters=http_filters(auth_filters),
        # Zero disables the idle timeout: long-lived streams (gRPC, watch) stay up, as in Istio.
        stream_idle_timeout=duration(0),
        upgrade_configs=[hcm_pb2.HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")],
        # Istio's default path normalization (BASE): RFC 3986 normalization, escaped slashes
        # left alone so that authorization and routing see the same path.
        path_with_escaped_slashes_action=hcm_pb2.HttpConnectionManager.KEEP_UNCHANGED,
        request_id_extension=hcm_pb2.RequestIDExtension(
            typed_config=pack(uuid_pb2.UuidRequestIdConfig())
        ),
        access_log=access_logs.for_http(),
    )
    manager.normalize_path.value = True
    manager.use_remote_address.value = use_remote_address
    if rds is not None:
        manager.rds.config_source.CopyFrom(ads_config_source())
        manager.rds.route_config_name = rds
    elif route_config is not None:
        manager.route_config.CopyFrom(route_config)
    return listener_components_pb2.Filter(name=HCM_FILTER, typed_config=pack(manager))

