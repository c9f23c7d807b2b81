"""The native ext_authz filter on what the translator emits for a CUSTOM
AuthorizationPolicy: only the requests a CUSTOM rule selects are checked, with what, and
what the authorization service's answer does (allow, deny, fail), without sockets."""

from __future__ import annotations

import random
from types import SimpleNamespace

from pilotfish.core.meshconfig import ExtAuthzProvider
from pilotfish.core.native import ext_authz, http1, http_filters, rbac
from pilotfish.core.security_policies import AuthzPolicy
from pilotfish.translators import ext_authz as translated

PROVIDER = ExtAuthzProvider(
    "authz", grpc=False, service="authz.shop.svc.cluster.local", port=8000, timeout=0.5,
    path_prefix="/check", include_request_headers=("x-ext-authz",),
    include_additional_headers={"x-from": "mesh"}, headers_to_upstream_on_allow=("x-user",),
    headers_to_downstream_on_deny=("x-reason",), headers_to_downstream_on_allow=("x-seen",))
ADMIN = AuthzPolicy("ext", "shop", "CUSTOM", ({"to": [{"operation": {"paths": ["/admin*"]}}]},),
                    provider="authz")


def compiled(provider: ExtAuthzProvider = PROVIDER) -> tuple[http_filters.HttpFilter, ...]:
    push = SimpleNamespace(mesh=SimpleNamespace(provider=lambda name: provider))
    emitted = translated.http_filters(push, [ADMIN])  # type: ignore[arg-type]
    return http_filters.compile_filters(emitted, "hcm")


def request(path: str, **headers: str) -> http_filters.Request:
    return http_filters.Request("POST", path, [("host", "shop.example.com"),
                                               ("authorization", "Bearer t"),
                                               ("cookie", "secret"), *headers.items()],
                                rbac.Facts())


def test_only_requests_a_custom_rule_selects_are_checked_with_the_allowed_headers():
    filters = compiled()
    asked = request("/admin/users?x=1", **{"x-ext-authz": "deny"})
    outcome = http_filters.run(filters, asked, random.Random(1))
    assert outcome.check is not None and outcome.resume == 2
    check = outcome.check
    assert (check.cluster, check.method, check.target, check.timeout) == (
        "outbound|8000||authz.shop.svc.cluster.local", "POST", "/check/admin/users?x=1", 0.5)
    assert dict(check.headers) == {"host": "shop.example.com", "authorization": "Bearer t",
                                   "x-ext-authz": "deny", "x-from": "mesh",
                                   "content-length": "0"}  # no cookie: not allowed
    assert asked.metadata["envoy.filters.http.rbac"][
        "istio_ext_authz_shadow_effective_policy_id"].startswith("istio-ext-authz-ns[shop]")
    public = request("/public")
    assert http_filters.run(filters, public, random.Random(1)).check is None
    assert "istio_ext_authz_shadow_effective_policy_id" not in public.metadata[
        "envoy.filters.http.rbac"]


def test_an_answer_allows_with_its_headers_or_denies_with_its_own():
    checker = next(f for f in compiled() if isinstance(f, ext_authz.ExtAuthz))
    response: list[tuple[str, str]] = []
    headers = checker.allowed([("x-user", "alice"), ("x-seen", "1"), ("x-other", "no")],
                              [("host", "h"), ("x-user", "forged")], response)
    assert headers == [("host", "h"), ("x-user", "alice")] and response == [("x-seen", "1")]
    denial = checker.denied(401, [("x-reason", "nope"), ("www-authenticate", "Basic"),
                                  ("x-other", "no"), ("content-length", "4")], b"nope")
    assert denial == ext_authz.Denial(401, b"nope", (("x-reason", "nope"),
                                                     ("www-authenticate", "Basic")))
    assert checker.failed() == ext_authz.Denial(403)


def test_without_named_client_headers_a_denial_passes_every_header_but_host():
    provider = ExtAuthzProvider("authz", False, "authz.shop.svc.cluster.local", 8000,
                                fail_open=True, status_on_error=503)
    checker = next(f for f in compiled(provider) if isinstance(f, ext_authz.ExtAuthz))
    denial = checker.denied(403, [("host", "authz"), ("x-a", "1")], b"")
    assert denial.headers == (("x-a", "1"),)
    assert checker.failed() is None  # failOpen: the request goes on


GRPC = ExtAuthzProvider("authz", grpc=True, service="authz.shop.svc.cluster.local", port=9000,
                        timeout=0.5)


def grpc_checker(provider: ExtAuthzProvider = GRPC) -> ext_authz.ExtAuthz:
    return next(f for f in compiled(provider) if isinstance(f, ext_authz.ExtAuthz))


def grpc_answer(response: object, status: str = "0", http_status: int = 200
                ) -> http1.Message:
    from pilotfish.core.native.grpc_client import frame

    return http1.Message([("content-type", "application/grpc")],
                         frame(response), status=http_status,  # type: ignore[arg-type]
                         trailers=[("grpc-status", status)])


def test_a_grpc_check_carries_the_request_and_both_peers():
    from envoy.service.auth.v3 import external_auth_pb2

    from pilotfish.core.native.grpc_client import Reframer

    peer = rbac.Facts(source="10.0.0.7", source_port=4242, destination=("10.0.0.9", 8080),
                      principals=("spiffe://cluster.local/ns/shop/sa/web",),
                      authenticated=True, identity="spiffe://cluster.local/ns/shop/sa/gw")
    asked = http_filters.Request("POST", "/admin/users?x=1", [
        ("host", "shop.example.com"), ("x-request-id", "r-1"), ("accept", "a"),
        ("accept", "b")], peer)
    check = http_filters.run(compiled(GRPC), asked, random.Random(1)).check
    assert check is not None
    assert (check.cluster, check.method, check.target, check.timeout) == (
        "outbound|9000||authz.shop.svc.cluster.local", "POST",
        "/envoy.service.auth.v3.Authorization/Check", 0.5)
    assert dict(check.headers) == {"host": "authz.shop.svc.cluster.local",
                                   "content-type": "application/grpc", "te": "trailers",
                                   "grpc-timeout": "500m"}
    (message,) = Reframer().feed(check.body)
    attributes = external_auth_pb2.CheckRequest.FromString(message).attributes
    http = attributes.request.http
    assert (http.method, http.path, http.host, http.id) == (
        "POST", "/admin/users?x=1", "shop.example.com", "r-1")
    assert dict(http.headers) == {":authority": "shop.example.com", ":method": "POST",
                                  ":path": "/admin/users?x=1", "x-request-id": "r-1",
                                  "accept": "a,b"}
    assert attributes.source.address.socket_address.address == "10.0.0.7"
    assert attributes.source.address.socket_address.port_value == 4242
    assert attributes.source.principal == "spiffe://cluster.local/ns/shop/sa/web"
    assert attributes.destination.address.socket_address.port_value == 8080
    assert attributes.destination.principal == "spiffe://cluster.local/ns/shop/sa/gw"


def test_a_grpc_answer_edits_headers_as_envoy_applies_header_options():
    from envoy.config.core.v3 import base_pb2
    from envoy.service.auth.v3 import external_auth_pb2
    from google.protobuf import wrappers_pb2

    option, value = base_pb2.HeaderValueOption, base_pb2.HeaderValue
    ok = external_auth_pb2.OkHttpResponse(headers_to_remove=["x-drop"], headers=[
        option(header=value(key="x-user", value="alice"),
               append_action=option.OVERWRITE_IF_EXISTS_OR_ADD),
        option(header=value(key="x-tag", value="2")),  # APPEND_IF_EXISTS_OR_ADD
        option(header=value(key="x-once", value="no"), append_action=option.ADD_IF_ABSENT),
        option(header=value(key="x-missing", value="no"),
               append_action=option.OVERWRITE_IF_EXISTS),
        option(header=value(key="x-old", value="new"), append=wrappers_pb2.BoolValue(
            value=False)),  # the deprecated field wins: replace
    ], response_headers_to_add=[option(header=value(key="x-checked", value="yes"))])
    response: list[tuple[str, str]] = []
    verdict = grpc_checker().judge(
        grpc_answer(external_auth_pb2.CheckResponse(ok_response=ok)),
        [("host", "h"), ("x-user", "forged"), ("x-tag", "1"), ("x-once", "yes"),
         ("x-drop", "1"), ("x-old", "old")], response)
    assert verdict.allowed and verdict.counter == "ext_authz.ok"
    assert verdict.headers == [("host", "h"), ("x-tag", "1"), ("x-once", "yes"),
                               ("x-user", "alice"), ("x-tag", "2"), ("x-old", "new")]
    assert response == [("x-checked", "yes")]


def test_a_grpc_denial_and_the_ways_a_check_fails():
    from envoy.service.auth.v3 import external_auth_pb2
    from google.rpc import status_pb2

    denied = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=7))
    denied.denied_response.body = "go away"
    verdict = grpc_checker().judge(grpc_answer(denied), [], [])
    assert verdict.counter == "ext_authz.denied"
    assert verdict.denial == ext_authz.Denial(403, b"go away")  # no status given: 403
    failures = [None, grpc_answer(external_auth_pb2.CheckResponse(), status="14"),
                grpc_answer(external_auth_pb2.CheckResponse(), http_status=503),
                http1.Message([], b"\x00\x00\x00\x00\x05junk!", status=200,
                              trailers=[("grpc-status", "0")]),
                http1.Message([], b"", status=200)]  # no message, no status
    for answer in failures:
        verdict = grpc_checker().judge(answer, [], [])
        assert (verdict.counter, verdict.denial) == ("ext_authz.error", ext_authz.Denial(403))
    open_provider = ExtAuthzProvider("authz", True, "authz.shop.svc.cluster.local", 9000,
                                     fail_open=True)
    verdict = grpc_checker(open_provider).judge(None, [("host", "h")], [])
    assert verdict.counter == "ext_authz.failure_mode_allowed" and verdict.denial is None


def test_a_grpc_service_other_than_a_cluster_is_refused_by_name():
    import pytest
    from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2

    from pilotfish.core.native import subset

    message = ext_authz_pb2.ExtAuthz()
    message.grpc_service.google_grpc.target_uri = "authz:9000"
    with pytest.raises(subset.Unsupported, match="only envoy_grpc"):
        ext_authz.ext_authz(message, "http_filters[0].typed_config")
