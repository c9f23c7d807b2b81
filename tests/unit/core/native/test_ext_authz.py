"""The native ext_authz filter on what the translator emits for a CUSTOM
AuthorizationPolicy: only the requests a CUSTOM rule selects are checked, with what, and
what the authorization service's answer does (allow, deny, fail), without sockets."""

from __future__ import annotations

import random
from types import SimpleNamespace

from pilotfish.core.meshconfig import ExtAuthzProvider
from pilotfish.core.native import ext_authz, http_filters, rbac
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
