"""CompareRoundTrip and the request helpers' Go details, without sockets."""

from __future__ import annotations

from pilotfish.testing.conformance import compare, exchanges
from pilotfish.testing.conformance.model import (
    ExpectedRequest,
    ExpectedResponse,
    RedirectRequest,
    Request,
    Response,
)
from pilotfish.testing.conformance.roundtrip import (
    CapturedRequest,
    CapturedResponse,
    _match,
)
from pilotfish.testing.conformance.roundtrip import (
    RedirectRequest as GotRedirect,
)

NS = "gateway-conformance-infra"


def echoed(path: str = "/", pod: str = "infra-backend-v1-abc-xyz", namespace: str = NS,
           **fields: object) -> CapturedRequest:
    return CapturedRequest(path=path, method="GET", namespace=namespace, pod=pod,
                           **fields)  # type: ignore[arg-type]


def answer(status: int = 200, **headers: list[str]) -> CapturedResponse:
    return CapturedResponse(status, "HTTP/1.1", headers)


def test_a_request_that_reached_its_backend():
    expected = ExpectedResponse(request=Request(path="/"), backend="infra-backend-v1",
                                namespace=NS)
    assert compare.compare(expected, "/", "http", echoed(), answer()) is None
    assert "pod name" in str(compare.compare(
        expected, "/", "http", echoed(pod="infra-backend-v2-a-b"), answer()))
    assert "namespace" in str(compare.compare(
        expected, "/", "http", echoed(namespace="other"), answer()))


def test_status_codes_default_to_200_and_timeouts_pass_when_any_is_expected():
    assert compare.status_codes(ExpectedResponse()) == (200,)
    assert compare.status_codes(ExpectedResponse(response=Response(
        status_code=404, status_codes=(500,)))) == (500, 404)
    timeout = ExpectedResponse(response=Response(status_codes=(504,)))
    assert compare.compare(timeout, "/", "http", echoed(), answer(408)) is None
    assert "got 404" in str(compare.compare(ExpectedResponse(), "/", "http", echoed(),
                                            answer(404)))


def test_request_headers_are_compared_case_insensitively_and_joined():
    expected = ExpectedResponse(
        request=Request(path="/"), namespace=NS,
        expected_request=ExpectedRequest(request=Request(path="/", headers={"X-Two": "a,b"}),
                                         absent_headers=("X-Gone",)))
    assert compare.compare(expected, "/", "http", echoed(headers={"X-Two": ["a", "b"]}),
                           answer()) is None
    assert "to not be set" in str(compare.compare(
        expected, "/", "http", echoed(headers={"X-Two": ["a", "b"], "X-Gone": ["1"]}),
        answer()))


def test_response_headers_may_ignore_whitespace():
    expected = ExpectedResponse(request=Request(path="/"), namespace=NS, response=Response(
        headers={"Access-Control-Allow-Methods": "GET, POST"}, ignore_whitespace=True))
    got = answer(200, **{"access-control-allow-methods": ["GET,POST"]})
    assert compare.compare(expected, "/", "http", echoed(), got) is None


def test_a_redirect_defaults_its_scheme_and_path_to_the_request():
    expected = ExpectedResponse(request=Request(path="/scheme", unfollow_redirect=True),
                                redirect_request=RedirectRequest(scheme="https"),
                                response=Response(status_code=302))
    got = CapturedResponse(302, "HTTP/1.1", {}, redirect=GotRedirect("https", "h", "", "/scheme"))
    assert compare.compare(expected, "/scheme", "http", CapturedRequest(), got) is None
    wrong_port = CapturedResponse(302, "HTTP/1.1", {},
                                  redirect=GotRedirect("https", "h", "8443", "/scheme"))
    assert "443 or not set" in str(compare.compare(expected, "/scheme", "http",
                                                   CapturedRequest(), wrong_port))


def test_a_request_id_goes_into_both_paths_with_the_query_sorted():
    expected = ExpectedResponse(request=Request(path="/mirror?z=1&a=2"),
                                expected_request=ExpectedRequest(request=Request(path="")))
    out = compare.with_request_id(expected, "gateway-api-conformance-request-id", "u1")
    assert out.request.path == "/mirror?a=2&gateway-api-conformance-request-id=u1&z=1"
    assert out.expected_request is not None
    assert out.expected_request.request.path == out.request.path


def test_go_hostname_rules_take_a_wildcard_over_one_label():
    assert _match("*.org", "example.org")
    assert not _match("*.org", "a.example.org")
    assert _match("abc.example.com", "ABC.example.com.")
    assert not _match("*", "example.com")


def test_the_gateway_port_is_left_out_when_the_scheme_implies_it():
    assert exchanges.Target("10.0.0.1", 80).netloc("http") == "10.0.0.1"
    assert exchanges.Target("10.0.0.1", 8080).netloc("http") == "10.0.0.1:8080"
    assert exchanges.Target("10.0.0.1", 443).netloc("https") == "10.0.0.1"
    assert exchanges.Target("fd00::1", 80).netloc("http") == "[fd00::1]"


def test_backend_names_drop_the_replica_set_hash_and_suffix():
    assert exchanges.backend_name("infra-backend-v1-7b9f4-x2x9z") == "infra-backend-v1"
    assert exchanges.backend_name("echo") == "echo"


def test_weighted_distribution_within_tolerance():
    picks = iter(["a-1-x"] * 350 + ["b-1-x"] * 150)
    assert exchanges.weighted(lambda: next(picks), {"a": 0.7, "b": 0.3, "c": 0.0},
                              concurrency=1) is None
    skewed = iter(["a-1-x"] * 500)
    problem = exchanges.weighted(lambda: next(skewed), {"a": 0.7, "b": 0.3}, concurrency=1)
    assert problem is not None and "none was received" in problem


def test_await_convergence_wants_consecutive_successes():
    outcomes = iter([None, "no", None, None, None])
    assert exchanges.await_convergence(lambda: next(outcomes), exchanges.TimeoutConfig(
        default_poll_interval=0)) is None
    assert "timeout" in str(exchanges.await_convergence(
        lambda: "never", exchanges.TimeoutConfig(max_time_to_consistency=0.05,
                                                 default_poll_interval=0.01)))


def test_mirror_logs_and_the_percentage_band():
    from pilotfish.testing.conformance import mirrors

    line = "Echoing back request made to /mirror?id=a.b to client (10.0.0.1:5000)"
    assert mirrors.pattern("/mirror?id=a.b").search(line)
    assert not mirrors.pattern("/mirror?id=a.c").search(line)
    low, high = mirrors.band(20)  # 100 ± 3·sqrt(500·0.2·0.8)
    assert round(low, 1) == 73.2 and round(high, 1) == 126.8


def test_grpc_codes_are_named_as_go_names_them():
    import grpc

    from pilotfish.testing.conformance.streams import go_code

    assert go_code(grpc.StatusCode.UNIMPLEMENTED) == "Unimplemented"
    assert go_code(grpc.StatusCode.DEADLINE_EXCEEDED) == "DeadlineExceeded"
    assert go_code(grpc.StatusCode.CANCELLED) == "Canceled"
    assert go_code(grpc.StatusCode.OK) == "OK"
