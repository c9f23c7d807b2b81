"""Traffic through a real Envoy gateway configured by discovery: HTTP and TCP servers.

Discovery, the demo app and a router proxy run as real processes; the listeners the gateway
serves on come from the LDS translator, their routes and clusters from RDS, CDS and EDS.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from pilotfish.plugins.envoy.backend import envoy_binary
from pilotfish.testing.mesh import LocalMesh, Proxy
from pilotfish.testing.processes import free_port, http, wait_until
from pilotfish.testing.servers import read_head, serve
from pilotfish.translators.access_logs import ISTIO_JSON_FORMAT

pytestmark = pytest.mark.envoy

# Envoy is part of the dev install (./dev): a missing binary fails loudly, never skips.
envoy_binary()

APP = "127.0.20.3"
APP_PORT = 18080

WEB = """\
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: {app_port}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: web-1, namespace: default, labels: {{app: web}}}}
status: {{podIP: {app}}}
---
"""

CONFIG = WEB + """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {http_port}, name: http, protocol: HTTP}}
    hosts: ["*"]
  - port: {{number: {tcp_port}, name: tcp, protocol: TCP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [edge]
  http:
  - route: [{{destination: {{host: web, port: {{number: 80}}}}}}]
  tcp:
  - match: [{{port: {tcp_port}}}]
    route: [{{destination: {{host: web, port: {{number: 80}}}}}}]
"""



# The text access log on the proxies' stdout, which Istio's default mesh config leaves off.
ACCESS_LOGS = "mesh: {accessLogFile: /dev/stdout}\n"


def http_and_tcp_gateway(mesh: LocalMesh, proxy: str, mesh_config: str
                         ) -> tuple[int, int, Proxy]:
    """A gateway of ``proxy`` with an HTTP and a TCP server to the app: (HTTP port, TCP
    port, the gateway)."""
    http_port, tcp_port = free_port(), free_port()
    mesh.write("mesh.yaml", CONFIG.format(app=APP, app_port=APP_PORT, http_port=http_port,
                                          tcp_port=tcp_port))
    mesh.start_discovery(mesh_config=mesh_config)
    mesh.start_apps([f"web:v1@{APP}:{APP_PORT}"])
    gateway = mesh.start_proxy("gw-1", "default", labels={"istio": "ingressgateway"},
                               extra=["--proxy", proxy])
    mesh.wait_synced("gw-1.default")
    return http_port, tcp_port, gateway


@pytest.mark.parametrize("proxy", ["envoy", "native"])
def test_gateway_serves_http_and_tcp_servers(mesh: LocalMesh, proxy: str) -> None:
    http_port, tcp_port, gateway = http_and_tcp_gateway(mesh, proxy, ACCESS_LOGS)

    # HTTP: the listener's HCM asks RDS for http.<port>, which routes to the app.
    answer = wait_until(
        lambda: (r := http(f"http://127.0.0.1:{http_port}/hello", timeout=2)).status == 200
        and r, 15, what="HTTP through the gateway")
    assert answer.json()["service"] == "web"

    # TCP: the same bytes through a tcp_proxy chain built from the VirtualService tcp route.
    answer = wait_until(
        lambda: (r := http(f"http://127.0.0.1:{tcp_port}/raw", timeout=2)).status == 200
        and r, 15, what="TCP through the gateway")
    assert answer.json()["path"] == "/raw"

    # Both connections were logged to the proxy's stdout by the access loggers (written
    # out once a second, as Envoy flushes its access-log files).
    log = wait_until(lambda: t if "outbound|80||web.default.svc.cluster.local" in (
        t := gateway.process.log(200)) else None, 5, what="the access-log lines")
    # the request came without an x-request-id: the line shows the one the proxy made
    assert re.search(r'"GET /hello HTTP/1.1" 200 .* "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-'
                     r'[89ab][0-9a-f]{3}-[0-9a-f]{12}"', log), log


JSON_LOGS = ACCESS_LOGS.replace("}", ", accessLogEncoding: JSON}")


@pytest.mark.parametrize("proxy", ["envoy", "native"])
def test_json_access_log_lines_have_istios_keys_and_types(mesh: LocalMesh, proxy: str) -> None:
    # accessLogEncoding JSON, no accessLogFormat: Istio's keys, one object a line
    http_port, tcp_port, gateway = http_and_tcp_gateway(mesh, proxy, JSON_LOGS)
    wait_until(lambda: http(f"http://127.0.0.1:{http_port}/hello", {"user-agent": "probe/1"},
                            timeout=2).status == 200, 15, what="HTTP through the gateway")
    wait_until(lambda: http(f"http://127.0.0.1:{tcp_port}/raw", timeout=2).status == 200, 15,
               what="TCP through the gateway")

    def lines() -> list[dict[str, object]] | None:
        found = [json.loads(line) for line in gateway.process.log(400).splitlines()
                 if line.startswith("{") and '"upstream_cluster"' in line]
        kinds = {str(entry["protocol"]) for entry in found}
        return found if "HTTP/1.1" in kinds and len(found) >= 2 else None

    entries = wait_until(lines, 5, what="the JSON access-log lines")
    request = next(e for e in entries if e["path"] == "/hello" and e["response_code"] == 200)
    assert set(request) == set(ISTIO_JSON_FORMAT)
    assert request["method"] == "GET" and request["protocol"] == "HTTP/1.1"
    assert request["user_agent"] == "probe/1" and request["response_flags"] == "-"
    assert request["upstream_cluster"] == "outbound|80||web.default.svc.cluster.local"
    assert isinstance(request["bytes_sent"], int) and request["bytes_sent"] > 0
    assert isinstance(request["duration"], int)
    assert re.fullmatch(r"[0-9a-f-]{36}", str(request["request_id"]))
    assert request["connection_termination_details"] is None
    tcp = next(e for e in entries if e["protocol"] is None)
    assert tcp["method"] is None and tcp["response_code"] == 0 and tcp["response_flags"] == "-"
    assert isinstance(tcp["bytes_received"], int) and tcp["bytes_received"] > 0


FILE_TLS = WEB + """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {https_port}, name: https, protocol: HTTPS}}
    hosts: ["web.example.com"]
    tls: {{mode: SIMPLE, serverCertificate: {certs}/gw.pem, privateKey: {certs}/gw.key}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: ["web.example.com"]
  gateways: [edge]
  http:
  - route: [{{destination: {{host: web, port: {{number: 80}}}}}}]
"""


def write_certificate(certs: Path) -> bytes:
    """A self-signed certificate for web.example.com and its key; the certificate (DER)."""
    certs.mkdir(exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=web.example.com",
         "-addext", "subjectAltName=DNS:web.example.com",
         "-keyout", str(certs / "gw.key"), "-out", str(certs / "gw.pem")],
        check=True, capture_output=True)
    return ssl.PEM_cert_to_DER_cert((certs / "gw.pem").read_text())


def https_get(port: int, trusted: Path | None) -> tuple[bytes, bytes]:
    """GET / with SNI web.example.com, trusting ``trusted`` (None: any server): (the
    server's certificate as DER, the response)."""
    context = ssl.create_default_context(cafile=str(trusted) if trusted else None)
    if trusted is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=3) as raw, \
            context.wrap_socket(raw, server_hostname="web.example.com") as tls:
        tls.sendall(b"GET /hello HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
        return tls.getpeercert(binary_form=True) or b"", answer


@pytest.mark.parametrize("proxy", ["envoy", "native"])
def test_gateway_waits_for_certificate_files_and_takes_rotated_ones(mesh: LocalMesh,
                                                                      tmp_path: Path,
                                                                      proxy: str) -> None:
    """Files named by a Gateway server come from the gateway's agent over SDS (as Istio's):
    a listener whose files are not there yet waits for them instead of being NACKed, and a
    rotated certificate is served without a restart."""
    certs, https_port = tmp_path / "certs", free_port()
    mesh.write("mesh.yaml", FILE_TLS.format(app=APP, app_port=APP_PORT, https_port=https_port,
                                            certs=certs))
    mesh.start_discovery()
    mesh.start_apps([f"web:v1@{APP}:{APP_PORT}"])
    mesh.start_proxy("gw-1", "default", labels={"istio": "ingressgateway"},
                     extra=["--proxy", proxy])
    mesh.wait_synced("gw-1.default")  # ACKed: the listener waits for its secret, no NACK
    with pytest.raises(OSError):  # no certificate to offer: no handshake completes
        https_get(https_port, None)

    first = write_certificate(certs)

    def served(expected: bytes) -> bytes | None:
        try:
            peer, answer = https_get(https_port, certs / "gw.pem")
        except OSError:
            return None
        return answer if peer == expected else None

    answer = wait_until(lambda: served(first), 20, what="the gateway serving the files")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b'"web"' in body, answer
    rotated = write_certificate(certs)
    assert rotated != first
    wait_until(lambda: served(rotated), 20, what="the rotated certificate")


AUTO_PASSTHROUGH = """\
apiVersion: v1
kind: Service
metadata: {{name: secure, namespace: default}}
spec:
  selector: {{app: secure}}
  ports: [{{name: tls, port: 443, targetPort: {app_port}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: secure-1, namespace: default, labels: {{app: secure}}}}
status: {{podIP: {app}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: cross-network, namespace: default}}
spec:
  selector: {{istio: eastwestgateway}}
  servers:
  - port: {{number: {port}, name: tls, protocol: TLS}}
    tls: {{mode: AUTO_PASSTHROUGH}}
    hosts: ["*.local"]
"""


def tls_backend(address: str, port: int, certs: Path) -> socket.socket:
    """A TLS server answering ``pong:<what it read>`` once per connection, in a thread."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs / "gw.pem", certs / "gw.key")

    def answer(raw: socket.socket) -> None:
        with context.wrap_socket(raw, server_side=True) as tls:
            tls.sendall(b"pong:" + tls.recv(1024))

    return serve(address, port, answer)


def tls_exchange(port: int, sni: str) -> tuple[bytes, bytes]:
    """A TLS client naming ``sni``, trusting anything: (the server's certificate, answer)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=3) as raw, \
            context.wrap_socket(raw, server_hostname=sni) as tls:
        tls.sendall(b"ping")
        return tls.getpeercert(binary_form=True) or b"", tls.recv(1024)


@pytest.mark.parametrize("proxy", ["envoy", "native"])
def test_auto_passthrough_sends_each_connection_to_the_cluster_its_sni_names(
        mesh: LocalMesh, tmp_path: Path, proxy: str) -> None:
    """Istio's east-west gateway (samples/multicluster/expose-services.yaml): no
    VirtualService; the SNI ``outbound_.PORT_.SUBSET_.HOST`` picks the cluster and the
    client's TLS goes through to the backend untouched."""
    port, app_port = free_port(), free_port(APP)
    backend_cert = write_certificate(tmp_path / "certs")
    listener = tls_backend(APP, app_port, tmp_path / "certs")
    try:
        mesh.write("mesh.yaml", AUTO_PASSTHROUGH.format(app=APP, app_port=app_port, port=port))
        mesh.start_discovery()
        mesh.start_proxy("eastwest-1", "default", labels={"istio": "eastwestgateway"},
                         extra=["--proxy", proxy])
        mesh.wait_synced("eastwest-1.default")
        sni = "outbound_.443_._.secure.default.svc.cluster.local"
        cert, answer = wait_until(lambda: tls_exchange(port, sni), 15,
                                  what="TLS through the AUTO_PASSTHROUGH gateway")
        assert (cert, answer) == (backend_cert, b"pong:ping")  # the backend's own TLS
        # An SNI naming no cluster finds none: the gateway closes the connection.
        with pytest.raises((OSError, ssl.SSLError)):
            tls_exchange(port, "outbound_.443_._.missing.default.svc.cluster.local")
    finally:
        listener.close()


LOCALITY = """\
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: {app_port}}}]
---
apiVersion: v1
kind: Node
metadata:
  name: node-east
  labels: {{topology.kubernetes.io/region: us-east, topology.kubernetes.io/zone: us-east-1a}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web-near, namespace: default, labels: {{app: web}}}}
spec: {{nodeName: node-east, containers: [{{name: web, image: web}}]}}
status: {{podIP: {near}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-far
  namespace: default
  labels: {{app: web, topology.kubernetes.io/region: eu-west,
           topology.kubernetes.io/zone: eu-west-1a}}
status: {{podIP: {far}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web, namespace: default}}
spec:
  host: web
  trafficPolicy:
    outlierDetection: {{consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m,
                       maxEjectionPercent: 100}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: {port}, name: http, protocol: HTTP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [edge]
  http: [{{route: [{{destination: {{host: web, port: {{number: 80}}}}}}]}}]
"""


@pytest.mark.parametrize("proxy", ["envoy", "native"])
def test_locality_failover_sends_traffic_away_only_when_local_endpoints_fail(
        mesh: LocalMesh, proxy: str) -> None:
    """The gateway runs in us-east/us-east-1a (its agent's --locality); one endpoint is
    on a Node there, the other in eu-west. With outlier detection, every request goes to
    the near one while it answers, and to the far one once it stops answering."""
    port, app_port = free_port(), free_port("127.0.20.5")
    near, far = "127.0.20.5", "127.0.20.6"
    mesh.write("mesh.yaml", LOCALITY.format(app_port=app_port, port=port, near=near, far=far))
    mesh.start_discovery()
    near_app = mesh.start_apps([f"web:near@{near}:{app_port}"], name="near")
    mesh.start_apps([f"web:far@{far}:{app_port}"], name="far")
    mesh.start_proxy("gw-1", "default", labels={"istio": "ingressgateway"},
                     extra=["--locality", "us-east/us-east-1a", "--proxy", proxy])
    mesh.wait_synced("gw-1.default")

    def version() -> str:
        answer = http(f"http://127.0.0.1:{port}/", timeout=2)
        return str(answer.json()["version"]) if answer.status == 200 else ""

    wait_until(version, 15, what="the gateway to route")
    assert {version() for _ in range(20)} == {"near"}
    near_app.stop()
    wait_until(lambda: version() == "far", 15, what="failover to eu-west")
    assert {version() for _ in range(20)} == {"far"}


TUNNEL = """\
apiVersion: v1
kind: Service
metadata: {{name: egress-proxy, namespace: default}}
spec:
  selector: {{app: egress-proxy}}
  ports: [{{name: http, port: 3128, targetPort: {proxy_port}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: egress-proxy-1, namespace: default, labels: {{app: egress-proxy}}}}
status: {{podIP: {app}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: egress-proxy, namespace: default}}
spec:
  host: egress-proxy
  trafficPolicy:
    tunnel: {{protocol: CONNECT, targetHost: db.example.com, targetPort: 5432}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: {port}, name: tcp, protocol: TCP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [edge]
  tcp: [{{route: [{{destination: {{host: egress-proxy, port: {{number: 3128}}}}}}]}}]
"""


def connect_proxy(address: str, port: int, seen: list[bytes]) -> socket.socket:
    """An HTTP CONNECT proxy that answers the tunnel itself: ``tunneled:<bytes>``."""

    def tunnel(conn: socket.socket) -> None:
        head = read_head(conn)
        seen.append(head.split(b"\r\n")[0])
        conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
        data = head.partition(b"\r\n\r\n")[2] or conn.recv(4096)
        conn.sendall(b"tunneled:" + data)

    return serve(address, port, tunnel)


@pytest.mark.parametrize("proxy", ["envoy", "native"])
def test_tunnel_carries_tcp_through_an_http_connect_proxy(mesh: LocalMesh, proxy: str) -> None:
    """DestinationRule tunnel: the gateway's tcp_proxy opens ``CONNECT db.example.com:5432``
    to the proxy host, and the client's bytes go through the tunnel."""
    port, proxy_port = free_port(), free_port(APP)
    seen: list[bytes] = []
    listener = connect_proxy(APP, proxy_port, seen)
    try:
        mesh.write("mesh.yaml", TUNNEL.format(app=APP, proxy_port=proxy_port, port=port))
        mesh.start_discovery()
        mesh.start_proxy("gw-1", "default", labels={"istio": "ingressgateway"},
                         extra=["--proxy", proxy])
        mesh.wait_synced("gw-1.default")

        def exchange() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=3) as conn:
                conn.sendall(b"hello")
                return conn.recv(1024)

        assert wait_until(exchange, 15, what="bytes through the tunnel") == b"tunneled:hello"
        assert seen[-1] == b"CONNECT db.example.com:5432 HTTP/1.1"
    finally:
        listener.close()


EXT_AUTHZ = WEB + """\
apiVersion: v1
kind: Service
metadata: {{name: ext-authz, namespace: default}}
spec:
  selector: {{app: ext-authz}}
  ports: [{{name: http, port: 8000, targetPort: {authz_port}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: ext-authz-1, namespace: default, labels: {{app: ext-authz}}}}
status: {{podIP: {authz}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: {port}, name: http, protocol: HTTP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [edge]
  http: [{{route: [{{destination: {{host: web, port: {{number: 80}}}}}}]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ext, namespace: default}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  action: CUSTOM
  provider: {{name: sample-ext-authz}}
  rules: [{{to: [{{operation: {{paths: ["/admin*"]}}}}]}}]
"""

EXT_AUTHZ_MESH = """\
mesh:
  extensionProviders:
  - name: sample-ext-authz
    envoyExtAuthzHttp:
      service: ext-authz.default.svc.cluster.local
      port: 8000
      includeRequestHeadersInCheck: [x-ext-authz]
      headersToUpstreamOnAllow: [x-user]
      headersToDownstreamOnDeny: [x-reason]
"""


def ext_authz_server(address: str, port: int, checked: list[str]) -> socket.socket:
    """Answers Envoy's HTTP checks: 403 (x-reason) when ``x-ext-authz: deny`` came along,
    else 200 with ``x-user`` for the upstream."""

    def check(conn: socket.socket) -> None:
        lines = read_head(conn).decode(errors="replace").split("\r\n")
        checked.append(lines[0].split(" ")[1])
        denied = any(line.lower() == "x-ext-authz: deny" for line in lines)
        conn.sendall(b"HTTP/1.1 403 Forbidden\r\nx-reason: nope\r\ncontent-length: 0\r\n"
                     b"connection: close\r\n\r\n" if denied else
                     b"HTTP/1.1 200 OK\r\nx-user: alice\r\ncontent-length: 0\r\n"
                     b"connection: close\r\n\r\n")

    return serve(address, port, check)


def start_custom_gateway(mesh: LocalMesh, config: str, mesh_config: str, proxy: str,
                         port: int) -> str:
    """Discovery with ``config`` and the provider's mesh config, the app, and the gateway
    the CUSTOM policy selects; once the provider's denial comes through, the base URL."""
    mesh.write("mesh.yaml", config)
    mesh.start_discovery(mesh_config=mesh_config)
    mesh.start_apps([f"web:v1@{APP}:{APP_PORT}"])
    mesh.start_proxy("gw-1", "default", labels={"istio": "ingressgateway"},
                     extra=["--proxy", proxy])
    mesh.wait_synced("gw-1.default")
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: http(base + "/admin/x", headers={"x-ext-authz": "deny"}).status == 403,
               15, what="the provider's denial")
    return base


@pytest.mark.parametrize("proxy", ["envoy", "native"])
def test_custom_authorization_asks_the_ext_authz_provider(mesh: LocalMesh, proxy: str) -> None:
    """AuthorizationPolicy CUSTOM with an envoyExtAuthzHttp provider from the mesh config:
    only requests the policy's rules select are checked; a denial reaches the client with
    the provider's header, an allow passes the provider's header upstream."""
    port, authz = free_port(), "127.0.20.7"
    authz_port = free_port(authz)
    checked: list[str] = []
    listener = ext_authz_server(authz, authz_port, checked)
    try:
        base = start_custom_gateway(mesh, EXT_AUTHZ.format(
            app=APP, app_port=APP_PORT, port=port, authz=authz, authz_port=authz_port),
            EXT_AUTHZ_MESH, proxy, port)
        deny = {"x-ext-authz": "deny"}
        denied = http(base + "/admin/x", headers=deny)
        assert denied.headers.get("x-reason") == "nope"
        allowed = http(base + "/admin/x")
        assert allowed.status == 200 and allowed.json()["headers"]["x-user"] == "alice"
        before = len(checked)
        public = http(base + "/public", headers=deny)  # no rule selects it: never checked
        assert public.status == 200 and len(checked) == before
        assert checked[-1] == "/admin/x"
    finally:
        listener.close()


EXT_AUTHZ_GRPC_MESH = """\
mesh:
  extensionProviders:
  - name: grpc-ext-authz
    envoyExtAuthzGrpc:
      service: ext-authz.default.svc.cluster.local
      port: 8000
      timeout: 2s
"""


class GrpcAuthorization:
    """``envoy.service.auth.v3.Authorization`` on grpcio: denies (403, ``x-reason``, a
    body) when ``x-ext-authz: deny`` came along, else allows with ``x-user`` set upstream,
    ``x-ext-authz`` removed and ``x-checked`` added to the client's answer; records what
    each check carried."""

    def __init__(self, address: str, port: int) -> None:
        import grpc
        from envoy.service.auth.v3 import external_auth_pb2_grpc

        self.checks: list[object] = []
        outer = self

        class Service(external_auth_pb2_grpc.AuthorizationServicer):
            def Check(self, request, context):  # gRPC names the method
                return outer.check(request)

        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(Service(), self.server)
        self.server.add_insecure_port(f"{address}:{port}")
        self.server.start()

    def check(self, request):
        from envoy.config.core.v3 import base_pb2
        from envoy.service.auth.v3 import external_auth_pb2
        from google.rpc import status_pb2

        self.checks.append(request)
        headers = request.attributes.request.http.headers
        option = base_pb2.HeaderValueOption
        if headers.get("x-ext-authz") == "deny":
            denied = external_auth_pb2.DeniedHttpResponse(body="denied by grpc")
            denied.status.code = 403
            denied.headers.add(header=base_pb2.HeaderValue(key="x-reason", value="nope"))
            return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=7),
                                                   denied_response=denied)
        ok = external_auth_pb2.OkHttpResponse(headers_to_remove=["x-ext-authz"])
        ok.headers.add(header=base_pb2.HeaderValue(key="x-user", value="alice"),
                       append_action=option.OVERWRITE_IF_EXISTS_OR_ADD)
        ok.response_headers_to_add.add(header=base_pb2.HeaderValue(key="x-checked",
                                                                   value="yes"))
        return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=0),
                                               ok_response=ok)


@pytest.mark.parametrize("proxy", ["envoy", "native"])
def test_custom_authorization_asks_a_grpc_ext_authz_provider(mesh: LocalMesh,
                                                             proxy: str) -> None:
    """The same policy with an envoyExtAuthzGrpc provider: the gateway asks
    ``Authorization/Check`` over HTTP/2 with the request's attributes; the answer's header
    edits reach the upstream and the client, a denial its status, headers and body."""
    port, authz = free_port(), "127.0.20.8"
    authz_port = free_port(authz)
    service = GrpcAuthorization(authz, authz_port)
    try:
        config = EXT_AUTHZ.format(app=APP, app_port=APP_PORT, port=port, authz=authz,
                                  authz_port=authz_port)
        config = config.replace("name: http, port: 8000", "name: grpc, port: 8000")
        base = start_custom_gateway(
            mesh, config.replace("sample-ext-authz", "grpc-ext-authz"), EXT_AUTHZ_GRPC_MESH,
            proxy, port)
        deny = {"x-ext-authz": "deny"}
        denied = http(base + "/admin/x", headers=deny)
        assert denied.headers.get("x-reason") == "nope"
        assert denied.body == b"denied by grpc"
        allowed = http(base + "/admin/x?q=1", headers={"x-ext-authz": "allow"})
        assert allowed.status == 200 and allowed.headers.get("x-checked") == "yes"
        seen = allowed.json()["headers"]
        assert seen["x-user"] == "alice" and "x-ext-authz" not in seen
        check = service.checks[-1].attributes
        assert (check.request.http.method, check.request.http.path) == ("GET", "/admin/x?q=1")
        assert check.request.http.headers[":path"] == "/admin/x?q=1"
        assert check.request.http.headers["x-ext-authz"] == "allow"
        assert check.source.address.socket_address.address == "127.0.0.1"
        before = len(service.checks)
        public = http(base + "/public", headers=deny)  # no rule selects it: never checked
        assert public.status == 200 and len(service.checks) == before
    finally:
        service.server.stop(None)


TELEMETRY = CONFIG + """\
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: edge, namespace: default}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  accessLogging:
  - providers: [{{name: envoy}}]
    filter: {{expression: "response.code >= 400"}}
  metrics:
  - providers: [{{name: prometheus}}]
    overrides:
    - match: {{metric: REQUEST_COUNT}}
      tagOverrides:
        response_flags: {{operation: REMOVE}}
        request_host: {{value: "request.host"}}
        team: {{value: "request.headers['x-team']"}}
    - match: {{metric: REQUEST_DURATION}}
      disabled: true
"""


@pytest.mark.parametrize("proxy", ["envoy", "native"])
def test_telemetry_filters_access_logs_and_overrides_metrics(mesh: LocalMesh, proxy: str
                                                            ) -> None:
    """A Telemetry selecting the gateway: only failed requests are logged (CEL filter);
    istio_requests_total loses response_flags and gains request_host and a header's value;
    the duration histogram is off."""
    http_port, tcp_port = free_port(), free_port()
    mesh.write("mesh.yaml", TELEMETRY.format(app=APP, app_port=APP_PORT, http_port=http_port,
                                             tcp_port=tcp_port))
    mesh.start_discovery()
    mesh.start_apps([f"web:v1@{APP}:{APP_PORT}"])
    gateway = mesh.start_proxy("gw-1", "default", labels={"istio": "ingressgateway"},
                               extra=["--proxy", proxy])
    mesh.wait_synced("gw-1.default")
    base = f"http://127.0.0.1:{http_port}"
    wait_until(lambda: http(base + "/ok", headers={"x-team": "blue"}).status == 200, 15,
               what="the gateway to route")
    assert http(base + "/status/404", headers={"x-team": "blue"}).status == 404

    def metrics() -> str:
        return http(f"{gateway.status}/stats/prometheus").body.decode()

    text = wait_until(lambda: t if 'request_host="127.0.0.1' in (t := metrics()) else None,
                      15, what="istio_requests_total with the upserted tag")
    series = [line for line in text.splitlines()
              if line.startswith("istio_requests_total{")]
    assert series and all('team="blue"' in line and "response_flags" not in line
                          for line in series), series
    assert "istio_request_duration_milliseconds_bucket" not in text
    assert "istio_request_bytes_bucket" in text  # the others stay
    log = wait_until(lambda: t if '"GET /status/404' in (t := gateway.process.log(400))
                     else None, 10, what="the failed request's access log line")
    assert '"GET /ok HTTP/1.1" 200' not in log


CLUSTERS = """\
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: {app_port}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: default}}
spec:
  host: {name}
  trafficPolicy: {policy}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: ["{name}.example.com"]
  gateways: [edge]
  http: [{{route: [{{destination: {{host: {name}, port: {{number: 80}}}}}}]}}]
---
"""
EDGE = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: {port}, name: http, protocol: HTTP}}, hosts: ["*"]}}]
"""
BACKENDS = ("127.0.20.7", "127.0.20.8", "127.0.20.9")


def web_pods(addresses: tuple[str, ...]) -> str:
    return "".join(f"""\
apiVersion: v1
kind: Pod
metadata: {{name: web-{i}, namespace: default, labels: {{app: web}}}}
status: {{podIP: {address}}}
---
""" for i, address in enumerate(addresses))


def gateway_with(mesh: LocalMesh, proxy: str, policies: dict[str, str], apps: int = 3
                 ) -> tuple[int, Proxy]:
    """Discovery, ``apps`` (1-3) demo apps (versions v0, v1, ...) behind every service in
    ``policies`` (each with that DestinationRule trafficPolicy, served as
    NAME.example.com) and a gateway: (the gateway's port, the gateway)."""
    port, app_port = free_port(), free_port(BACKENDS[0])
    mesh.write("mesh.yaml", web_pods(BACKENDS[:apps]) + "".join(
        CLUSTERS.format(name=name, app_port=app_port, policy=policy)
        for name, policy in policies.items()) + EDGE.format(port=port))
    mesh.start_discovery(mesh_config=ACCESS_LOGS)
    mesh.start_apps([f"web:v{i}@{a}:{app_port}" for i, a in enumerate(BACKENDS[:apps])])
    gateway = mesh.start_proxy("gw-1", "default", labels={"istio": "ingressgateway"},
                               extra=["--proxy", proxy])
    mesh.wait_synced("gw-1.default")
    return port, gateway


def version(port: int, host: str, headers: dict[str, str] | None = None,
            path: str = "/") -> str:
    answer = http(f"http://127.0.0.1:{port}{path}", {"host": host, **(headers or {})},
                  timeout=5)
    return str(answer.json()["version"]) if answer.status == 200 else str(answer.status)


@pytest.mark.parametrize("proxy", ["envoy", "native"])
def test_consistent_hash_keeps_each_key_on_one_backend(mesh: LocalMesh, proxy: str) -> None:
    port, _ = gateway_with(mesh, proxy, {
        "byheader": "{loadBalancer: {consistentHash: {httpHeaderName: x-user}}}",
        "bycookie": "{loadBalancer: {consistentHash: {httpCookie: {name: sticky, ttl: 60s},"
                    " maglev: {tableSize: 1021}}}}",
    })
    host = "byheader.example.com"
    wait_until(lambda: version(port, host).startswith("v"), 15, what="the gateway to route")
    for user in ("ann", "bob", "cy"):
        assert len({version(port, host, {"x-user": user}) for _ in range(8)}) == 1
    # different keys spread over the three
    assert len({version(port, host, {"x-user": f"user-{i}"}) for i in range(40)}) == 3

    # A cookie with a ttl: the proxy makes it, sets it, and the client sticks with it.
    host = "bycookie.example.com"
    wait_until(lambda: version(port, host).startswith("v"), 15, what="the cookie route")
    answer = http(f"http://127.0.0.1:{port}/", {"host": host}, timeout=5)
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("sticky=") and "Max-Age=60" in cookie
    value = cookie.split(";")[0]
    first = answer.json()["version"]
    assert {version(port, host, {"cookie": value}) for _ in range(8)} == {first}


def answer_503(conn: socket.socket) -> None:
    while read_head(conn):
        conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nsick")


def web_stat(proxy: Proxy, name: str) -> int:
    """A counter or gauge of the web service's cluster, from the proxy's admin ``/stats``
    (Envoy names the cluster by its ``alt_stat_name``, which ends in ``;``)."""
    text = http(f"{proxy.admin}/stats", timeout=5).body.decode()
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key.startswith("cluster.outbound|80||web.default.svc.cluster.local") and \
                key.endswith(f".{name}"):
            return int(value)
    return 0


@pytest.mark.parametrize("proxy", ["envoy", "native"])
def test_outlier_detection_ejects_a_backend_answering_503(mesh: LocalMesh, proxy: str) -> None:
    """Two demo apps and one that answers 503: after its first 503 the sick one is ejected
    and gets no more requests while the others take all the traffic."""
    port, app_port = free_port(), free_port(BACKENDS[0])
    seen: list[int] = []

    def sick(conn: socket.socket) -> None:
        seen.append(1)
        answer_503(conn)

    mesh.write("mesh.yaml", web_pods(BACKENDS) + CLUSTERS.format(
        name="web", app_port=app_port,
        policy="{outlierDetection: {consecutive5xxErrors: 1, interval: 1s, "
               "baseEjectionTime: 5m, maxEjectionPercent: 50}}") + EDGE.format(port=port))
    listener = serve(BACKENDS[2], app_port, sick)
    try:
        mesh.start_discovery()
        mesh.start_apps([f"web:v{i}@{a}:{app_port}" for i, a in enumerate(BACKENDS[:2])])
        gateway = mesh.start_proxy("gw-1", "default", labels={"istio": "ingressgateway"},
                                   extra=["--proxy", proxy])
        mesh.wait_synced("gw-1.default")
        host = "web.example.com"
        wait_until(lambda: version(port, host).startswith("v"), 15, what="routing")
        for _ in range(30):  # Istio's default retries hide the 503 from the client
            version(port, host)
            if web_stat(gateway, "outlier_detection.ejections_active") == 1:
                break
        assert web_stat(gateway, "outlier_detection.ejections_active") == 1
        assert web_stat(gateway, "outlier_detection.ejections_enforced_total") == 1
        before = len(seen)
        assert {version(port, host) for _ in range(30)} == {"v0", "v1"}
        assert len(seen) == before
    finally:
        listener.close()


@pytest.mark.parametrize("proxy", ["envoy", "native"])
def test_max_connections_one_overflows_with_503_uo(mesh: LocalMesh, proxy: str) -> None:
    """maxConnections 1 and one pending request: of six slow requests at once, one is
    served at a time, one waits, the rest get a local 503 flagged UO."""
    port, gateway = gateway_with(mesh, proxy, {
        "web": "{connectionPool: {tcp: {maxConnections: 1}, "
               "http: {http1MaxPendingRequests: 1, maxRetries: 0}}}"}, apps=1)
    host = "web.example.com"
    wait_until(lambda: version(port, host).startswith("v"), 15, what="routing")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda _: http(
            f"http://127.0.0.1:{port}/delay/1", {"host": host}, timeout=10).status, range(6)))
    assert statuses.count(200) >= 2 and statuses.count(503) >= 3, statuses
    assert web_stat(gateway, "upstream_rq_pending_overflow") >= 3
    wait_until(lambda: " UO " in gateway.process.log(100), 10,
               what="the access log to flag UO")


TCP_HASHED = """\
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  selector: {{app: web}}
  ports: [{{name: tcp, port: 9000, targetPort: {app_port}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web, namespace: default}}
spec:
  host: web
  trafficPolicy: {{loadBalancer: {{consistentHash: {{useSourceIp: true}}}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: {port}, name: tcp, protocol: TCP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [edge]
  tcp: [{{route: [{{destination: {{host: web, port: {{number: 9000}}}}}}]}}]
"""


def version_from(source: str, port: int) -> str:
    """A request over TCP through the gateway from ``source`` (a loopback address)."""
    with socket.socket() as conn:
        conn.settimeout(5)
        conn.bind((source, 0))
        conn.connect(("127.0.0.1", port))
        conn.sendall(b"GET / HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return json.loads(body)["version"] if b" 200 " in head.split(b"\r\n")[0] else ""


@pytest.mark.parametrize("proxy", ["envoy", "native"])
def test_tcp_hashes_on_the_source_ip(mesh: LocalMesh, proxy: str) -> None:
    port, app_port = free_port(), free_port(BACKENDS[0])
    mesh.write("mesh.yaml", web_pods(BACKENDS) + TCP_HASHED.format(app_port=app_port,
                                                                   port=port))
    mesh.start_discovery()
    mesh.start_apps([f"web:v{i}@{a}:{app_port}" for i, a in enumerate(BACKENDS)])
    mesh.start_proxy("gw-1", "default", labels={"istio": "ingressgateway"},
                     extra=["--proxy", proxy])
    mesh.wait_synced("gw-1.default")
    wait_until(lambda: version_from("127.0.0.1", port), 15, what="TCP through the gateway")
    sources = [f"127.0.31.{i}" for i in range(1, 25)]
    for source in sources[:3]:
        assert len({version_from(source, port) for _ in range(5)}) == 1
    assert len({version_from(source, port) for source in sources}) > 1
