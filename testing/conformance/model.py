"""The shape of a Gateway API conformance test, as the suite's Go code states it.

The suite (``../shared/corpus/gateway-api/conformance/``) describes each test in Go: the
manifests it applies, the objects it changes, the status conditions it waits for, and the
requests it sends with the responses and backends it expects (``utils/http.ExpectedResponse``
and friends; ``utils/grpc``, ``utils/tcp``, ``utils/udp``, ``utils/tls`` for the other
protocols). The cases in ``cases/`` restate every test as data of these types, field for
field, so a runner can apply the manifests to a local mesh, make the changes, check the
conditions, send the requests and compare. Names follow the Go fields (snake_case).

A case is a sequence of steps; each step is taken in its field order (see ``Step``). Status
checks wait until they hold (Go polls each one), so their order inside a step does not change
the outcome; what the Go test does between them (a patch, a deletion, requests) starts a new
step. Values the suite only creates at set-up (certificates, CA bundles) are named by the
Secret or ConfigMap that holds them, never copied.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

INFRA_NS = "gateway-conformance-infra"
APP_BACKEND_NS = "gateway-conformance-app-backend"
WEB_BACKEND_NS = "gateway-conformance-web-backend"
MESH_NS = "gateway-conformance-mesh"
MESH_CONSUMER_NS = "gateway-conformance-mesh-consumer"
GATEWAY_GROUP = "gateway.networking.k8s.io"

Ref = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
Json = object  # JSON-like data (dicts, lists, strings, numbers), or a ValueFrom


# --- HTTP (utils/http, utils/roundtripper, utils/tls, utils/echo) -------------------------


@attrs.frozen
class Request:
    """What the client sends (Go's ``http.Request``).

    ``sni`` and ``client_cert`` are only compared at the backend: Go's request helpers never
    send them, and when ``ExpectedResponse.expected_request`` is None the request doubles as
    the expected request, so ``sni`` is the server name a TLS backend must have seen and
    ``client_cert`` names the Secret (``namespace/name``) whose ``tls.crt`` must be among the
    certificates the backend was shown (the Gateway's backend client certificate)."""

    host: str = ""
    method: str = ""  # "" means GET
    path: str = ""
    headers: Mapping[str, str] = attrs.field(factory=dict)
    unfollow_redirect: bool = False
    # "" the helper's default (HTTP/1.1, or HTTPS); "H2C_PRIOR_KNOWLEDGE"; "H2"; mesh
    # clients: "grpc" (the echo client's gRPC call)
    protocol: str = ""
    body: str = ""
    sni: str = ""
    client_cert: str = ""


@attrs.frozen
class ExpectedRequest:
    """What the backend must have received (Go's ``http.ExpectedRequest``): the request
    fields that are set, headers present with these values, and headers absent. When an
    ExpectedRequest is given its path is compared as is, even when empty."""

    request: Request = Request()
    absent_headers: tuple[str, ...] = ()
    http_port: str = ""


@attrs.frozen
class RedirectRequest:
    """Where a redirect must point (Go's ``roundtripper.RedirectRequest``)."""

    scheme: str = ""
    host: str = ""
    port: str = ""
    path: str = ""


@attrs.frozen
class Response:
    status_code: int = 200
    status_codes: tuple[int, ...] = ()  # any of these (when set, instead of status_code)
    headers: Mapping[str, str] = attrs.field(factory=dict)
    absent_headers: tuple[str, ...] = ()
    protocol: str = ""
    # header → the values any one of which the response may carry (Go's ValidHeaderValues)
    valid_header_values: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    ignore_whitespace: bool = False  # spaces are dropped before header values are compared


@attrs.frozen
class MirroredBackend:
    """A backend that must see a copy (Go's ``http.MirroredBackend``). Without ``percent``
    the Go test reads the Service's pod logs for one mirrored request; with it, after the
    first answer, it sends 500 copies (10 at a time, a fresh request id each round) and the
    count of mirrored log lines must lie within three standard deviations of
    500·percent/100, in up to 5 rounds."""

    backend: Ref  # (namespace, service name) that must see a copy
    percent: int | None = None


# How an exchange must end (the Go helper that sends it):
RESPONSE = "response"  # MakeRequestAndExpectEventuallyConsistentResponse and the TLS variant
FAILURE = "failure"  # MakeRequestAndExpectFailure: answered, never 200; timeouts are retried
REFUSED = "refused"  # MakeTLSRequestAndExpectEventuallyConsistentFailureResponse: round trip errs


@attrs.frozen
class ExpectedResponse:
    """One request and what must come of it (Go's ``http.ExpectedResponse``).

    Over HTTPS (``Step.scheme == "https"``) the client trusts the certificate in the
    ``tls.crt`` of Secret ``server_certificate``, sends ``server_name`` as SNI, and presents
    the certificate and key of Secret ``client_certificate`` when one is named (Go's
    ``MakeTLSRequest...`` arguments)."""

    request: Request = Request()
    expected_request: ExpectedRequest | None = None
    redirect_request: RedirectRequest | None = None
    backend_set_response_headers: Mapping[str, str] = attrs.field(factory=dict)
    response: Response = Response()
    backend: str = ""  # the Service whose pod must answer ("" for none, e.g. a redirect)
    namespace: str = ""
    mirrored_to: tuple[MirroredBackend, ...] = ()
    test_case_name: str = ""
    server_name: str = ""  # HTTPS: the SNI and the certificate name to expect
    outcome: str = RESPONSE
    server_certificate: Ref | None = None
    client_certificate: Ref | None = None
    # A query parameter set to a fresh UUID on every attempt, in the request path and the
    # expected path (Go: AddRequestIDQueryParam's "gateway-api-conformance-request-id", or
    # the retry tests' "uuid" so the echo backend counts each attempt afresh).
    unique_query_param: str = ""
    # Mesh: (namespace, label selector) of a pod whose IP (in brackets when IPv6) stands for
    # "{pod}" in request.host; Go looks it up as it does the client pod.
    host_pod: Ref | None = None


@attrs.frozen
class BackendNamedByHeader:
    """The request is sent ``times`` more times, one after another, after the step's other
    requests pass; each time the backend must have received exactly one ``header`` header
    and the answering pod's name must start with its value (HTTPRoute backend filters must
    not bleed into a weighted neighbour)."""

    request: Request
    header: str
    times: int


@attrs.frozen
class WebSocketEcho:
    """A WebSocket is dialled to ``ws://<gateway address><path>`` with ``origin`` and each
    message is sent and must come back unchanged (a text frame, then a binary one), retried
    until it succeeds consistently."""

    path: str
    origin: str
    text: str
    binary: bytes


# --- gRPC (utils/grpc) ---------------------------------------------------------------------


@attrs.frozen
class GRPCExpectedResponse:
    """One RPC to the echo server and what must come of it (Go's ``grpc.ExpectedResponse``).

    ``method`` is which of ``EchoRequest`` / ``EchoTwoRequest`` / ``EchoThreeRequest`` is set
    (an empty ``EchoRequest`` goes to ``/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/
    <method>``). With code OK the answer must name that method, come from a pod whose name
    starts with ``backend`` and, when ``namespace`` is set, from that namespace.
    ``response_headers`` are stated by the Go test but Go's comparison never reads them."""

    method: str  # Echo | EchoTwo | EchoThree
    authority: str = ""
    metadata: Mapping[str, str] = attrs.field(factory=dict)
    code: str = "OK"  # a google.golang.org/grpc/codes name
    response_headers: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    backend: str = ""
    namespace: str = ""
    test_case_name: str = ""
    # RESPONSE, or FAILURE (MakeRequestAndExpectEventuallyConsistentFailure: any code but OK)
    outcome: str = RESPONSE


# --- TCP, TLS and UDP streams (utils/tcp, utils/tls, utils/udp) ----------------------------


@attrs.frozen
class TCPExpectedResponse:
    """A connection to the echo TCP server (``MakeTCPRequestAndExpectEventuallyValidResponse``):
    it greets, answers PING with PONG, IS_TLS with ``backend_is_tls``, and TEST with the pod,
    namespace and what its TLS side saw. With ``use_tls`` the client speaks TLS to the
    Gateway with ``server_name`` as SNI, trusting the ``ca.crt`` of ConfigMap
    ``ca_certificate``. ``hostname`` is the SNI the backend must have seen ("" = not
    checked) and ``tls_protocol`` the ALPN it must have negotiated ("" = not checked)."""

    backend: str
    namespace: str
    backend_is_tls: bool = False
    hostname: str = ""
    tls_protocol: str = ""
    use_tls: bool = False
    server_name: str = ""
    ca_certificate: Ref | None = None


@attrs.frozen
class TCPEcho:
    """``tcp.ExpectEchoResponse``: retried until a plain connection gets the echo server's
    greeting and a TEST answer naming a pod. ``connect_only`` is
    ``tcp.ExpectAddressBeAvailable`` (the connection opens, nothing is read). With ``times``
    the Go test's own loop of ``tcp.EchoSendOnce``: that many connections one after another,
    each of which must succeed at once and be answered by a pod whose name starts with
    ``pod_prefix``."""

    connect_only: bool = False
    times: int = 0
    pod_prefix: str = ""


@attrs.frozen
class UDPExpectedResponse:
    """``udp.ExpectEchoResponseFromBackend`` (``ExpectEchoResponse`` when both are ""): a
    datagram to the Gateway must be echoed, from ``service`` in ``namespace`` when set,
    retried until it is.

    With ``probes`` the Go test's own check: rounds of ``probes`` datagrams, one after
    another, each answered with JSON naming a pod, repeated every second until a round has no
    failure; an answer from a pod of another Deployment than ``backend`` (pod name less its
    last two dash-separated parts) fails the test at once."""

    service: str = ""
    namespace: str = ""
    probes: int = 0
    backend: str = ""


@attrs.frozen
class DNSQuery:
    """A DNS question over UDP to the Gateway, retried every second until any answer comes
    (``UDPRoute``'s CoreDNS backend)."""

    name: str
    type: str = "A"


@attrs.frozen
class TLSConnectionRejected:
    """``tls.MakeTLSConnectionAndExpectEventuallyConnectionRejection``: a TLS 1.2+ dial with
    ``server_name`` as SNI must end in EOF or a reset during the handshake."""

    server_name: str


Exchange = (ExpectedResponse | BackendNamedByHeader | WebSocketEcho | GRPCExpectedResponse
            | TCPExpectedResponse | TCPEcho | UDPExpectedResponse | DNSQuery
            | TLSConnectionRejected)


# --- Status ------------------------------------------------------------------------------


@attrs.frozen
class Condition:
    """A status condition that must be reached (``kubernetes.*MustHave*Condition``)."""

    type: str
    status: str  # "True" | "False" | "Unknown" | "" (any)
    reason: str = ""  # "" = any reason


# listener name → (attached routes or None, conditions, supported kinds or ())
Listeners = Mapping[str, tuple[int | None, tuple[Condition, ...], tuple[str, ...]]]


@attrs.frozen
class GatewayClassMustBe:
    """``GWCMustHaveAcceptedConditionAny`` (an Accepted condition of any status) and
    ``GatewayClassMustHaveLatestConditions``."""

    name: str
    accepted_any: bool = False
    latest: bool = False


@attrs.frozen
class GatewayMustBe:
    """What a Gateway's status must show. Each field is one Go helper:

    - ``latest``: ``GatewayMustHaveLatestConditions`` (every condition's observedGeneration is
      the Gateway's generation);
    - ``address``: ``WaitForGatewayAddress`` (a typed status address);
    - ``conditions``: ``GatewayMustHaveCondition``, each (Go fails it at once, rather than
      waiting, while a condition's observedGeneration is stale);
    - ``listeners``: ``GatewayStatusMustHaveListeners`` (exactly these listeners; supported
      kinds () means none, else at least these; attached routes compared; conditions each);
    - ``listener_conditions``: ``GatewayListenersMustHaveConditions`` on the named
      ``listener_names`` (all of which must appear), or on every listener when none is named;
    - ``zero_routes``: ``GatewayMustHaveZeroRoutes`` (no listener status, or one with 0 routes);
    - ``attached_listener_sets``: ``GatewayMustHaveAttachedListeners``;
    - ``status_addresses``: exactly these status addresses (spec values as written in the
      manifest, ``PLACEHOLDER_USABLE_ADDRS`` standing for the address the suite was given),
      with the spec address's type.
    """

    gateway: Ref
    conditions: tuple[Condition, ...] = ()
    listeners: Listeners = attrs.field(factory=dict)
    latest: bool = False
    address: bool = False
    listener_conditions: tuple[Condition, ...] = ()
    listener_names: tuple[str, ...] = ()
    zero_routes: bool = False
    attached_listener_sets: int | None = None
    status_addresses: tuple[str, ...] | None = None


@attrs.frozen
class ListenerSetMustBe:
    """A ListenerSet's status: ``ListenerSetMustHaveCondition`` (each of ``conditions``),
    ``ListenerSetStatusMustHaveListeners`` (exactly ``listeners``, as for a Gateway) and
    ``ListenerSetListenersMustHaveConditions`` (``listener_conditions`` on ``listener_names``,
    or on every listener)."""

    listener_set: Ref
    conditions: tuple[Condition, ...] = ()
    listeners: Listeners = attrs.field(factory=dict)
    listener_conditions: tuple[Condition, ...] = ()
    listener_names: tuple[str, ...] = ()


CONDITION = "condition"  # <Kind>RouteMustHaveCondition
PARENT = "parent"  # RouteMustHaveParents (and the accepted-routes helpers built on it)


@attrs.frozen
class RouteMustBe:
    """A route's conditions for one parent (``HTTPRouteMustHaveCondition``,
    ``RouteMustHaveParents``, ``...MustHaveResolvedRefsConditionsTrue``).

    With ``match == CONDITION`` some parent status whose ref names ``parent`` (namespace
    unset or equal) must carry each condition. With ``match == PARENT`` some parent status
    written by the suite's controller, with this group, kind and name, and a namespace equal
    to the parent's (left unset only if not ``namespace_required``), must carry all of them;
    the section name is not compared. Either way every parent's conditions must carry the
    route's generation."""

    kind: str  # HTTPRoute, GRPCRoute, TLSRoute, TCPRoute, UDPRoute
    route: Ref
    parent: Ref  # the Gateway or ListenerSet
    conditions: tuple[Condition, ...] = ()
    section_name: str = ""
    parent_kind: str = "Gateway"
    match: str = CONDITION
    namespace_required: bool = False
    parent_group: str = GATEWAY_GROUP


@attrs.frozen
class RouteNotAccepted:
    """``<Kind>RouteMustHaveNoAcceptedParents``: after at least two looks, the route has no
    parent status, or exactly one whose Accepted condition is False."""

    kind: str
    route: Ref


@attrs.frozen
class PolicyMustBe:
    """``BackendTLSPolicyMustHaveCondition``: an ancestor status naming ``ancestor`` (the
    Gateway; namespace unset or equal) carries the condition, all ancestors' conditions
    being of the policy's generation."""

    policy: Ref
    ancestor: Ref
    condition: Condition
    kind: str = "BackendTLSPolicy"


@attrs.frozen
class GenerationObserved:
    """Every status condition of the object (for a route, in every parent; for a policy, in
    every ancestor) carries its current generation as observedGeneration; with
    ``changed`` the generation also differs from the one read before this case's last
    ``Patch`` of the object. ``at_once`` checks once instead of waiting (Go's
    ``BackendTLSPolicyMustHaveLatestConditions``)."""

    kind: str
    object: Ref
    changed: bool = False
    at_once: bool = False


@attrs.frozen
class InfrastructureLabelled:
    """``GatewayInfrastructure``: some ServiceAccount, Pod or Service in the Gateway's
    namespace carries ``gateway.networking.k8s.io/gateway-name=<gateway>``; the first of
    each kind found carries every label and annotation of the Gateway's
    ``spec.infrastructure``."""

    gateway: Ref


# --- Changes ----------------------------------------------------------------------------


@attrs.frozen
class ValueFrom:
    """A value read from another live object at a JSON Pointer."""

    kind: str
    object: Ref
    pointer: str


@attrs.frozen
class PatchOp:
    """One RFC 6902 operation on the object as read (``add`` with ``/-`` appends)."""

    op: str  # add | remove | replace
    path: str
    value: Json = None


@attrs.frozen
class Patch:
    """Go reads the object, changes a copy and sends the difference as a merge patch; the
    change is stated here as JSON Patch operations on what was read."""

    kind: str
    object: Ref
    ops: tuple[PatchOp, ...]


@attrs.frozen
class Create:
    """An object the Go test builds in code (``MustApplyObjectsWithCleanup``): ``fields``
    is its body besides apiVersion, kind and metadata (values may be ``ValueFrom``)."""

    api_version: str
    kind: str
    object: Ref
    fields: Mapping[str, Json] = attrs.field(factory=dict)


@attrs.frozen
class EndpointSlicesFromPods:
    """``HTTPRouteServiceTypes``: for each address family (suffix ``ip4``, ``ip6``) and each
    prefix, EndpointSlice ``<prefix>-<suffix>`` gets one endpoint per address of that family
    of the pods the Deployment ``deployment`` selects (ready and serving, not terminating,
    with the pod's node and a Pod targetRef); a slice with no such address is left alone."""

    deployment: Ref
    slice_prefixes: tuple[str, ...]


# --- Steps and cases ----------------------------------------------------------------------


@attrs.frozen
class Step:
    """Something the test does in order, taken field by field: sleep ``pause`` seconds,
    apply manifests, create, patch and delete objects, wait for namespaces, then the status
    checks (gateway classes, gateways, listener sets, routes, policies, generations,
    infrastructure), then the exchanges in ``requests``. Requests keep Go's order, but Go
    sends most of them in parallel subtests: only a ``BackendNamedByHeader`` and the
    ``weights`` check wait for the others to pass.

    ``gateway`` is whose address the requests go to: the port of listener ``listener`` (Go's
    first ``NewGatewayRef`` listener name; "" = the Gateway's first listener) unless
    ``port`` is set (when Go drops the port it is 80 for http, 443 for https). The scheme
    is ``scheme``; mesh tests send from ``client`` instead: the first pod in that namespace
    matching that label selector, running the echo client.

    With ``weights``, once the requests pass, the last request is sent 500 times (10 at a
    time, HTTP and gRPC ones with random entropy; one batch through the mesh client) and the
    share answered by each backend (the pod name less its last two dash-separated parts)
    must be within 0.05 of these, in one of up to 10 tries; a share of 0 must see no traffic.

    The mesh client (Go's ``utils/echo``) defaults the host to ``echo`` and compares only
    the status code, the request headers present and absent, the response headers present
    and absent, and the answering pod's name: not paths, namespaces or redirect targets.
    """

    apply: tuple[str, ...] = ()  # extra manifest files (relative to conformance/)
    delete: tuple[Ref, ...] = ()  # objects of kind delete_kind to delete (not waited on)
    gateways: tuple[GatewayMustBe, ...] = ()
    routes: tuple[RouteMustBe | RouteNotAccepted, ...] = ()
    gateway: Ref | None = None
    port: int | None = None
    scheme: str = "http"  # http | https | grpc | tcp | tls | udp | ws
    client: Ref | None = None  # mesh tests: (namespace, label selector) of the client pod
    requests: tuple[Exchange, ...] = ()
    weights: Mapping[str, float] = attrs.field(factory=dict)  # backend → expected share
    create: tuple[Create, ...] = ()
    patch: tuple[Patch | EndpointSlicesFromPods, ...] = ()
    delete_kind: str = ""
    namespaces_ready: tuple[str, ...] = ()  # NamespacesMustBeReady
    gateway_classes: tuple[GatewayClassMustBe, ...] = ()
    listener_sets: tuple[ListenerSetMustBe, ...] = ()
    policies: tuple[PolicyMustBe, ...] = ()
    generations: tuple[GenerationObserved, ...] = ()
    infrastructure: tuple[InfrastructureLabelled, ...] = ()
    listener: str = ""
    pause: float = 0.0  # Go sleeps first, so that objects made next are visibly newer


@attrs.frozen
class Case:
    """One conformance test (Go's ``suite.ConformanceTest``)."""

    short_name: str
    description: str
    features: tuple[str, ...]
    manifests: tuple[str, ...]
    steps: tuple[Step, ...]
    provisional: bool = False
    # Why this case cannot run here, when it cannot (stated in the report), else "".
    not_runnable: str = ""
    source: str = ""  # the Go file, relative to conformance/tests/
    parallel: bool = False  # Go's Parallel: may run beside other parallel tests
    # The Go test returns at once, passing without a check, when the suite supports any of
    # ``returns_if_supported`` or lacks any of ``returns_unless_supported``.
    returns_if_supported: tuple[str, ...] = ()
    returns_unless_supported: tuple[str, ...] = ()
