"""Gateway and GatewayClass tests (``tests/gateway-*.go``, ``tests/gatewayclass-*.go``)."""

from __future__ import annotations

from ..model import (
    INFRA_NS,
    REFUSED,
    Case,
    Condition,
    ExpectedResponse,
    GatewayClassMustBe,
    GatewayMustBe,
    GenerationObserved,
    InfrastructureLabelled,
    Patch,
    PatchOp,
    PolicyMustBe,
    Ref,
    Request,
    Response,
    Step,
)
from .checks import (
    LISTENER_ACCEPTED_RESOLVED,
    LISTENER_READY,
    POLICY_ACCEPTED,
    accepted,
    resolved,
    route_has,
    step,
)

NS = INFRA_NS
V1 = "infra-backend-v1"
V2 = "infra-backend-v2"
HTTP_ROUTE = ("HTTPRoute",)


def _gw(name: str) -> Ref:
    return (NS, name)


# --- GatewayHTTPListenerIsolation ----------------------------------------------------------

_ISOLATION_REQUESTS = (
    # to the empty-hostname listener
    ExpectedResponse(request=Request(host="bar.com", path="/empty-hostname"), backend=V1,
                     namespace=NS),
    ExpectedResponse(request=Request(host="bar.com", path="/wildcard-example-com"),
                     response=Response(status_code=404)),
    ExpectedResponse(request=Request(host="bar.com", path="/wildcard-foo-example-com"),
                     response=Response(status_code=404)),
    ExpectedResponse(request=Request(host="bar.com", path="/abc-foo-example-com"),
                     response=Response(status_code=404)),
    # to the wildcard-example-com listener
    ExpectedResponse(request=Request(host="bar.example.com", path="/empty-hostname"),
                     response=Response(status_code=404)),
    ExpectedResponse(request=Request(host="bar.example.com", path="/wildcard-example-com"),
                     backend=V1, namespace=NS),
    ExpectedResponse(request=Request(host="bar.example.com", path="/wildcard-foo-example-com"),
                     response=Response(status_code=404)),
    ExpectedResponse(request=Request(host="bar.example.com", path="/abc-foo-example-com"),
                     response=Response(status_code=404)),
    # to the foo-wildcard-example-com listener
    ExpectedResponse(request=Request(host="bar.foo.example.com", path="/empty-hostname"),
                     response=Response(status_code=404)),
    ExpectedResponse(request=Request(host="bar.foo.example.com", path="/wildcard-example-com"),
                     response=Response(status_code=404)),
    ExpectedResponse(request=Request(host="bar.foo.example.com",
                                     path="/wildcard-foo-example-com"),
                     backend=V1, namespace=NS),
    ExpectedResponse(request=Request(host="bar.foo.example.com", path="/abc-foo-example-com"),
                     response=Response(status_code=404)),
    # to the abc-foo-example-com listener
    ExpectedResponse(request=Request(host="abc.foo.example.com", path="/empty-hostname"),
                     response=Response(status_code=404)),
    ExpectedResponse(request=Request(host="abc.foo.example.com", path="/wildcard-example-com"),
                     response=Response(status_code=404)),
    ExpectedResponse(request=Request(host="abc.foo.example.com",
                                     path="/wildcard-foo-example-com"),
                     response=Response(status_code=404), namespace=NS),
    ExpectedResponse(request=Request(host="abc.foo.example.com", path="/abc-foo-example-com"),
                     backend=V1, namespace=NS),
)


def _isolation_step(gateway: str, suffix: str) -> Step:
    routes = tuple((NS, f"attaches-to-{name}{suffix}") for name in (
        "empty-hostname", "wildcard-example-com", "wildcard-foo-example-com",
        "abc-foo-example-com"))
    return step(accepted("HTTPRoute", _gw(gateway), *routes),
                *(resolved("HTTPRoute", route, _gw(gateway)) for route in routes),
                gateway=_gw(gateway), requests=_ISOLATION_REQUESTS)


HTTP_LISTENER_ISOLATION = Case(
    short_name="GatewayHTTPListenerIsolation",
    description="Listener isolation for HTTP listeners with multiple listeners and HTTPRoutes",
    features=("Gateway", "GatewayHTTPListenerIsolation", "HTTPRoute"),
    manifests=("tests/gateway-http-listener-isolation.yaml",
               "tests/gateway-http-listener-isolation-with-hostname-intersection.yaml"),
    source="gateway-http-listener-isolation.go",
    parallel=True,
    steps=(
        Step(namespaces_ready=(NS,)),
        # hostnames on the listeners only
        _isolation_step("http-listener-isolation", ""),
        # hostnames on listeners and HTTPRoutes, intersecting
        _isolation_step("http-listener-isolation-with-hostname-intersection",
                        "-with-hostname-intersection"),
    ),
)

INFRASTRUCTURE = Case(
    short_name="GatewayInfrastructure",
    description="Propagation of metadata from Gateway infrastructure to generated components",
    features=("Gateway", "GatewayInfrastructurePropagation"),
    manifests=("tests/gateway-infrastructure.yaml",),
    source="gateway-infrastructure.go",
    provisional=True,
    parallel=True,
    steps=(
        step(GatewayMustBe(_gw("gateway-with-infrastructure-metadata"), latest=True),
             GatewayMustBe(_gw("gateway-with-infrastructure-metadata"),
                           conditions=(Condition("Accepted", "True"),)),
             InfrastructureLabelled(_gw("gateway-with-infrastructure-metadata")),
             namespaces_ready=(NS,)),
    ),
)

_INVALID_DEFAULT = _gw("invalid-default-client-validation-config")
_SERVER_CERT = (NS, "tls-validity-checks-certificate")

FRONTEND_INVALID_DEFAULT_CLIENT_CERTIFICATE_VALIDATION = Case(
    short_name="GatewayFrontendInvalidDefaultClientCertificateValidation",
    description="Invalid Gateway's default Client Certificate Validation Config should only "
    "affect HTTPS traffic",
    features=("Gateway", "HTTPRoute", "GatewayFrontendClientCertificateValidation"),
    manifests=("tests/gateway-invalid-default-frontend-client-certificate-validation.yaml",),
    source="gateway-invalid-default-frontend-client-certificate-validation.go",
    parallel=True,
    steps=(
        # only the address: each listener's status is checked below
        step(GatewayMustBe(_INVALID_DEFAULT, address=True)),
        step(GatewayMustBe(_INVALID_DEFAULT, listener_conditions=LISTENER_READY,
                           listener_names=("http",)),
             gateway=_INVALID_DEFAULT, port=80,
             requests=(ExpectedResponse(request=Request(host="example.org", path="/"),
                                        response=Response(status_code=200), backend=V1,
                                        namespace=NS),)),
        step(GatewayMustBe(_INVALID_DEFAULT, listener_names=("https",), listener_conditions=(
                 Condition("ResolvedRefs", "False", "InvalidCACertificateRef"),
                 Condition("Accepted", "False", "NoValidCACertificate"),
                 Condition("Programmed", "False"))),
             gateway=_INVALID_DEFAULT, port=443, scheme="https",
             requests=(ExpectedResponse(request=Request(host="example.org", path="/"),
                                        namespace=NS, outcome=REFUSED,
                                        server_name="example.org",
                                        server_certificate=_SERVER_CERT),)),
    ),
)

LISTENER_UNSUPPORTED_PROTOCOL = Case(
    short_name="GatewayListenerUnsupportedProtocol",
    description="A Gateway should set the Accepted condition to False with reason "
    "UnsupportedProtocol on listeners whose protocol is not supported. The Gateway itself "
    "should only be Accepted if at least one of its listeners is accepted.",
    features=("Gateway",),
    manifests=("tests/gateway-invalid-listeners-unsupported-protocol.yaml",),
    source="gateway-invalid-listeners-unsupported-protocol.go",
    parallel=True,
    steps=(
        step(GatewayMustBe(_gw("gateway-only-unsupported-protocols"), latest=True),
             GatewayMustBe(_gw("gateway-only-unsupported-protocols"), conditions=(
                 Condition("Accepted", "False", "ListenersNotValid"),)),
             GatewayMustBe(_gw("gateway-only-unsupported-protocols"), listeners={
                 "invalid": (0, (Condition("Accepted", "False", "UnsupportedProtocol"),), ()),
             })),
        step(GatewayMustBe(_gw("gateway-supported-and-unsupported-protocols"), latest=True),
             GatewayMustBe(_gw("gateway-supported-and-unsupported-protocols"), conditions=(
                 Condition("Accepted", "True", "ListenersNotValid"),)),
             GatewayMustBe(_gw("gateway-supported-and-unsupported-protocols"), listeners={
                 "http": (0, (Condition("Accepted", "True", "Accepted"),), HTTP_ROUTE),
                 "invalid": (0, (Condition("Accepted", "False", "UnsupportedProtocol"),), ()),
             })),
    ),
)

INVALID_PARAMETERS_REF = Case(
    short_name="GatewayInvalidParametersRef",
    description="A Gateway referencing an invalid or non-existent parametersRef should set the "
    "Accepted condition to False with reason InvalidParameters.",
    features=("Gateway",),
    manifests=("tests/gateway-invalid-parameters-ref.yaml",),
    source="gateway-invalid-parameters-ref.go",
    parallel=True,
    steps=(
        step(GatewayMustBe(_gw("gateway-invalid-parameters-ref"), latest=True),
             GatewayMustBe(_gw("gateway-invalid-parameters-ref"), conditions=(
                 Condition("Accepted", "False", "InvalidParameters"),))),
    ),
)

INVALID_ROUTE_KIND = Case(
    short_name="GatewayInvalidRouteKind",
    description="A Gateway in the gateway-conformance-infra namespace should fail to become "
    "ready an invalid Route kind is specified.",
    features=("Gateway",),
    manifests=("tests/gateway-invalid-route-kind.yaml",),
    source="gateway-invalid-route-kind.go",
    parallel=True,
    steps=(
        step(GatewayMustBe(_gw("gateway-only-invalid-route-kind"), listeners={
            "http": (0, (Condition("ResolvedRefs", "False", "InvalidRouteKinds"),), ()),
        })),
        step(GatewayMustBe(_gw("gateway-supported-and-invalid-route-kind"), listeners={
            "http": (0, (Condition("ResolvedRefs", "False", "InvalidRouteKinds"),), HTTP_ROUTE),
        })),
    ),
)


def _tls_backend_gateway(name: str, reason: str) -> tuple[GatewayMustBe, ...]:
    return (GatewayMustBe(_gw(name), latest=True),
            GatewayMustBe(_gw(name), conditions=(Condition("ResolvedRefs", "False", reason),)),
            GatewayMustBe(_gw(name), conditions=(Condition("Accepted", "True", "Accepted"),)))


INVALID_TLS_BACKEND_CONFIGURATION = Case(
    short_name="GatewayInvalidTLSBackendConfiguration",
    description="A Gateway should have ResolvedRefs condition set false if the Gateway has an "
    "invalid backend TLS configuration",
    features=("Gateway", "GatewayBackendClientCertificate", "HTTPRoute", "BackendTLSPolicy"),
    manifests=("tests/gateway-invalid-tls-backend-configuration.yaml",),
    source="gateway-invalid-tls-backend-configuration.go",
    parallel=True,
    steps=(
        # Go checks the five Gateways in parallel subtests.
        step(_tls_backend_gateway("gateway-client-certificate-nonexistent-secret",
                                  "InvalidClientCertificateRef"),
             _tls_backend_gateway("gateway-client-certificate-unsupported-group",
                                  "InvalidClientCertificateRef"),
             _tls_backend_gateway("gateway-client-certificate-unsupported-kind",
                                  "InvalidClientCertificateRef"),
             _tls_backend_gateway("gateway-client-certificate-malformed-secret",
                                  "InvalidClientCertificateRef"),
             _tls_backend_gateway("gateway-client-certificate-missing-reference-grant",
                                  "RefNotPermitted")),
    ),
)

_INVALID_CERTIFICATE_LISTENERS = {
    "https": (0, (Condition("ResolvedRefs", "False", "InvalidCertificateRef"),), HTTP_ROUTE),
}

INVALID_TLS_CONFIGURATION = Case(
    short_name="GatewayInvalidTLSConfiguration",
    description="A Gateway should fail to become ready if the Gateway has an invalid TLS "
    "configuration",
    features=("Gateway",),
    manifests=("tests/gateway-invalid-tls-configuration.yaml",),
    source="gateway-invalid-tls-configuration.go",
    parallel=True,
    steps=(
        # Go checks the four Gateways in parallel subtests.
        step(*(GatewayMustBe(_gw(name), listeners=_INVALID_CERTIFICATE_LISTENERS) for name in (
            "gateway-certificate-nonexistent-secret", "gateway-certificate-unsupported-group",
            "gateway-certificate-unsupported-kind", "gateway-certificate-malformed-secret"))),
    ),
)

_ADD = _gw("gateway-add-listener")
_REMOVE = _gw("gateway-remove-listener")

MODIFY_LISTENERS = Case(
    short_name="GatewayModifyListeners",
    description="A Gateway in the gateway-conformance-infra namespace should handle adding and "
    "removing listeners.",
    features=("Gateway",),
    manifests=("tests/gateway-modify-listeners.yaml",),
    source="gateway-modify-listeners.go",
    steps=(
        # a listener added to the spec starts routing traffic
        step(GatewayMustBe(_ADD, latest=True), namespaces_ready=(NS,)),
        step(Patch("Gateway", _ADD, (PatchOp("add", "/spec/listeners/-", {
                 "name": "http", "port": 80, "protocol": "HTTP", "hostname": "data.test.com",
                 "allowedRoutes": {"namespaces": {"from": "All"}}}),)),
             GatewayMustBe(_ADD, listeners={
                 "https": (1, LISTENER_ACCEPTED_RESOLVED, HTTP_ROUTE),
                 "http": (1, LISTENER_ACCEPTED_RESOLVED, HTTP_ROUTE),
             }),
             GatewayMustBe(_ADD, latest=True),
             GenerationObserved("Gateway", _ADD, changed=True),
             namespaces_ready=(NS,)),
        # a listener removed from the spec stops routing traffic; the manifest lists "https"
        # first and "http" second, and Go keeps only "http"
        step(GatewayMustBe(_REMOVE, latest=True), namespaces_ready=(NS,)),
        step(Patch("Gateway", _REMOVE, (PatchOp("remove", "/spec/listeners/0"),)),
             GatewayMustBe(_REMOVE, listeners={
                 "http": (1, LISTENER_ACCEPTED_RESOLVED, HTTP_ROUTE),
             }),
             GatewayMustBe(_REMOVE, latest=True),
             GenerationObserved("Gateway", _REMOVE, changed=True),
             namespaces_ready=(NS,)),
    ),
)

# "gateway-name-maximum-length-" padded with "a" to 253 characters
MAXIMUM_NAME = "gateway-name-maximum-length-" + "a" * (253 - len("gateway-name-maximum-length-"))

NAME_MAXIMUM_LENGTH = Case(
    short_name="GatewayNameMaximumLength",
    description="A Gateway with a 253-character name should be reconciled by the "
    "implementation. The test only verifies that status conditions have an updated "
    "observedGeneration and does not assert specific condition values.",
    features=("Gateway",),
    manifests=("tests/gateway-name-maximum-length.yaml",),
    source="gateway-name-maximum-length.go",
    parallel=True,
    steps=(step(GatewayMustBe(_gw(MAXIMUM_NAME), latest=True)),),
)

_BUMP = _gw("gateway-observed-generation-bump")

OBSERVED_GENERATION_BUMP = Case(
    short_name="GatewayObservedGenerationBump",
    description="A Gateway in the gateway-conformance-infra namespace should update the "
    "observedGeneration in all of its Status.Conditions after an update to the spec",
    features=("Gateway",),
    manifests=("tests/gateway-observed-generation-bump.yaml",),
    source="gateway-observed-generation-bump.go",
    parallel=True,
    steps=(
        step(GatewayMustBe(_BUMP, latest=True), namespaces_ready=(NS,)),
        step(Patch("Gateway", _BUMP, (PatchOp("add", "/spec/listeners/-", {
                 "name": "alternate", "hostname": "foo.com", "port": 80, "protocol": "HTTP",
                 "allowedRoutes": {"namespaces": {"from": "All"}}}),)),
             GatewayMustBe(_BUMP, latest=True),
             GenerationObserved("Gateway", _BUMP, changed=True),
             namespaces_ready=(NS,)),
    ),
)

OPTIONAL_ADDRESS_VALUE = Case(
    short_name="GatewayOptionalAddressValue",
    description="Check Gateway Support for GatewayAddressEmpty feature",
    features=("Gateway", "GatewayAddressEmpty"),
    manifests=("tests/gateway-optional-address-value.yaml",),
    source="gateway-optional-address-value.go",
    provisional=True,
    parallel=True,
    steps=(
        step(GatewayMustBe(_gw("gateway-without-address-value"), latest=True),
             GatewayMustBe(_gw("gateway-without-address-value"), address=True),
             namespaces_ready=(NS,)),
    ),
)


def _secret_grant_case(short_name: str, description: str, conditions: tuple[Condition, ...]
                       ) -> Case:
    name = {"GatewaySecretInvalidReferenceGrant": "gateway-secret-invalid-reference-grant",
            "GatewaySecretMissingReferenceGrant": "gateway-secret-missing-reference-grant",
            "GatewaySecretReferenceGrantAllInNamespace":
                "gateway-secret-reference-grant-all-in-namespace",
            "GatewaySecretReferenceGrantSpecific": "gateway-secret-reference-grant-specific",
            }[short_name]
    return Case(
        short_name=short_name,
        description=description,
        features=("Gateway", "ReferenceGrant"),
        manifests=(f"tests/{name}.yaml",),
        source=f"{name}.go",
        parallel=True,
        steps=(step(GatewayMustBe(_gw(name), listeners={"https": (0, conditions, HTTP_ROUTE)})),),
    )


_REF_NOT_PERMITTED = (Condition("ResolvedRefs", "False", "RefNotPermitted"),)
_PROGRAMMED_RESOLVED = (Condition("Programmed", "True", "Programmed"),
                        Condition("ResolvedRefs", "True"))

SECRET_INVALID_REFERENCE_GRANT = _secret_grant_case(
    "GatewaySecretInvalidReferenceGrant",
    "A Gateway in the gateway-conformance-infra namespace should fail to become ready if the "
    "Gateway has a certificateRef for a Secret in the gateway-conformance-web-backend namespace "
    "and a ReferenceGrant exists but does not grant permission to that specific Secret",
    _REF_NOT_PERMITTED)
SECRET_MISSING_REFERENCE_GRANT = _secret_grant_case(
    "GatewaySecretMissingReferenceGrant",
    "A Gateway in the gateway-conformance-infra namespace should fail to become programmed if "
    "the Gateway has a certificateRef for a Secret in the gateway-conformance-web-backend "
    "namespace and a ReferenceGrant granting permission to the Secret does not exist",
    _REF_NOT_PERMITTED)
SECRET_REFERENCE_GRANT_ALL_IN_NAMESPACE = _secret_grant_case(
    "GatewaySecretReferenceGrantAllInNamespace",
    "A Gateway in the gateway-conformance-infra namespace should become programmed if the "
    "Gateway has a certificateRef for a Secret in the gateway-conformance-web-backend namespace "
    "and a ReferenceGrant granting permission to all Secrets in the namespace exists",
    _PROGRAMMED_RESOLVED)
SECRET_REFERENCE_GRANT_SPECIFIC = _secret_grant_case(
    "GatewaySecretReferenceGrantSpecific",
    "A Gateway in the gateway-conformance-infra namespace should become programmed if the "
    "Gateway has a certificateRef for a Secret in the gateway-conformance-web-backend namespace "
    "and a ReferenceGrant granting permission to the specific Secret exists",
    _PROGRAMMED_RESOLVED)

_STATIC = _gw("gateway-static-addresses")

STATIC_ADDRESSES = Case(
    short_name="GatewayStaticAddresses",
    description="A Gateway in the gateway-conformance-infra namespace should be able to use "
    "previously determined addresses.",
    features=("Gateway", "GatewayStaticAddresses"),
    manifests=("tests/gateway-static-addresses.yaml",),
    source="gateway-static-addresses.go",
    parallel=True,
    # The suite swaps the manifest's placeholders for the addresses it was given (one
    # unusable, one usable: Go requires exactly three addresses, the invalid one first).
    steps=(
        step(GatewayMustBe(_STATIC, latest=True),
             GatewayMustBe(_STATIC, conditions=(
                 Condition("Accepted", "False", "UnsupportedAddress"),))),
        # drop the address of an unsupported type
        step(Patch("Gateway", _STATIC, (PatchOp("remove", "/spec/addresses/0"),)),
             GatewayMustBe(_STATIC, latest=True),
             GatewayMustBe(_STATIC, conditions=(Condition("Accepted", "True", "Accepted"),)),
             GatewayMustBe(_STATIC, conditions=(
                 Condition("Programmed", "False", "AddressNotUsable"),))),
        # drop the unusable address, now the first
        step(Patch("Gateway", _STATIC, (PatchOp("remove", "/spec/addresses/0"),)),
             GatewayMustBe(_STATIC, latest=True),
             GatewayMustBe(_STATIC, conditions=(Condition("Accepted", "True", "Accepted"),)),
             GatewayMustBe(_STATIC, conditions=(Condition("Programmed", "True", "Programmed"),)),
             GatewayMustBe(_STATIC, listeners={
                 "http": (0, LISTENER_ACCEPTED_RESOLVED, HTTP_ROUTE),
             }),
             GatewayMustBe(_STATIC, status_addresses=("PLACEHOLDER_USABLE_ADDRS",))),
    ),
)

_BACKEND_CLIENT_CERT = _gw("gateway-tls-backend-client-certificate")

TLS_BACKEND_CLIENT_CERTIFICATE = Case(
    short_name="GatewayTLSBackendClientCertificate",
    description="A Gateway with a client certificate configured should present the certificate "
    "when connecting to a backend using TLS.",
    features=("Gateway", "GatewayBackendClientCertificate", "HTTPRoute", "BackendTLSPolicy"),
    manifests=("tests/gateway-tls-backend-client-certificate.yaml",),
    source="gateway-tls-backend-client-certificate.go",
    parallel=True,
    steps=(
        step(accepted("HTTPRoute", _BACKEND_CLIENT_CERT,
                      (NS, "gateway-tls-backend-client-certificate")),
             resolved("HTTPRoute", (NS, "gateway-tls-backend-client-certificate"),
                      _BACKEND_CLIENT_CERT),
             PolicyMustBe((NS, "gateway-tls-backend-client-certificate-test"),
                          _BACKEND_CLIENT_CERT, POLICY_ACCEPTED),
             GatewayMustBe(_BACKEND_CLIENT_CERT, conditions=(
                 Condition("ResolvedRefs", "True", "ResolvedRefs"),)),
             namespaces_ready=(NS,)),
        step(gateway=_BACKEND_CLIENT_CERT, port=80, requests=(ExpectedResponse(
            namespace=NS,
            request=Request(path="/", host="abc.example.com", sni="abc.example.com",
                            client_cert=f"{NS}/tls-checks-client-certificate"),
            response=Response(status_codes=(200,))),)),
    ),
)

_ONE_ROUTE = _gw("gateway-with-one-attached-route")
_TWO_ROUTES = _gw("gateway-with-two-attached-routes")
_UNRESOLVED = _gw("unresolved-gateway-with-one-attached-unresolved-route")

WITH_ATTACHED_ROUTES = Case(
    short_name="GatewayWithAttachedRoutes",
    description="A Gateway in the gateway-conformance-infra namespace should be attached to "
    "routes.",
    features=("Gateway", "HTTPRoute"),
    manifests=("tests/gateway-with-attached-routes.yaml",),
    source="gateway-with-attached-routes.go",
    steps=(
        step(GatewayMustBe(_ONE_ROUTE, listeners={
            "http": (1, LISTENER_ACCEPTED_RESOLVED, HTTP_ROUTE)})),
        step(GatewayMustBe(_TWO_ROUTES, listeners={
                 "http": (2, LISTENER_ACCEPTED_RESOLVED, HTTP_ROUTE)}),
             route_has("HTTPRoute", (NS, "http-route-not-accepted"), _TWO_ROUTES,
                       Condition("Accepted", "False", "NoMatchingListenerHostname"))),
        # AttachedRoutes counts even when the Gateway has unresolved references
        step(GatewayMustBe(_UNRESOLVED, listeners={
                 "tls": (1, (Condition("Programmed", "False"), Condition("ResolvedRefs", "False")),
                         HTTP_ROUTE)}),
             route_has("HTTPRoute", (NS, "http-route-4"), _UNRESOLVED,
                       Condition("ResolvedRefs", "False"))),
    ),
)

WITH_ATTACHED_ROUTES_WITH_PORT_8080 = Case(
    short_name="GatewayWithAttachedRoutesWithPort8080",
    description="A Gateway in the gateway-conformance-infra namespace should be attached to "
    "routes.",
    features=("Gateway", "GatewayPort8080", "HTTPRoute"),
    manifests=("tests/gateway-with-attached-routes-with-port-8080.yaml",),
    source="gateway-with-attached-routes.go",
    steps=(
        step(GatewayMustBe(_gw("gateway-with-two-listeners-and-one-attached-route"), listeners={
            "http-unattached": (0, LISTENER_ACCEPTED_RESOLVED, HTTP_ROUTE),
            "http": (1, LISTENER_ACCEPTED_RESOLVED, HTTP_ROUTE),
        })),
    ),
)

_DEFAULT_CLIENT = (NS, "tls-validity-checks-client-certificate")
_PER_PORT_CLIENT = (NS, "tls-validity-checks-per-port-client-certificate")


def _tls(gateway: Ref, port: int, host: str, client: Ref | None, backend: str = "",
         refused: bool = False) -> Step:
    if refused:
        expected = ExpectedResponse(request=Request(host=host, path="/"), namespace=NS,
                                    outcome=REFUSED, server_name=host,
                                    server_certificate=_SERVER_CERT, client_certificate=client)
    else:
        expected = ExpectedResponse(request=Request(host=host, path="/"),
                                    response=Response(status_code=200), backend=backend,
                                    namespace=NS, server_name=host,
                                    server_certificate=_SERVER_CERT, client_certificate=client)
    return Step(gateway=gateway, port=port, scheme="https", requests=(expected,))


_INSECURE = _gw("client-validation-insecure-fallback")
_INSECURE_ROUTES = ((NS, "client-cert-validation-insecure-fallback-test"),
                    (NS, "client-cert-validation-insecure-fallback-test-no-hostname"))

FRONTEND_CLIENT_CERTIFICATE_VALIDATION_INSECURE_FALLBACK = Case(
    short_name="GatewayFrontendClientCertificateValidationInsecureFallback",
    description="Gateway's client certificate validation set to AllowInsecureFallback allows "
    "any HTTPS traffic.",
    features=("Gateway", "HTTPRoute", "GatewayFrontendClientCertificateValidation",
              "GatewayFrontendClientCertificateValidationInsecureFallback"),
    manifests=("tests/gateway-with-clientcertificate-validation-insecure-fallback.yaml",),
    source="gateway-with-clientcertificate-validation-insecure-fallback.go",
    parallel=True,
    steps=(
        step(accepted("HTTPRoute", _INSECURE, *_INSECURE_ROUTES),
             *(resolved("HTTPRoute", route, _INSECURE) for route in _INSECURE_ROUTES)),
        step(GatewayMustBe(_INSECURE, conditions=(
            Condition("InsecureFrontendValidationMode", "True", "ConfigurationChanged"),))),
        # the default TLS configuration (443): matching, other and no client certificate
        _tls(_INSECURE, 443, "example.org", _DEFAULT_CLIENT, V1),
        _tls(_INSECURE, 443, "example.org", _PER_PORT_CLIENT, V1),
        _tls(_INSECURE, 443, "example.org", None, V1),
        # the per-port TLS configuration (8443)
        _tls(_INSECURE, 8443, "second-example.org", _PER_PORT_CLIENT, V2),
        _tls(_INSECURE, 8443, "second-example.org", _DEFAULT_CLIENT, V2),
        _tls(_INSECURE, 8443, "second-example.org", None, V2),
    ),
)

_VALIDATION = _gw("client-validation-default")
_VALIDATION_ROUTES = ((NS, "client-certificate-validation-https-test"),
                      (NS, "client-certificate-validation-https-test-no-hostname"))

FRONTEND_CLIENT_CERTIFICATE_VALIDATION = Case(
    short_name="GatewayFrontendClientCertificateValidation",
    description="Gateway's client certificate validation config should be used for HTTPS "
    "traffic",
    features=("Gateway", "HTTPRoute", "GatewayFrontendClientCertificateValidation"),
    manifests=("tests/gateway-with-clientcertificate-validation.yaml",),
    source="gateway-with-clientcertificate-validation.go",
    parallel=True,
    steps=(
        step(accepted("HTTPRoute", _VALIDATION, *_VALIDATION_ROUTES),
             *(resolved("HTTPRoute", route, _VALIDATION) for route in _VALIDATION_ROUTES)),
        # the default configuration (443)
        _tls(_VALIDATION, 443, "example.org", _DEFAULT_CLIENT, V1),
        _tls(_VALIDATION, 443, "example.org", _PER_PORT_CLIENT, refused=True),
        # the per-port configuration (8443)
        _tls(_VALIDATION, 8443, "second-example.org", _PER_PORT_CLIENT, V2),
        _tls(_VALIDATION, 8443, "second-example.org", _DEFAULT_CLIENT, refused=True),
    ),
)

_INVALID_VALIDATION = _gw("gateway-with-invalid-client-cert-validation")


def _invalid_ca_listener(name: str, reason: str) -> GatewayMustBe:
    return GatewayMustBe(_INVALID_VALIDATION, listener_names=(name,), listener_conditions=(
        Condition("ResolvedRefs", "False", reason),
        Condition("Accepted", "False", "NoValidCACertificate"),
        Condition("Programmed", "False")))


INVALID_FRONTEND_CLIENT_CERTIFICATE_VALIDATION = Case(
    short_name="GatewayInvalidFrontendClientCertificateValidation",
    description="Gateway's should reject invalid Client Certificate Validation Config",
    features=("Gateway", "HTTPRoute", "ReferenceGrant",
              "GatewayFrontendClientCertificateValidation"),
    manifests=("tests/gateway-with-invalid-clientcertificate-validation.yaml",),
    source="gateway-with-invalid-clientcertificate-validation.go",
    parallel=True,
    steps=(
        # an invalid default or per-port configuration affects only its own listener
        step(GatewayMustBe(_INVALID_VALIDATION, listener_names=("https",),
                           listener_conditions=LISTENER_READY),
             _invalid_ca_listener("https-unresolved", "InvalidCACertificateRef"),
             _invalid_ca_listener("https-invalid-kind", "InvalidCACertificateKind"),
             _invalid_ca_listener("https-grant-missing", "RefNotPermitted")),
    ),
)

GATEWAY_CLASS_OBSERVED_GENERATION_BUMP = Case(
    short_name="GatewayClassObservedGenerationBump",
    description="A GatewayClass should update the observedGeneration in all of it's "
    "Status.Conditions after an update to the spec",
    features=("Gateway",),
    manifests=("tests/gatewayclass-observed-generation-bump.yaml",),
    source="gatewayclass-observed-generation-bump.go",
    parallel=True,
    steps=(
        step(GatewayClassMustBe("gatewayclass-observed-generation-bump", accepted_any=True),
             GatewayClassMustBe("gatewayclass-observed-generation-bump", latest=True)),
        step(Patch("GatewayClass", ("", "gatewayclass-observed-generation-bump"),
                   (PatchOp("add", "/spec/description", "new"),)),
             GatewayClassMustBe("gatewayclass-observed-generation-bump", accepted_any=True),
             GatewayClassMustBe("gatewayclass-observed-generation-bump", latest=True),
             GenerationObserved("GatewayClass", ("", "gatewayclass-observed-generation-bump"),
                                changed=True)),
    ),
)

# In file-name order, as the Go files register them.
CASES: tuple[Case, ...] = (
    HTTP_LISTENER_ISOLATION,
    INFRASTRUCTURE,
    FRONTEND_INVALID_DEFAULT_CLIENT_CERTIFICATE_VALIDATION,
    LISTENER_UNSUPPORTED_PROTOCOL,
    INVALID_PARAMETERS_REF,
    INVALID_ROUTE_KIND,
    INVALID_TLS_BACKEND_CONFIGURATION,
    INVALID_TLS_CONFIGURATION,
    MODIFY_LISTENERS,
    NAME_MAXIMUM_LENGTH,
    OBSERVED_GENERATION_BUMP,
    OPTIONAL_ADDRESS_VALUE,
    SECRET_INVALID_REFERENCE_GRANT,
    SECRET_MISSING_REFERENCE_GRANT,
    SECRET_REFERENCE_GRANT_ALL_IN_NAMESPACE,
    SECRET_REFERENCE_GRANT_SPECIFIC,
    STATIC_ADDRESSES,
    TLS_BACKEND_CLIENT_CERTIFICATE,
    WITH_ATTACHED_ROUTES,
    WITH_ATTACHED_ROUTES_WITH_PORT_8080,
    FRONTEND_CLIENT_CERTIFICATE_VALIDATION_INSECURE_FALLBACK,
    FRONTEND_CLIENT_CERTIFICATE_VALIDATION,
    INVALID_FRONTEND_CLIENT_CERTIFICATE_VALIDATION,
    GATEWAY_CLASS_OBSERVED_GENERATION_BUMP,
)
