"""A waypoint on real Envoy, then the same on the native proxy, configured by discovery,
between a test HBONE client and HBONE servers: the service's VirtualService (a header
match, an 80/20 split) and an L7 AuthorizationPolicy aimed at the service apply to traffic
tunneled to the service's VIP.

Real processes: discovery (``profile: [sidecar, ambient]``, its CA on the secure port), the
agent running Envoy as a ``waypoint`` proxy (its certificate from the CA over SDS), the
demo app as the two pods' plain HTTP servers, and a second Envoy, configured by hand, as
the pods' HBONE servers: CONNECT over mTLS on ``<podIP>:15008``, logging each tunnel's
``:authority`` and the client's SPIFFE ID. The client is Python (h2 over mTLS with a
certificate the CA issued), as ztunnel would be: CONNECT to the waypoint with
``:authority VIP:port``.

No network namespaces: pods are 127.0.31.x addresses. The waypoint's ``connect_terminate``
binds 0.0.0.0:15008 and the pods' HBONE servers bind <podIP>:15008; both Envoys set
SO_REUSEPORT, so the kernel lets them share the port and hands each connection to the
socket bound to its exact address (the client dials 127.0.0.1, the waypoint a pod's IP).
The VIP is never dialled: it only travels as ``:authority``.

The native waypoint gets the very same xDS (no generator of its own): its internal listeners
are served in process. It runs with ``--concurrency 2``, whose workers set SO_REUSEPORT as
Envoy does, so that it may share 15008 with the pods' servers here (the admin API adds the
workers' counters up).
"""

from __future__ import annotations

import collections
import json
import re
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest

from pilotfish.core.security import tokens
from pilotfish.plugins.envoy.backend import envoy_binary
from pilotfish.testing.certs import create_certificate, make_csr
from pilotfish.testing.mesh import LocalMesh
from pilotfish.testing.processes import Process, free_port, wait_until

pytestmark = pytest.mark.envoy

envoy_binary()  # a missing Envoy fails loudly, never skips

VIP = "10.96.31.20"
PODS = {"v1": "127.0.31.11", "v2": "127.0.31.12"}
# A pod of another service whose HBONE server shows the reviews identity, not its own.
IMPOSTER = "127.0.31.13"
RATINGS_VIP = "10.96.31.21"
DETAILS_VIP = "10.96.31.22"  # its HTTPRoute splits to details-v1 and details-v2
APP_PORT = 18080
WAYPOINT_SPIFFE = "spiffe://cluster.local/ns/shop/sa/waypoint"

CONFIG = f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: shop, labels: {{istio.io/dataplane-mode: ambient}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: waypoint, namespace: shop, labels: {{istio.io/waypoint-for: all}}}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
---
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: shop, labels: {{istio.io/use-waypoint: waypoint}}}}
spec:
  clusterIP: {VIP}
  selector: {{app: reviews}}
  ports: [{{name: http, port: 9080, targetPort: {APP_PORT}}}]
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1
  namespace: shop
  # traffic addressed to this pod itself goes through the waypoint too
  labels: {{app: reviews, version: v1, istio.io/use-waypoint: waypoint}}
spec: {{serviceAccountName: reviews, containers: [{{name: app}}]}}
status: {{phase: Running, podIP: {PODS["v1"]}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: reviews-v2, namespace: shop, labels: {{app: reviews, version: v2}}}}
spec: {{serviceAccountName: reviews, containers: [{{name: app}}]}}
status: {{phase: Running, podIP: {PODS["v2"]}}}
---
apiVersion: v1
kind: Service
metadata: {{name: ratings, namespace: shop, labels: {{istio.io/use-waypoint: waypoint}}}}
spec:
  clusterIP: {RATINGS_VIP}
  selector: {{app: ratings}}
  ports: [{{name: http, port: 9080, targetPort: {APP_PORT}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: ratings-1, namespace: shop,
           labels: {{app: ratings, istio.io/use-waypoint: waypoint}}}}
spec: {{serviceAccountName: ratings, containers: [{{name: app}}]}}
status: {{phase: Running, podIP: {IMPOSTER}}}
---
apiVersion: v1
kind: Service
metadata: {{name: details, namespace: shop, labels: {{istio.io/use-waypoint: waypoint}}}}
spec:
  clusterIP: {DETAILS_VIP}
  selector: {{app: reviews}}
  ports:
  - {{name: http, port: 9080, targetPort: {APP_PORT}}}
  - {{name: web, port: 9081, targetPort: {APP_PORT}}}  # no protocol: the waypoint sniffs it
---
apiVersion: v1
kind: Service
metadata: {{name: details-v1, namespace: shop}}
spec:
  clusterIP: 10.96.31.23
  selector: {{app: reviews, version: v1}}
  ports: [{{name: http, port: 9080, targetPort: {APP_PORT}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: details-v2, namespace: shop}}
spec:
  clusterIP: 10.96.31.24
  selector: {{app: reviews, version: v2}}
  ports: [{{name: http, port: 9080, targetPort: {APP_PORT}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: details, namespace: shop}}
spec:
  parentRefs: [{{group: "", kind: Service, name: details, port: 9080}}]
  rules:
  - backendRefs:
    - {{name: details-v1, port: 9080, weight: 80}}
    - {{name: details-v2, port: 9080, weight: 20}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: shop}}
spec:
  hosts: [reviews]
  http:
  - match: [{{headers: {{x-canary: {{exact: "yes"}}}}}}]
    route: [{{destination: {{host: reviews, subset: v2}}}}]
  - route:
    - {{destination: {{host: reviews, subset: v1}}, weight: 80}}
    - {{destination: {{host: reviews, subset: v2}}, weight: 20}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: admin-only, namespace: shop}}
spec:
  targetRefs: [{{kind: Service, group: "", name: reviews}}]
  action: DENY
  rules:
  - from: [{{source: {{notPrincipals: ["cluster.local/ns/shop/sa/admin"]}}}}]
    to: [{{operation: {{paths: ["/admin*"]}}}}]
"""


# -- identities ----------------------------------------------------------------------------


class Identities:
    """Certificates from discovery's CA, asked for with pod tokens as workloads would."""

    def __init__(self, mesh: LocalMesh, workdir: Path) -> None:
        self.mesh, self.workdir = mesh, workdir
        self.private, public = tokens.generate_keypair()
        self.public_file = workdir / "token-key.pem"
        self.public_file.write_bytes(public)

    def token_file(self, service_account: str, pod: str) -> Path:
        path = self.workdir / f"{pod}.token"
        path.write_text(tokens.issue(self.private, "shop", service_account, pod, 3600))
        return path

    def issue(self, service_account: str, pod: str) -> tuple[Path, Path]:
        """(chain file, key file) for spiffe://cluster.local/ns/shop/sa/SERVICE_ACCOUNT."""
        csr, key = make_csr(uris=[f"spiffe://cluster.local/ns/shop/sa/{service_account}"])
        token = tokens.issue(self.private, "shop", service_account, pod, 3600)
        chain = create_certificate(self.mesh.secure_address, self.mesh.root_cert.read_bytes(),
                                   csr, token=token)
        cert_file, key_file = self.workdir / f"{pod}.pem", self.workdir / f"{pod}.key"
        cert_file.write_text("".join(chain))
        key_file.write_text(key)
        return cert_file, key_file


# -- the pods' HBONE servers: Envoy configured by hand ---------------------------------------


def hbone_server_bootstrap(pods: dict[str, str], cert: Path, key: Path, root: Path,
                           log: Path, admin_port: int) -> dict[str, Any]:
    """One listener per pod on <podIP>:15008: mTLS (TLS 1.3, h2), CONNECT terminated into a
    TCP connection to the pod's app; every tunnel logged with its :authority and the
    client's URI SAN."""
    listeners, clusters = [], []
    for version, ip in pods.items():
        tls = {
            "@type": "type.googleapis.com/"
                     "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_3"},
                "alpn_protocols": ["h2"],
                "tls_certificates": [{"certificate_chain": {"filename": str(cert)},
                                      "private_key": {"filename": str(key)}}],
                "validation_context": {"trusted_ca": {"filename": str(root)}},
            },
        }
        manager = {
            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                     "http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": f"hbone_{version}",
            "codec_type": "HTTP2",
            "http2_protocol_options": {"allow_connect": True},
            "upgrade_configs": [{"upgrade_type": "CONNECT"}],
            # A line when a tunnel opens: the waypoint keeps its tunnels for many requests.
            "access_log_options": {"flush_access_log_on_new_request": True},
            "access_log": [{
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/"
                             "envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": str(log),
                    "log_format": {"text_format_source": {"inline_string": (
                        f"{version} %REQ(:METHOD)% %REQ(:AUTHORITY)% "
                        "%DOWNSTREAM_PEER_URI_SAN%\n")}},
                },
            }],
            "route_config": {"virtual_hosts": [{
                "name": "hbone", "domains": ["*"],
                "routes": [{"match": {"connect_matcher": {}}, "route": {
                    "cluster": f"app_{version}", "timeout": "0s",
                    "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}],
                }}],
            }]},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        }
        listeners.append({
            "name": f"hbone_{version}",
            "address": {"socket_address": {"address": ip, "port_value": 15008}},
            "enable_reuse_port": True,
            "filter_chains": [{
                "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
                "filters": [{"name": "envoy.filters.network.http_connection_manager",
                             "typed_config": manager}],
            }],
        })
        clusters.append({
            "name": f"app_{version}", "type": "STATIC", "connect_timeout": "2s",
            "load_assignment": {"cluster_name": f"app_{version}", "endpoints": [{
                "lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": ip, "port_value": APP_PORT}}}}]}]},
        })
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": admin_port}}},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


# -- the HBONE client --------------------------------------------------------------------


class HboneClient:
    """What ztunnel does for a pod sending to a service with a waypoint: one h2 connection
    over mTLS to the waypoint's 15008, a CONNECT stream per TCP connection with
    ``:authority VIP:port``; here each stream carries one HTTP/1.1 request."""

    def __init__(self, address: tuple[str, int], cert: Path, key: Path, root: Path) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_verify_locations(str(root))
        context.load_cert_chain(str(cert), str(key))
        context.check_hostname = False  # HBONE sends no SNI; the SPIFFE ID is what counts
        context.set_alpn_protocols(["h2"])
        raw = socket.create_connection(address, timeout=5)
        self.sock = context.wrap_socket(raw)
        assert self.sock.selected_alpn_protocol() == "h2"
        self.peer = self.sock.getpeercert()
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, authority: str, path: str, headers: dict[str, str] | None = None,
                *, close: bool = True) -> tuple[int, dict[str, str], bytes]:
        """One CONNECT to ``authority`` carrying ``GET path``: the HTTP status line's code,
        the response headers and body (the CONNECT's own status must be 200). ``close``:
        ask the server to close after answering; else the client ends the tunnel once the
        whole answer is in."""
        stream = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream, [(":method", "CONNECT"), (":authority", authority)])
        self._flush()
        lines = [f"GET {path} HTTP/1.1", "Host: reviews.shop.svc.cluster.local:9080",
                 *(["Connection: close"] if close else []),
                 *(f"{k}: {v}" for k, v in (headers or {}).items())]
        sent = False
        received = bytearray()
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the waypoint closed the HBONE connection")
            ended = False
            for event in self.conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                    status = dict(event.headers).get(b":status")
                    if status != b"200":
                        raise ConnectionError(f"CONNECT answered {status!r}")
                    self.conn.send_data(stream, ("\r\n".join(lines) + "\r\n\r\n").encode())
                    sent = True
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream:
                    received += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                    ended = True
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == stream:
                    if sent and received:
                        ended = True
                    else:
                        raise ConnectionError(f"CONNECT reset: {event.error_code!r}")
            self._flush()
            if ended and not received:
                raise ConnectionError("the tunnel closed without an answer")
            if ended or _complete(received):
                if not ended:
                    self.conn.end_stream(stream)
                    self._flush()
                return _parse(bytes(received))

    def close(self) -> None:
        self.conn.close_connection()
        self._flush()
        self.sock.close()


def _complete(data: bytearray) -> bool:
    head, sep, body = bytes(data).partition(b"\r\n\r\n")
    if not sep:
        return False
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return match is not None and len(body) >= int(match.group(1))


def _parse(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


# -- the scenario ----------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["envoy", "native"])
def waypoint(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    backend = ["--proxy", "native", "--concurrency", "2"] if request.param == "native" \
        else ["--proxy", "envoy"]
    workdir = tmp_path_factory.mktemp(f"waypoint-{request.param}")
    with LocalMesh(workdir) as mesh:
        ids = Identities(mesh, workdir)
        mesh.write("shop.yaml", CONFIG)
        mesh.start_discovery("profile: [sidecar, ambient]\n", token_key=ids.public_file)
        mesh.start_apps([f"reviews:{v}@{ip}:{APP_PORT}" for v, ip in PODS.items()]
                        + [f"ratings:v1@{IMPOSTER}:{APP_PORT}"])

        # The pods' HBONE servers, with the pods' identity (the reviews service account).
        cert, key = ids.issue("reviews", "reviews-v1")
        log = workdir / "hbone-servers.log"
        log.touch()
        admin_port = free_port()
        bootstrap = workdir / "hbone-servers.json"
        bootstrap.write_text(json.dumps(hbone_server_bootstrap(
            {**PODS, "imposter": IMPOSTER}, cert, key, mesh.root_cert, log, admin_port)))
        servers = Process("hbone-servers", [
            str(envoy_binary()), "-c", str(bootstrap), "--base-id", str(free_port()),
            "--file-flush-interval-msec", "100", "-l", "warning"], workdir / "hbone-envoy.log")
        mesh.processes.append(servers.start())

        def listening() -> bool:
            servers.check_running()
            with socket.create_connection((PODS["v1"], 15008), timeout=1):
                return True

        wait_until(listening, 15, what="the pods' HBONE servers")

        token = ids.token_file("waypoint", "waypoint-5d8f9")
        proxy = mesh.start_proxy(
            "waypoint-5d8f9", "shop", proxy_type="waypoint",
            labels={"gateway.networking.k8s.io/gateway-name": "waypoint"},
            extra=["--service-account", "waypoint", "--token-file", str(token),
                   "--root-cert", str(mesh.root_cert), "--ca-address", mesh.secure_address,
                   *backend])
        mesh.wait_synced("waypoint-5d8f9.shop", timeout=20)

        client_cert, client_key = ids.issue("productpage", "productpage-1")
        admin_cert, admin_key = ids.issue("admin", "admin-1")

        def connect(cert: Path, key: Path) -> HboneClient:
            return HboneClient(("127.0.0.1", 15008), cert, key, mesh.root_cert)

        def first_answer() -> HboneClient | None:
            client = connect(client_cert, client_key)
            try:
                if client.request(f"{VIP}:9080", "/ready")[0] == 200:
                    return client
            except (ConnectionError, AssertionError):
                pass
            client.close()
            return None

        client = wait_until(first_answer, 20, what="a request through the waypoint")
        yield {"mesh": mesh, "proxy": proxy, "client": client, "log": log,
               "backend": request.param,
               "admin": connect(admin_cert, admin_key)}
        client.close()


def assert_split_80_20(client: HboneClient, authority: str, path: str) -> None:
    """200 requests through the waypoint, each answered 200, spread 80/20 over v1 and v2."""
    versions: collections.Counter[str] = collections.Counter()
    for index in range(200):
        status, _, body = client.request(authority, f"{path}/{index}")
        assert status == 200
        versions[json.loads(body)["version"]] += 1
    assert versions["v1"] + versions["v2"] == 200
    # 80/20 over 200 draws: v2 is Binomial(200, 0.2), mean 40, sd 5.7; 20..62 is > 3.5 sd.
    assert 20 <= versions["v2"] <= 62, versions


def test_split_80_20_over_200_requests(waypoint: dict[str, Any]) -> None:
    assert_split_80_20(waypoint["client"], f"{VIP}:9080", "/split")


def test_httproute_split_80_20_over_200_requests(waypoint: dict[str, Any]) -> None:
    """The same through a Gateway API HTTPRoute whose parent is the Service: its backends
    are two other services, which the waypoint reaches over HBONE too."""
    assert_split_80_20(waypoint["client"], f"{DETAILS_VIP}:9080", "/details")


def test_a_port_without_a_protocol_is_sniffed_as_http(waypoint: dict[str, Any]) -> None:
    """The HTTP inspector finds HTTP on the undeclared port: the request takes the HTTP
    chain (Envoy's router answers, adding its upstream time), not the byte-for-byte one."""
    client: HboneClient = waypoint["client"]
    status, headers, body = client.request(f"{DETAILS_VIP}:9081", "/sniffed")
    assert status == 200, body
    assert "x-envoy-upstream-service-time" in headers
    status, headers, _ = client.request(f"{DETAILS_VIP}:9080", "/declared")
    assert "x-envoy-upstream-service-time" in headers


def test_header_match_goes_to_v2(waypoint: dict[str, Any]) -> None:
    client: HboneClient = waypoint["client"]
    for _ in range(10):
        status, _, body = client.request(f"{VIP}:9080", "/canary", {"x-canary": "yes"})
        assert status == 200
        assert json.loads(body)["version"] == "v2"


def test_l7_deny_on_a_path_by_the_clients_identity(waypoint: dict[str, Any]) -> None:
    client: HboneClient = waypoint["client"]
    status, _, body = client.request(f"{VIP}:9080", "/admin/users")
    assert status == 403, body
    assert b"RBAC: access denied" in body
    # The rule exempts the admin identity: the waypoint tells clients apart by the SPIFFE ID
    # of their HBONE certificate, carried across the internal listener.
    status, _, _ = waypoint["admin"].request(f"{VIP}:9080", "/admin/users")
    assert status == 200
    assert client.request(f"{VIP}:9080", "/public")[0] == 200


def test_backends_see_the_waypoints_identity_and_pod_authority(
        waypoint: dict[str, Any]) -> None:
    client: HboneClient = waypoint["client"]
    assert client.request(f"{VIP}:9080", "/trace", {"x-canary": "yes"})[0] == 200
    assert client.request(f"{VIP}:9080", "/trace")[0] == 200

    def both() -> str | None:
        text: str = waypoint["log"].read_text()
        return text if all(f"{v} CONNECT" in text for v in PODS) else None

    lines = wait_until(both, 5, what="the HBONE servers' log lines for both pods")
    for line in lines.splitlines():
        version, method, authority, peer = line.split()
        assert version != "imposter"  # refused in the handshake, before any CONNECT
        assert method == "CONNECT"
        assert authority == f"{PODS[version]}:{APP_PORT}"  # pod IP and target port
        assert peer == WAYPOINT_SPIFFE
    # The waypoint itself served the client with its own workload certificate.
    sans = [value for kind, value in waypoint["client"].peer.get("subjectAltName", ())
            if kind == "URI"]
    assert sans == [WAYPOINT_SPIFFE]


def test_the_tunnel_checks_the_destination_pods_identity(waypoint: dict[str, Any]) -> None:
    """The ratings pod's HBONE server shows the reviews identity: the waypoint refuses the
    tunnel (it expects spiffe://.../sa/ratings there), so the request gets a 503 and the
    server never sees a CONNECT."""
    client: HboneClient = waypoint["client"]
    status, _, body = client.request(f"{RATINGS_VIP}:9080", "/ratings")
    assert status == 503, body
    assert waypoint["proxy"].stat("cluster.connect_originate.ssl.fail_verify_san") >= 1
    assert "imposter" not in waypoint["log"].read_text()


def test_traffic_addressed_to_a_bound_pod(waypoint: dict[str, Any]) -> None:
    """A CONNECT to the pod's own IP:port (the pod uses the waypoint for workload traffic):
    the waypoint passes the bytes on in a tunnel to that pod, checking its identity."""
    client: HboneClient = waypoint["client"]
    # Bytes only on this path: the client ends the tunnel, as the server closing first over
    # a tunnel may cost its last bytes (Envoy cannot half-close a CONNECT upstream yet).
    status, _, body = client.request(f"{PODS['v1']}:{APP_PORT}", "/direct", close=False)
    assert status == 200, body
    assert json.loads(body)["version"] == "v1"
    # The impostor pod uses it too, and is refused for its identity on this path as well.
    before = waypoint["proxy"].stat("cluster.connect_originate.ssl.fail_verify_san")
    with pytest.raises(ConnectionError):
        client.request(f"{IMPOSTER}:{APP_PORT}", "/direct", close=False)
    assert waypoint["proxy"].stat("cluster.connect_originate.ssl.fail_verify_san") > before
    # reviews-v2 does not use the waypoint for its own address: nothing takes it (refused at
    # once, or, where the HTTP inspector first waits for the request, right after).
    with pytest.raises(ConnectionError, match=r"CONNECT (answered b'503'|reset)"):
        client.request(f"{PODS['v2']}:{APP_PORT}", "/direct", close=False)


def test_a_vip_no_service_bound_here_has_is_refused(waypoint: dict[str, Any]) -> None:
    """``main_internal`` has no chain for it: its default chain closes the tunnel, which the
    client sees as a 503 to its CONNECT (HBONE's "no upstream")."""
    client: HboneClient = waypoint["client"]
    with pytest.raises(ConnectionError, match="CONNECT answered b'503'"):
        client.request("10.96.31.99:9080", "/nobody")
    assert client.request(f"{VIP}:9080", "/still-there")[0] == 200  # the connection lives on


def test_a_changed_virtual_service_reaches_the_waypoint(waypoint: dict[str, Any]) -> None:
    """Config edits flow to the running waypoint: the split becomes all-v1 (RDS only)."""
    mesh: LocalMesh = waypoint["mesh"]
    client: HboneClient = waypoint["client"]
    edited = CONFIG.replace("subset: v1}, weight: 80}", "subset: v1}, weight: 100}").replace(
        "    - {destination: {host: reviews, subset: v2}, weight: 20}\n", "")
    assert edited.count("weight: 100") == 1 and "subset: v2}, weight: 20" not in edited
    mesh.write("shop.yaml", edited)

    def all_v1() -> bool:
        return all(json.loads(client.request(f"{VIP}:9080", "/after")[2])["version"] == "v1"
                   for _ in range(20))

    wait_until(all_v1, 10, what="the new routes on the waypoint")
    mesh.write("shop.yaml", CONFIG)


def test_the_native_waypoint_hops_through_its_internal_listeners(
        waypoint: dict[str, Any]) -> None:
    """On the native proxy both internal hops are its own listeners, served in process:
    each CONNECT is a new connection to ``main_internal``; the upstream connections from
    there to ``connect_originate`` (one per pod tunnel) are pooled, as Envoy pools them."""
    if waypoint["backend"] != "native":
        return  # the stat names are the native proxy's; every other test runs on both
    proxy, client = waypoint["proxy"], waypoint["client"]
    before = proxy.stat("listener.main_internal.downstream_cx_total")
    assert client.request(f"{VIP}:9080", "/counted")[0] == 200
    assert proxy.stat("listener.main_internal.downstream_cx_total") == before + 1
    assert 1 <= proxy.stat("listener.connect_originate.downstream_cx_total") < before
