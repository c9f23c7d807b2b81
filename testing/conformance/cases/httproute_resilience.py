"""HTTPRoute timeout and retry tests (``tests/httproute-retry*.go``,
``tests/httproute-timeout-*.go``).

The retry tests ask the echo backend to fail: query parameters say with which status
(``responseCode``; none: a connection reset), for how many attempts (``succeedAfter``) and
how late (``delayRetry``); a fresh ``uuid`` parameter makes each attempt a new series. Go
encodes the parameters sorted by name, and ``uuid`` sorts last.
"""

from __future__ import annotations

from ..model import INFRA_NS, Case, ExpectedResponse, Request, Response
from .checks import accepted, resolved, step

NS = INFRA_NS
SAME_NAMESPACE = (NS, "same-namespace")


def _route(name: str) -> tuple[str, str]:
    return (NS, name)


def _attempt(name: str, path: str, query: str, response: Response) -> ExpectedResponse:
    """One of the retry tests' cases: every attempt must end as ``response`` from
    infra-backend-v3."""
    return ExpectedResponse(request=Request(path=f"{path}?{query}"), response=response,
                            backend="infra-backend-v3", namespace=NS, test_case_name=name,
                            unique_query_param="uuid")


def _case(short_name: str, description: str, features: tuple[str, ...], name: str, route: str,
          requests: tuple[ExpectedResponse, ...]) -> Case:
    return Case(
        short_name=short_name,
        description=description,
        features=features,
        manifests=(f"tests/{name}.yaml",),
        source=f"{name}.go",
        steps=(step(accepted("HTTPRoute", SAME_NAMESPACE, _route(route)),
                    resolved("HTTPRoute", _route(route), SAME_NAMESPACE),
                    gateway=SAME_NAMESPACE, requests=requests),),
    )


_OK = Response(status_code=200)

RETRY_CONNECTION_ERROR = _case(
    "HTTPRouteRetryConnectionError",
    "An HTTPRoute configured with a Retry policy should retry requests that fail due to TCP "
    "connection resets up to the configured maximum number of attempts, returning a successful "
    "response only when the backend recovers within the retry budget.",
    ("Gateway", "HTTPRoute", "HTTPRouteRetry", "HTTPRouteRetryConnectionError"),
    "httproute-retry-connection-error", "retries-connection-error", (
        _attempt("succeeds after 2 retries on connection errors and max attempts is 3",
                 "/retry/no-status-code-attempts-3", "succeedAfter=2", _OK),
        _attempt("fails when required retries on connection errors exceed max attempts",
                 "/retry/no-status-code-attempts-3", "succeedAfter=4",
                 Response(status_codes=(500, 503))),
    ))

RETRY_WITH_TIMEOUTS = _case(
    "HTTPRouteRetryWithTimeouts",
    "An HTTPRoute that has both Retry and Timeout policies configured should retry failed "
    "requests only while the configured timeouts permit, returning a successful response when "
    "the backend recovers within the timeout budget and surfacing a timeout error when retries "
    "or backend delays exceed the request or backend request timeout.",
    ("Gateway", "HTTPRoute", "HTTPRouteRetry", "HTTPRouteRetryBackendTimeout",
     "HTTPRouteRequestTimeout", "HTTPRouteBackendTimeout"),
    "httproute-retry-with-timeouts", "retries-with-timeouts", (
        _attempt("succeeds after 2 retries on backend timeout with max attempts is 3",
                 "/retry/backend-request-timeout-200ms",
                 "delayRetry=300ms&responseCode=500&succeedAfter=2", _OK),
        _attempt("fails when required retries on backend timeout exceed max attempts",
                 "/retry/backend-request-timeout-200ms",
                 "delayRetry=300ms&responseCode=500&succeedAfter=3", Response(status_code=504)),
        _attempt("succeeds when retries complete within the request timeout",
                 "/retry/request-timeout-200ms", "responseCode=500&succeedAfter=1", _OK),
        _attempt("fails with 504 when retry delays exceed the request timeout",
                 "/retry/request-timeout-200ms",
                 "delayRetry=100ms&responseCode=500&succeedAfter=4", Response(status_code=504)),
    ))

_ATTEMPTS_3 = "/retry/code-500-attempts-3"
_ALL_ATTEMPTS_2 = "/retry/code-all-attempts-2"

RETRY = _case(
    "HTTPRouteRetry",
    "An HTTPRoute that has a Retry policy configured should retry failed requests according to "
    "the specified codes and attempt limits, returning a successful response when the backend "
    "recovers within the retry budget and surfacing the original error when it does not.",
    ("Gateway", "HTTPRoute", "HTTPRouteRetry"),
    "httproute-retry", "retries", (
        _attempt("succeeds after 2 retries when retry is configured for status code 500 and max "
                 "attempts is 3", _ATTEMPTS_3, "responseCode=500&succeedAfter=2", _OK),
        _attempt("fails when required retries on 500 exceed max attempts", _ATTEMPTS_3,
                 "responseCode=500&succeedAfter=4", Response(status_code=500)),
        _attempt("does not retry on 503 when retry is only configured for status code 500",
                 _ATTEMPTS_3, "responseCode=503&succeedAfter=2", Response(status_code=503)),
        _attempt("succeeds after 1 retry on 500 when retry is configured for all status code and "
                 "max attempts is 2", _ALL_ATTEMPTS_2, "responseCode=500&succeedAfter=1", _OK),
        _attempt("fails when required retries on 500 exceed max attempts", _ALL_ATTEMPTS_2,
                 "responseCode=500&succeedAfter=3", Response(status_code=500)),
        _attempt("succeeds after 1 retry on 502 when retry is configured for all status code and "
                 "max attempts is 2", _ALL_ATTEMPTS_2, "responseCode=502&succeedAfter=1", _OK),
        _attempt("fails when required retries on 502 exceed max attempts", _ALL_ATTEMPTS_2,
                 "responseCode=502&succeedAfter=3", Response(status_code=502)),
        _attempt("succeeds after 1 retry on 503 when retry is configured for all status code and "
                 "max attempts is 2", _ALL_ATTEMPTS_2, "responseCode=503&succeedAfter=1", _OK),
        _attempt("fails when required retries on 503 exceed max attempts", _ALL_ATTEMPTS_2,
                 "responseCode=503&succeedAfter=3", Response(status_code=503)),
        _attempt("succeeds after 1 retry on 504 when retry is configured for all status code and "
                 "max attempts is 2", _ALL_ATTEMPTS_2, "responseCode=504&succeedAfter=1", _OK),
        _attempt("fails when required retries on 504 exceed max attempts", _ALL_ATTEMPTS_2,
                 "responseCode=504&succeedAfter=3", Response(status_code=504)),
    ))

TIMEOUT_BACKEND_REQUEST = _case(
    "HTTPRouteTimeoutBackendRequest", "An HTTPRoute with backend request timeout",
    ("Gateway", "HTTPRoute", "HTTPRouteBackendTimeout"),
    "httproute-timeout-backend-request", "backend-request-timeout", (
        ExpectedResponse(request=Request(path="/backend-timeout"),
                         response=Response(status_code=200), namespace=NS),
        ExpectedResponse(request=Request(path="/backend-timeout?delay=1s"),
                         response=Response(status_code=504), namespace=NS),
        ExpectedResponse(request=Request(path="/disable-backend-timeout?delay=1s"),
                         response=Response(status_code=200), namespace=NS),
    ))

TIMEOUT_REQUEST = _case(
    "HTTPRouteTimeoutRequest", "An HTTPRoute with request timeout",
    ("Gateway", "HTTPRoute", "HTTPRouteRequestTimeout"),
    "httproute-timeout-request", "request-timeout", (
        ExpectedResponse(request=Request(path="/request-timeout"),
                         response=Response(status_code=200), namespace=NS),
        ExpectedResponse(request=Request(path="/request-timeout?delay=1s"),
                         response=Response(status_code=504), namespace=NS),
        ExpectedResponse(request=Request(path="/disable-request-timeout?delay=1s"),
                         response=Response(status_code=200), namespace=NS),
    ))

CASES: tuple[Case, ...] = (
    RETRY_CONNECTION_ERROR,
    RETRY_WITH_TIMEOUTS,
    RETRY,
    TIMEOUT_BACKEND_REQUEST,
    TIMEOUT_REQUEST,
)
