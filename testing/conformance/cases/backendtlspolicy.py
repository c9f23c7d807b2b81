"""BackendTLSPolicy tests (``tests/backendtlspolicy*.go``)."""

from __future__ import annotations

from ..model import (
    FAILURE,
    INFRA_NS,
    Case,
    Condition,
    Create,
    ExpectedRequest,
    ExpectedResponse,
    GenerationObserved,
    GRPCExpectedResponse,
    Patch,
    PatchOp,
    Request,
    Response,
    TCPExpectedResponse,
    ValueFrom,
)
from .checks import (
    POLICY_ACCEPTED,
    POLICY_RESOLVED,
    accepted,
    policy_has,
    resolved,
    step,
)

NS = INFRA_NS
SAME_NAMESPACE = (NS, "same-namespace")
HTTPS_GATEWAY = (NS, "same-namespace-with-https-listener")
POLICY_CONFLICTED = Condition("Accepted", "False", "Conflicted")
NO_VALID_CA = Condition("Accepted", "False", "NoValidCACertificate")
INVALID_CA_REF = Condition("ResolvedRefs", "False", "InvalidCACertificateRef")
SERVER_ERROR = Response(status_codes=(500, 502, 503))


def _to(path: str, sni: str, host: str = "abc.example.com") -> ExpectedResponse:
    return ExpectedResponse(namespace=NS, request=Request(host=host, path=path, sni=sni),
                            response=Response(status_code=200))


CONFLICT_RESOLUTION = Case(
    short_name="BackendTLSPolicyConflictResolution",
    description="Verifies that when multiple BackendTLSPolicies target the same Service, only "
    "one policy is accepted while conflicting policies are rejected, and traffic continues to "
    "route successfully.",
    features=("Gateway", "HTTPRoute", "BackendTLSPolicy"),
    manifests=("tests/backendtlspolicy-conflict-resolution.yaml",),
    source="backendtlspolicy-conflict-resolution.go",
    parallel=True,
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE, (NS, "backendtlspolicy-conflict-resolution")),
             resolved("HTTPRoute", (NS, "backendtlspolicy-conflict-resolution"), SAME_NAMESPACE),
             namespaces_ready=(NS,)),
        step(policy_has((NS, "conflicted-without-section-name-1"), SAME_NAMESPACE, POLICY_ACCEPTED),
             policy_has((NS, "conflicted-without-section-name-2"), SAME_NAMESPACE,
                        POLICY_CONFLICTED),
             gateway=SAME_NAMESPACE, port=80,
             requests=(_to("/backendtlspolicy-conflicted-without-section-name",
                           "other.example.com"),)),
        step(policy_has((NS, "conflicted-with-section-name-1"), SAME_NAMESPACE, POLICY_ACCEPTED),
             policy_has((NS, "conflicted-with-section-name-2"), SAME_NAMESPACE, POLICY_CONFLICTED),
             gateway=SAME_NAMESPACE, port=80,
             requests=(_to("/backendtlspolicy-conflicted-with-section-name",
                           "other.example.com"),)),
        step(policy_has((NS, "not-conflicted-with-section-name"), SAME_NAMESPACE, POLICY_ACCEPTED),
             policy_has((NS, "not-conflicted-without-section-name"), SAME_NAMESPACE,
                        POLICY_ACCEPTED),
             gateway=SAME_NAMESPACE, port=80,
             requests=(
                 _to("/backendtlspolicy-not-conflicted-with-section-name", "other.example.com"),
                 _to("/backendtlspolicy-not-conflicted-without-section-name", "abc.example.com"),
             )),
    ),
)

GRPC_ROUTE = Case(
    short_name="BackendTLSPolicyGRPCRoute",
    description="A BackendTLSPolicy attached to a Service consumed by a GRPCRoute should "
    "configure TLS between gateway and backend",
    features=("Gateway", "GRPCRoute", "BackendTLSPolicy"),
    manifests=("tests/backendtlspolicy-grpcroute.yaml",),
    source="backendtlspolicy-grpcroute.go",
    steps=(
        step(accepted("GRPCRoute", SAME_NAMESPACE, (NS, "backendtlspolicy-grpcroute")),
             namespaces_ready=(NS,)),
        step(policy_has((NS, "grpc-normative-test"), SAME_NAMESPACE, POLICY_ACCEPTED,
                        POLICY_RESOLVED),
             gateway=SAME_NAMESPACE, scheme="grpc",
             requests=(GRPCExpectedResponse(method="Echo", authority="abc.example.com",
                                            backend="grpc-infra-backend-v1", namespace=NS),)),
        step(policy_has((NS, "grpc-host-mismatch"), SAME_NAMESPACE, POLICY_ACCEPTED,
                        POLICY_RESOLVED),
             gateway=SAME_NAMESPACE, scheme="grpc",
             requests=(GRPCExpectedResponse(method="EchoTwo", authority="abc.example.com",
                                            outcome=FAILURE),)),
        step(accepted("GRPCRoute", SAME_NAMESPACE,
                      (NS, "backendtlspolicy-grpcroute-cert-mismatch")),
             policy_has((NS, "grpc-cert-mismatch"), SAME_NAMESPACE, POLICY_ACCEPTED,
                        POLICY_RESOLVED),
             gateway=SAME_NAMESPACE, scheme="grpc",
             requests=(GRPCExpectedResponse(method="Echo", authority="cert-mismatch.example.com",
                                            outcome=FAILURE),)),
    ),
)


def _invalid_ca_steps(policy: str) -> tuple:
    return (
        step(policy_has((NS, policy), SAME_NAMESPACE, NO_VALID_CA)),
        step(policy_has((NS, policy), SAME_NAMESPACE, INVALID_CA_REF)),
        step(gateway=SAME_NAMESPACE, port=80, requests=(ExpectedResponse(
            namespace=NS,
            request=Request(host="abc.example.com", path=f"/backendtlspolicy-{policy}"),
            response=SERVER_ERROR),)),
    )


INVALID_CA_CERTIFICATE_REF = Case(
    short_name="BackendTLSPolicyInvalidCACertificateRef",
    description="A BackendTLSPolicy that specifies a single invalid CACertificateRef should have "
    "the Accepted and ResolvedRefs status condition set False with appropriate reasons, and "
    "HTTP requests to a backend targeted by this policy should fail with a 5xx response.",
    features=("Gateway", "HTTPRoute", "BackendTLSPolicy"),
    manifests=("tests/backendtlspolicy-invalid-ca-certificate-ref.yaml",),
    source="backendtlspolicy-invalid-ca-certificate-ref.go",
    parallel=True,
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE,
                      (NS, "backendtlspolicy-invalid-ca-certificate-ref")),
             namespaces_ready=(NS,)),
        *_invalid_ca_steps("nonexistent-ca-certificate-ref"),
        *_invalid_ca_steps("malformed-ca-certificate-ref"),
    ),
)

INVALID_KIND = Case(
    short_name="BackendTLSPolicyInvalidKind",
    description="A BackendTLSPolicy that specifies a single CACertificateRef with an invalid kind "
    "should have the Accepted and ResolvedRefs status condition set False with appropriate "
    "reasons, and HTTP requests to a backend targeted by this policy should fail with a 5xx "
    "response.",
    features=("Gateway", "HTTPRoute", "BackendTLSPolicy"),
    manifests=("tests/backendtlspolicy-invalid-kind.yaml",),
    source="backendtlspolicy-invalid-kind.go",
    parallel=True,
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE, (NS, "backendtlspolicy-invalid-kind-test")),
             namespaces_ready=(NS,)),
        step(policy_has((NS, "invalid-kind"), SAME_NAMESPACE, NO_VALID_CA)),
        step(policy_has((NS, "invalid-kind"), SAME_NAMESPACE,
                        Condition("ResolvedRefs", "False", "InvalidKind"))),
        step(gateway=SAME_NAMESPACE, port=80, requests=(ExpectedResponse(
            namespace=NS,
            request=Request(host="abc.example.com", path="/backendtlspolicy-invalid-kind"),
            response=SERVER_ERROR),)),
    ),
)

OBSERVED_GENERATION_BUMP = Case(
    short_name="BackendTLSPolicyObservedGenerationBump",
    description="A BackendTLSPolicy in the gateway-conformance-infra namespace should update the "
    "observedGeneration in all of its Status.Conditions after an update to the spec",
    features=("Gateway", "HTTPRoute", "BackendTLSPolicy"),
    manifests=("tests/backendtlspolicy-observed-generation-bump.yaml",),
    source="backendtlspolicy-observed-generation-bump.go",
    parallel=True,
    steps=(
        step(GenerationObserved("BackendTLSPolicy", (NS, "observed-generation-bump"),
                                at_once=True),
             namespaces_ready=(NS,)),
        step(Patch("BackendTLSPolicy", (NS, "observed-generation-bump"),
                   (PatchOp("replace", "/spec/validation/hostname", "foo.example.com"),)),
             policy_has((NS, "observed-generation-bump"), SAME_NAMESPACE,
                        Condition("Accepted", "True")),
             GenerationObserved("BackendTLSPolicy", (NS, "observed-generation-bump"),
                                changed=True, at_once=True)),
    ),
)

SAN_VALIDATION = Case(
    short_name="BackendTLSPolicySANValidation",
    description="BackendTLSPolicySANValidation extend BackendTLSPolicy with SubjectAltNames "
    "validation",
    features=("Gateway", "HTTPRoute", "BackendTLSPolicy", "BackendTLSPolicySANValidation"),
    manifests=("tests/backendtlspolicy-san.yaml",),
    source="backendtlspolicy-san.go",
    parallel=True,
    steps=(
        step(accepted("HTTPRoute", SAME_NAMESPACE, (NS, "backendtlspolicy-san-test")),
             resolved("HTTPRoute", (NS, "backendtlspolicy-san-test"), SAME_NAMESPACE),
             namespaces_ready=(NS,)),
        *(step(policy_has((NS, policy), SAME_NAMESPACE, POLICY_ACCEPTED),
               gateway=SAME_NAMESPACE, port=80,
               requests=(ExpectedResponse(
                   namespace=NS,
                   request=Request(host="abc.example.com", path=f"/backendtlspolicy-{policy}",
                                   sni="abc.example.com"),
                   response=Response(status_codes=(200,)),
               ) if ok else ExpectedResponse(
                   namespace=NS,
                   request=Request(host="abc.example.com", path=f"/backendtlspolicy-{policy}",
                                   sni="abc.example.com"),
                   outcome=FAILURE,
               ),))
          for policy, ok in (("san-dns", True), ("san-dns-mismatch", False),
                             ("san-uri", True), ("san-uri-mismatch", False),
                             ("multiple-sans", True), ("multiple-mismatch-sans", False))),
    ),
)

TLS_ROUTE_TERMINATE = Case(
    short_name="BackendTLSPolicyTLSRouteTerminate",
    description="A BackendTLSPolicy attached to a Service consumed by a TLSRoute using Terminate "
    "mode should re-encrypt traffic to the backend",
    features=("Gateway", "TLSRoute", "TLSRouteModeTerminate", "BackendTLSPolicy"),
    manifests=("tests/backendtlspolicy-tlsroute-terminate.yaml",),
    source="backendtlspolicy-tlsroute-terminate.go",
    provisional=True,
    steps=(
        step(accepted("TLSRoute", (NS, "gateway-btls-tlsroute-terminate"),
                      (NS, "backendtlspolicy-tlsroute-terminate"), ready_listeners=False),
             policy_has((NS, "btls-tlsroute-terminate-test"),
                        (NS, "gateway-btls-tlsroute-terminate"), POLICY_ACCEPTED,
                        POLICY_RESOLVED),
             namespaces_ready=(NS,),
             gateway=(NS, "gateway-btls-tlsroute-terminate"), scheme="tls",
             # server_name: the TLSRoute's only hostname, which Go reads from its spec.
             requests=(TCPExpectedResponse(
                 backend="tcp-backend", namespace=NS, backend_is_tls=True,
                 hostname="abc.example.com", use_tls=True, server_name="tls.example.com",
                 ca_certificate=(NS, "tls-checks-ca-certificate")),)),
    ),
)

_RECONCILE = (NS, "reconcile-test")
_RECONCILE_CM = (NS, "tls-checks-ca-certificate-reconcile-test")
_SHARED_CA = ValueFrom("ConfigMap", (NS, "tls-checks-ca-certificate"), "/data/ca.crt")

BACKEND_TLS_POLICY = Case(
    short_name="BackendTLSPolicy",
    description="BackendTLSPolicy must be used to configure TLS connection between gateway and "
    "backend",
    features=("Gateway", "HTTPRoute", "BackendTLSPolicy"),
    manifests=("tests/backendtlspolicy.yaml",),
    source="backendtlspolicy.go",
    parallel=True,
    steps=(
        # Re-encrypt: HTTPS in at the Gateway, TLS out to the backend.
        step(accepted("HTTPRoute", HTTPS_GATEWAY, (NS, "backendtlspolicy-reencrypt")),
             resolved("HTTPRoute", (NS, "backendtlspolicy-reencrypt"), HTTPS_GATEWAY),
             policy_has((NS, "normative-test"), HTTPS_GATEWAY, POLICY_ACCEPTED, POLICY_RESOLVED),
             namespaces_ready=(NS,),
             gateway=HTTPS_GATEWAY, port=443, scheme="https",
             requests=(ExpectedResponse(
                 namespace=NS,
                 request=Request(host="https-listener.org", path="/backendtlspolicy",
                                 sni="https-listener.org"),
                 expected_request=ExpectedRequest(
                     request=Request(path="/backendtlspolicy", sni="abc.example.com")),
                 response=Response(status_codes=(200,)),
                 server_name="https-listener.org",
                 server_certificate=(NS, "tls-validity-checks-certificate"),
             ),)),
        step(accepted("HTTPRoute", SAME_NAMESPACE, (NS, "backendtlspolicy")),
             resolved("HTTPRoute", (NS, "backendtlspolicy"), SAME_NAMESPACE),
             namespaces_ready=(NS,)),
        step(policy_has((NS, "normative-test"), SAME_NAMESPACE, POLICY_ACCEPTED, POLICY_RESOLVED),
             gateway=SAME_NAMESPACE, port=80,
             requests=(ExpectedResponse(
                 namespace=NS,
                 request=Request(host="abc.example.com", path="/backendtlspolicy",
                                 sni="abc.example.com"),
                 response=Response(status_codes=(200,))),)),
        step(policy_has((NS, "host-mismatch"), SAME_NAMESPACE, POLICY_ACCEPTED, POLICY_RESOLVED),
             gateway=SAME_NAMESPACE, port=80,
             requests=(ExpectedResponse(
                 namespace=NS,
                 request=Request(host="abc.example.org", path="/backendtlspolicy-host-mismatch",
                                 sni="abc.example.com"),
                 outcome=FAILURE),)),
        step(policy_has((NS, "cert-mismatch"), SAME_NAMESPACE, POLICY_ACCEPTED, POLICY_RESOLVED),
             gateway=SAME_NAMESPACE, port=80,
             requests=(ExpectedResponse(
                 namespace=NS,
                 request=Request(host="abc.example.com", path="/backendtlspolicy-cert-mismatch",
                                 sni="abc.example.com"),
                 outcome=FAILURE),)),
        # A change of the CA ConfigMap's content is reconciled.
        step(policy_has(_RECONCILE, SAME_NAMESPACE, POLICY_ACCEPTED, POLICY_RESOLVED)),
        step(Patch("BackendTLSPolicy", _RECONCILE, (PatchOp(
                 "replace", "/spec/validation/caCertificateRefs",
                 [{"group": "", "kind": "ConfigMap", "name": _RECONCILE_CM[1]}]),)),
             policy_has(_RECONCILE, SAME_NAMESPACE, NO_VALID_CA, INVALID_CA_REF)),
        step(Create("v1", "ConfigMap", _RECONCILE_CM, {"data": {"ca.crt": _SHARED_CA}}),
             policy_has(_RECONCILE, SAME_NAMESPACE, POLICY_ACCEPTED, POLICY_RESOLVED)),
        step(Patch("ConfigMap", _RECONCILE_CM, (PatchOp("replace", "/data/ca.crt", ""),)),
             policy_has(_RECONCILE, SAME_NAMESPACE, NO_VALID_CA, INVALID_CA_REF)),
        step(Patch("ConfigMap", _RECONCILE_CM, (PatchOp("replace", "/data/ca.crt", _SHARED_CA),)),
             policy_has(_RECONCILE, SAME_NAMESPACE, POLICY_ACCEPTED, POLICY_RESOLVED)),
        # Put the policy back on the shared ConfigMap, as the manifest has it.
        step(Patch("BackendTLSPolicy", _RECONCILE, (PatchOp(
            "replace", "/spec/validation/caCertificateRefs",
            [{"group": "", "kind": "ConfigMap", "name": "tls-checks-ca-certificate"}]),))),
    ),
)

# In file-name order, as the Go files register them.
CASES: tuple[Case, ...] = (
    CONFLICT_RESOLUTION,
    GRPC_ROUTE,
    INVALID_CA_CERTIFICATE_REF,
    INVALID_KIND,
    OBSERVED_GENERATION_BUMP,
    SAN_VALIDATION,
    TLS_ROUTE_TERMINATE,
    BACKEND_TLS_POLICY,
)
