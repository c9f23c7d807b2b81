"""The conformance profiles we report on, their features, and which cases each one runs.

How the Go suite decides (``conformance/utils/suite``):

- A run names its profiles and the features the implementation supports. The supported set
  is widened by the core features of every named profile (``NewConformanceTestSuite``).
- A test runs when every one of its features is in that supported set; otherwise it is
  "not supported" and counts nowhere (``Run``). Provisional tests run too unless
  ``SkipProvisionalTests`` is set (Istio's report lists the provisional ones it passed).
- A test belongs to a profile when each of its features is in the profile's core or extended
  set (``getConformanceProfilesForTest``); it counts as extended there when any feature is
  outside the core set (``isTestExtended``), else as core. A test may belong to several
  profiles, or to none (then it runs but is reported nowhere).

``pkg/features``, where the feature sets live, is not in the corpus. The sets below are
derived from the names the tests use and from Istio's v1.5 report, which lists for each
profile the extended features supported and unsupported (together, the profile's extended
set at v1.5.1): a ``Gateway…`` name or ``ListenerSet`` is a Gateway extended feature, an
``HTTPRoute…`` name an HTTPRoute extended one, and likewise for ``TLSRoute…``,
``GRPCRoute…`` and ``Mesh…``; ``BackendTLSPolicy`` is that policy's core feature and
``BackendTLSPolicySANValidation`` its extended one. Every name the report lists fits this
rule, and so does every name the tests use.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

import attrs

from .cases import ALL
from .model import Case

# --- Feature sets (pkg/features, derived as the docstring says) ---------------------------

GATEWAY_CORE = frozenset({"Gateway"})
GATEWAY_EXTENDED = frozenset({
    "GatewayAddressEmpty",
    "GatewayBackendClientCertificate",
    "GatewayFrontendClientCertificateValidation",
    "GatewayFrontendClientCertificateValidationInsecureFallback",
    "GatewayHTTPListenerIsolation",
    "GatewayHTTPSListenerDetectMisdirectedRequests",
    "GatewayInfrastructurePropagation",
    "GatewayPort8080",
    "GatewayStaticAddresses",
    "ListenerSet",
})
REFERENCE_GRANT_CORE = frozenset({"ReferenceGrant"})
HTTPROUTE_CORE = frozenset({"HTTPRoute"})
HTTPROUTE_EXTENDED = frozenset({
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendRequestRedirect",  # newer than v1.5.1
    "HTTPRouteBackendTimeout",
    "HTTPRouteBackendURLRewrite",  # newer than v1.5.1
    "HTTPRouteCORS",
    "HTTPRouteDestinationPortMatching",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteRetry",  # newer than v1.5.1
    "HTTPRouteRetryBackendTimeout",  # newer than v1.5.1
    "HTTPRouteRetryConnectionError",  # newer than v1.5.1
    "HTTPRouteSchemeRedirect",
})
GRPCROUTE_CORE = frozenset({"GRPCRoute"})
# In none of the four profiles: GATEWAY-GRPC's extended set leaves GRPCRoute's out.
GRPCROUTE_EXTENDED = frozenset({"GRPCRouteNamedRouteRule", "GRPCRouteRequestHeaderModifier"})
TLSROUTE_CORE = frozenset({"TLSRoute"})
TLSROUTE_EXTENDED = frozenset({"TLSRouteModeMixed", "TLSRouteModeTerminate"})
TCPROUTE_CORE = frozenset({"TCPRoute"})
UDPROUTE_CORE = frozenset({"UDPRoute"})
BACKEND_TLS_POLICY_CORE = frozenset({"BackendTLSPolicy"})
BACKEND_TLS_POLICY_EXTENDED = frozenset({"BackendTLSPolicySANValidation"})
MESH_CORE = frozenset({"Mesh"})
MESH_EXTENDED = frozenset({
    "MeshClusterIPMatching",
    "MeshConsumerRoute",
    "MeshHTTPRouteBackendRequestHeaderModification",
    "MeshHTTPRouteNamedRouteRule",
    "MeshHTTPRouteQueryParamMatching",
    "MeshHTTPRouteRedirectPath",
    "MeshHTTPRouteRedirectPort",
    "MeshHTTPRouteRewritePath",
    "MeshHTTPRouteSchemeRedirect",
})

ALL_FEATURES = (GATEWAY_CORE | GATEWAY_EXTENDED | REFERENCE_GRANT_CORE | HTTPROUTE_CORE
                | HTTPROUTE_EXTENDED | GRPCROUTE_CORE | GRPCROUTE_EXTENDED | TLSROUTE_CORE
                | TLSROUTE_EXTENDED | TCPROUTE_CORE | UDPROUTE_CORE | BACKEND_TLS_POLICY_CORE
                | BACKEND_TLS_POLICY_EXTENDED | MESH_CORE | MESH_EXTENDED)


# --- Profiles (utils/suite/profiles.go) ------------------------------------------------------


@attrs.frozen
class Profile:
    name: str
    core: frozenset[str]
    extended: frozenset[str]


_BACKEND_TLS_POLICY = BACKEND_TLS_POLICY_CORE | BACKEND_TLS_POLICY_EXTENDED

GATEWAY_HTTP = Profile("GATEWAY-HTTP", GATEWAY_CORE | REFERENCE_GRANT_CORE | HTTPROUTE_CORE,
                       GATEWAY_EXTENDED | HTTPROUTE_EXTENDED | _BACKEND_TLS_POLICY)
# BackendTLSPolicy joined GATEWAY-GRPC and GATEWAY-TLS after v1.5.1 (with the tests
# BackendTLSPolicyGRPCRoute and BackendTLSPolicyTLSRouteTerminate).
GATEWAY_GRPC = Profile("GATEWAY-GRPC", GATEWAY_CORE | REFERENCE_GRANT_CORE | GRPCROUTE_CORE,
                       GATEWAY_EXTENDED | _BACKEND_TLS_POLICY)
GATEWAY_TLS = Profile("GATEWAY-TLS", GATEWAY_CORE | REFERENCE_GRANT_CORE | TLSROUTE_CORE,
                      GATEWAY_EXTENDED | TLSROUTE_EXTENDED | _BACKEND_TLS_POLICY)
MESH_HTTP = Profile("MESH-HTTP", MESH_CORE | HTTPROUTE_CORE, MESH_EXTENDED)

PROFILES: tuple[Profile, ...] = (GATEWAY_HTTP, GATEWAY_GRPC, GATEWAY_TLS, MESH_HTTP)
BY_NAME: Mapping[str, Profile] = {profile.name: profile for profile in PROFILES}


def belongs(case: Case, profile: Profile) -> bool:
    """The case is reported under the profile (``getConformanceProfilesForTest``)."""
    return set(case.features) <= profile.core | profile.extended


def is_extended(case: Case, profile: Profile) -> bool:
    """Reported as extended rather than core (``isTestExtended``)."""
    return not set(case.features) <= profile.core


def tests_for(profile: Profile, extended_features_supported: Collection[str],
              cases: Iterable[Case] = ALL, *, skip_provisional: bool = False
              ) -> tuple[tuple[Case, ...], tuple[Case, ...]]:
    """The (core, extended) cases the Go suite runs and reports under ``profile`` for an
    implementation supporting ``extended_features_supported``: those of the profile whose
    features all lie in its core set or in the supported ones. Pass every extended feature
    the implementation supports (not just this profile's) to match a run of several
    profiles: Go checks a test against the whole supported set."""
    supported = profile.core | frozenset(extended_features_supported)
    core: list[Case] = []
    extended: list[Case] = []
    for case in cases:
        if not belongs(case, profile) or not set(case.features) <= supported:
            continue
        if skip_provisional and case.provisional:
            continue
        (extended if is_extended(case, profile) else core).append(case)
    return tuple(core), tuple(extended)


# --- Istio 1.30 (conformance/reports/v1.5/istio-istio/1.30.0-default-report.yaml) ------------

# The extended features the report lists as supported under each profile.
ISTIO_1_30_EXTENDED: Mapping[str, frozenset[str]] = {
    "GATEWAY-HTTP": frozenset({
        "BackendTLSPolicy", "BackendTLSPolicySANValidation", "GatewayAddressEmpty",
        "GatewayHTTPListenerIsolation", "GatewayInfrastructurePropagation", "GatewayPort8080",
        "GatewayStaticAddresses", "HTTPRoute303RedirectStatusCode",
        "HTTPRoute307RedirectStatusCode", "HTTPRoute308RedirectStatusCode",
        "HTTPRouteBackendProtocolH2C", "HTTPRouteBackendProtocolWebSocket",
        "HTTPRouteBackendRequestHeaderModification", "HTTPRouteBackendTimeout", "HTTPRouteCORS",
        "HTTPRouteDestinationPortMatching", "HTTPRouteHostRewrite", "HTTPRouteMethodMatching",
        "HTTPRouteNamedRouteRule", "HTTPRouteParentRefPort", "HTTPRoutePathRedirect",
        "HTTPRoutePathRewrite", "HTTPRoutePortRedirect", "HTTPRouteQueryParamMatching",
        "HTTPRouteRequestMirror", "HTTPRouteRequestMultipleMirrors",
        "HTTPRouteRequestPercentageMirror", "HTTPRouteRequestTimeout",
        "HTTPRouteResponseHeaderModification", "HTTPRouteSchemeRedirect",
    }),
    "GATEWAY-GRPC": frozenset({
        "GatewayAddressEmpty", "GatewayHTTPListenerIsolation", "GatewayInfrastructurePropagation",
        "GatewayPort8080", "GatewayStaticAddresses",
    }),
    "GATEWAY-TLS": frozenset({
        "GatewayAddressEmpty", "GatewayHTTPListenerIsolation", "GatewayInfrastructurePropagation",
        "GatewayPort8080", "GatewayStaticAddresses", "TLSRouteModeMixed",
        "TLSRouteModeTerminate",
    }),
    "MESH-HTTP": frozenset({
        "MeshConsumerRoute", "MeshHTTPRouteBackendRequestHeaderModification",
        "MeshHTTPRouteNamedRouteRule", "MeshHTTPRouteQueryParamMatching",
        "MeshHTTPRouteRedirectPath", "MeshHTTPRouteRedirectPort", "MeshHTTPRouteRewritePath",
        "MeshHTTPRouteSchemeRedirect",
    }),
}
# Everything Istio supports in one run of the four profiles (Go checks tests against this).
ISTIO_1_30_SUPPORTED: frozenset[str] = frozenset().union(
    *ISTIO_1_30_EXTENDED.values(), *(profile.core for profile in PROFILES))

# (core passed, extended passed) in the report
ISTIO_1_30_REPORT: Mapping[str, tuple[int, int]] = {
    "GATEWAY-HTTP": (33, 38),
    "GATEWAY-GRPC": (13, 3),
    "GATEWAY-TLS": (18, 7),
    "MESH-HTTP": (7, 7),
}

# The report ran the v1.5.1 suite (April 2026); this corpus is later. Tests added since,
# as their pull requests in kubernetes-sigs/gateway-api date them.
ADDED_SINCE_ISTIO_1_30_REPORT = frozenset({
    "GatewayInvalidParametersRef",  # #4808, merged 2026-04-30; in v1.6.0
    "GatewayListenerUnsupportedProtocol",  # first in v1.6.0-rc.1
    "GatewayNameMaximumLength",  # #5035, July 2026
    "HTTPRouteNoBackendRefs",  # first in v1.6.0-rc.1
    "HTTPRouteMultipleGateways",  # #4996, June 2026
    "HTTPRouteBackendRequestRedirect",  # #4823, May 2026
    "HTTPRouteBackendURLRewrite",  # #4823, May 2026
    "BackendTLSPolicyGRPCRoute",  # #4882, May 2026
    "BackendTLSPolicyTLSRouteTerminate",  # #4875, May 2026
})
