"""Real Envoy gateways, configured by discovery from Istio YAML, routing to real backends.

Every scenario runs twice: with a state-of-the-world ADS stream and with a delta stream.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import attrs
import pytest

from pilotfish.testing.mesh import LocalMesh, Proxy
from pilotfish.testing.processes import free_port, http, wait_until

pytestmark = pytest.mark.envoy

IPS = {
    "productpage-v1": "127.0.20.1",
    "details-v1": "127.0.20.2",
    "reviews-v1": "127.0.20.3",
    "reviews-v2": "127.0.20.4",
    "reviews-v3": "127.0.20.5",
    "ratings-v1": "127.0.20.6",
    "mirror-v1": "127.0.20.7",
}


def services_yaml(port: int) -> str:
    docs = []
    for svc in ("productpage", "details", "reviews", "ratings", "mirror"):
        docs.append(f"""\
apiVersion: v1
kind: Service
metadata: {{name: {svc}, namespace: bookinfo}}
spec:
  selector: {{app: {svc}}}
  ports: [{{name: http, port: 9080, targetPort: {port}}}]
""")
    for pod, ip in IPS.items():
        app, version = pod.rsplit("-", 1)
        docs.append(f"""\
apiVersion: v1
kind: Pod
metadata: {{name: {pod}, namespace: bookinfo, labels: {{app: {app}, version: {version}}}}}
status: {{podIP: {ip}}}
""")
    return "---\n".join(docs)


DESTINATION_RULES = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
"""


def gateway_yaml(gateway_port: int) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bookinfo-gateway, namespace: bookinfo}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {gateway_port}, name: http, protocol: HTTP}}
    hosts: ["*"]
"""


ROUTES = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: bookinfo}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - name: productpage
    match: [{uri: {exact: /productpage}}]
    route: [{destination: {host: productpage}}]
  - name: jason
    match: [{uri: {prefix: /reviews}, headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: split
    match: [{uri: {prefix: /reviews}}]
    route:
    - {destination: {host: reviews, subset: v1}, weight: 70}
    - {destination: {host: reviews, subset: v3}, weight: 30}
  - name: query-and-method
    match: [{uri: {prefix: /ratings/q}, queryParams: {debug: {exact: "1"}}, method: {exact: POST}}]
    route: [{destination: {host: details}}]
  - name: abort
    match: [{uri: {prefix: /ratings/abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: ratings}}]
  - name: delay
    match: [{uri: {prefix: /ratings/delay}}]
    fault: {delay: {fixedDelay: 1s, percentage: {value: 100}}}
    route: [{destination: {host: ratings}}]
  - name: ratings
    match: [{uri: {prefix: /ratings}}]
    route: [{destination: {host: ratings}}]
  - name: retry
    match: [{uri: {prefix: /flaky}}]
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx"}
    route: [{destination: {host: details}}]
  - name: no-retry
    match: [{uri: {prefix: /fragile}}]
    retries: {attempts: 0}
    rewrite: {uri: /flaky}
    route: [{destination: {host: details}}]
  - name: timeout
    match: [{uri: {prefix: /slow}}]
    timeout: 0.5s
    rewrite: {uri: /delay/3}
    route: [{destination: {host: details}}]
  - name: rewrite
    match: [{uri: {prefix: /api/v1/details}}]
    rewrite: {uri: /details}
    headers:
      request: {set: {x-rewritten: "yes"}}
      response: {add: {x-served-by: pilotfish-test}}
    route: [{destination: {host: details}}]
  - name: redirect
    match: [{uri: {exact: /old}}]
    redirect: {uri: /productpage, redirectCode: 302}
  - name: mirror
    match: [{uri: {prefix: /mirror}}]
    route: [{destination: {host: details}}]
    mirror: {host: mirror}
    mirrorPercentage: {value: 100}
  - name: direct
    match: [{uri: {exact: /hello}}]
    directResponse: {status: 200, body: {string: "hello from the gateway"}}
"""


@attrs.frozen
class Scenario:
    mesh: LocalMesh
    gateway: Proxy
    url: str
    backend_port: int


@pytest.fixture(scope="module", params=["sotw", "delta"])
def scenario(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Scenario]:
    mode = request.param
    mesh = LocalMesh(tmp_path_factory.mktemp(f"gateway-{mode}"))
    backend_port = free_port()
    gateway_port = free_port()
    mesh.write("services.yaml", services_yaml(backend_port))
    mesh.write("destination-rules.yaml", DESTINATION_RULES)
    mesh.write("gateway.yaml", gateway_yaml(gateway_port))
    mesh.write("routes.yaml", ROUTES)
    try:
        mesh.start_discovery()
        mesh.start_apps([f"{pod.rsplit('-', 1)[0]}:{pod.rsplit('-', 1)[1]}@{ip}:{backend_port}"
                         for pod, ip in IPS.items()])
        gateway = mesh.start_proxy("istio-ingressgateway", "istio-system",
                                   labels={"istio": "ingressgateway"}, xds_mode=mode)
        url = f"http://127.0.0.1:{gateway_port}"
        wait_until(lambda: http(f"{url}/productpage").status == 200, 10,
                   what="the gateway to route /productpage")
        yield Scenario(mesh, gateway, url, backend_port)
    finally:
        mesh.stop()


def served_by(result) -> str:
    body = result.json()
    return f"{body['service']}-{body['version']}"


def test_exact_path_routes_to_productpage(scenario):
    url = scenario.url
    result = http(f"{url}/productpage")
    assert result.status == 200 and served_by(result) == "productpage-v1"


def test_header_match_picks_subset(scenario):
    url = scenario.url
    for _ in range(10):
        assert served_by(http(f"{url}/reviews/1", {"end-user": "jason"})) == "reviews-v2"


def test_weighted_split_is_statistically_right(scenario):
    url = scenario.url
    counts = Counter(served_by(http(f"{url}/reviews/1")) for _ in range(300))
    assert set(counts) == {"reviews-v1", "reviews-v3"}
    share = counts["reviews-v1"] / 300
    # 70 % expected; 300 draws give a standard deviation of about 2.6 %, so +-10 % is > 3.5 sd.
    assert 0.60 <= share <= 0.80, counts


def test_query_parameter_and_method_match(scenario):
    url = scenario.url
    assert served_by(http(f"{url}/ratings/q?debug=1", method="POST", data=b"")) == "details-v1"
    assert served_by(http(f"{url}/ratings/q?debug=1")) == "ratings-v1"  # GET: falls through
    assert served_by(http(f"{url}/ratings/q", method="POST", data=b"")) == "ratings-v1"


def test_fault_abort(scenario):
    url = scenario.url
    assert http(f"{url}/ratings/abort").status == 418


def test_fault_delay(scenario):
    url = scenario.url
    started = time.monotonic()
    result = http(f"{url}/ratings/delay")
    assert result.status == 200
    assert time.monotonic() - started >= 0.9


def test_retry_succeeds_against_backend_that_fails_once(scenario):
    url = scenario.url
    key = f"retry-{time.monotonic_ns()}"
    result = http(f"{url}/flaky/{key}")
    assert result.status == 200 and served_by(result) == "details-v1"
    # Without retries the same backend behaviour shows through.
    other = f"fragile-{time.monotonic_ns()}"
    assert http(f"{url}/fragile/{other}").status in (200, 503)


def test_timeout(scenario):
    url = scenario.url
    started = time.monotonic()
    result = http(f"{url}/slow")
    assert result.status == 504
    assert time.monotonic() - started < 2.5


def test_rewrite_and_headers(scenario):
    url = scenario.url
    result = http(f"{url}/api/v1/details/7")
    body = result.json()
    assert body["path"] == "/details/7"
    assert body["headers"]["x-rewritten"] == "yes"
    assert result.headers["x-served-by"] == "pilotfish-test"


def test_redirect(scenario):
    url = scenario.url
    result = http(f"{url}/old")
    assert result.status == 302
    assert result.headers["location"].endswith("/productpage")


def test_mirror_copies_requests(scenario):
    key = f"/mirror/{time.monotonic_ns()}"
    assert served_by(http(f"{scenario.url}{key}")) == "details-v1"
    mirror = f"http://{IPS['mirror-v1']}:{scenario.backend_port}/_requests"

    def mirrored() -> bool:
        seen = http(mirror).json()
        return any(r["path"] == key and "-shadow" in r["host"] for r in seen)

    wait_until(mirrored, 5, what="the mirrored request")


def test_direct_response(scenario):
    url = scenario.url
    result = http(f"{url}/hello")
    assert result.status == 200 and result.body == b"hello from the gateway"


def test_unknown_path_is_404(scenario):
    url = scenario.url
    assert http(f"{url}/nothing-here").status == 404


def test_proxy_status_reports_synced(scenario):
    item = scenario.mesh.wait_synced("istio-ingressgateway.istio-system")
    assert set(item["resources"]) >= {
        "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "type.googleapis.com/envoy.config.listener.v3.Listener",
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    }
