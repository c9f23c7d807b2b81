"""The agent's SDS and rotation with real discovery (its CA on 15012) and real Envoy.

A router whose agent has a pod token gets its workload certificate from discovery's CA,
serves ``default`` and ``ROOTCA`` to Envoy over SDS, and Envoy runs its own xDS over mTLS
with them (discovery sees the SPIFFE ID). With a short TTL the certificate is renewed and
pushed while the same Envoy keeps running, and Envoy's xDS reconnects with the new one.
A CA that cannot be reached is retried with backoff; a token that appears late is used.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from pilotfish.core.security import pki, tokens
from pilotfish.testing.certs import ca_signed, self_signed
from pilotfish.testing.mesh import LocalMesh, Proxy
from pilotfish.testing.processes import free_port, http, pilotfish, wait_until
from pilotfish.testing.servers import serve

pytestmark = pytest.mark.envoy

SPIFFE = "spiffe://cluster.local/ns/shop/sa/reviews"
CONFIG = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews.shop.svc.cluster.local
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
"""


class Node:
    """The node's part: its token key pair, and a token file per pod."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.private, public = tokens.generate_keypair()
        self.public_file = workdir / "token-key.pem"
        self.public_file.write_bytes(public)

    def token_file(self, pod: str, *, write: bool = True) -> Path:
        path = self.workdir / f"{pod}.token"
        if write:
            path.write_text(tokens.issue(self.private, "shop", "reviews", pod, 3600))
        return path


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Node:
    return Node(tmp_path_factory.mktemp("node"))


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, node: Node) -> Iterator[LocalMesh]:
    with LocalMesh(tmp_path_factory.mktemp("sds")) as mesh:
        mesh.write("shop.yaml", CONFIG)
        mesh.start_discovery(token_key=node.public_file)
        yield mesh


def identity_args(mesh: LocalMesh, token: Path, *extra: str) -> list[str]:
    return ["--service-account", "reviews", "--token-file", str(token),
            "--root-cert", str(mesh.root_cert), "--ca-address", mesh.secure_address, *extra]


def secure_xds(mesh: LocalMesh) -> list[str]:
    return ["--discovery", mesh.secure_address, "--xds-tls"]


def secrets(proxy: Proxy) -> dict[str, dict[str, Any]]:
    """Envoy's active secrets by name."""
    for config in proxy.config_dump()["configs"]:
        if config["@type"].endswith("SecretsConfigDump"):
            return {e["name"]: e["secret"] for e in config.get("dynamic_active_secrets", [])}
    return {}


def certs(secret: dict[str, Any]) -> list[x509.Certificate]:
    source = (secret.get("tls_certificate", {}).get("certificate_chain")
              or secret["validation_context"]["trusted_ca"])
    return x509.load_pem_x509_certificates(base64.b64decode(source["inline_bytes"]))


def leaf(proxy: Proxy) -> x509.Certificate | None:
    held = secrets(proxy).get("default")
    return certs(held)[0] if held else None


def envoy_pid(proxy: Proxy) -> int:
    """The agent's child: the Envoy it started."""
    assert proxy.process.popen is not None
    agent = proxy.process.popen.pid
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == agent:
                return int(entry.name)
    raise AssertionError(f"agent {agent} has no child process")


def uri(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def identity_of(mesh: LocalMesh, proxy_id: str) -> str:
    return next((i["identity"] for i in mesh.syncz() if i["proxy"] == proxy_id), "")


def test_envoy_gets_default_and_rootca_and_runs_xds_over_mtls(mesh: LocalMesh, node: Node):
    proxy = mesh.start_proxy("gw-1", "shop", extra=[
        *identity_args(mesh, node.token_file("gw-1")), *secure_xds(mesh)])
    held = wait_until(lambda: secrets(proxy).keys() >= {"default", "ROOTCA"} and secrets(proxy),
                      20, what="default and ROOTCA in Envoy's config dump")
    [cert] = certs(held["default"])  # the leaf; the root is not sent in the chain
    assert uri(cert) == [SPIFFE]
    assert held["default"]["tls_certificate"]["private_key"]["inline_bytes"] == \
        base64.b64encode(b"[redacted]").decode()
    assert certs(held["ROOTCA"]) == x509.load_pem_x509_certificates(
        mesh.root_cert.read_bytes())
    # Envoy's ADS went through the relay under mTLS: discovery knows who is connected.
    mesh.wait_synced("gw-1.shop")
    assert identity_of(mesh, "gw-1.shop") == SPIFFE


def test_plaintext_xds_with_mesh_mtls_clusters_and_proxy_config_secret(mesh: LocalMesh,
                                                                       node: Node):
    # xDS in plaintext: Envoy asks for the secrets only for the ISTIO_MUTUAL cluster, with
    # the SDS config the translators generate.
    mesh.start_proxy("gw-3", "shop", extra=identity_args(mesh, node.token_file("gw-3")))
    mesh.wait_synced("gw-3.shop")
    assert identity_of(mesh, "gw-3.shop") == ""  # 15010: nobody is authenticated
    debug = f"127.0.0.1:{mesh.debug_port}"

    def run(*extra: str) -> str:
        return subprocess.run(
            pilotfish("proxy-config", "secret", "gw-3.shop", "--discovery-address", debug,
                      *extra), capture_output=True, text=True, check=True).stdout

    def table() -> list[str]:
        rows = run().splitlines()
        return rows if len(rows) == 3 else []

    header, *rows = wait_until(table, 20, what="two secrets in proxy-config secret")
    assert header.split()[:4] == ["RESOURCE", "NAME", "TYPE", "STATUS"]
    assert header.split()[-3:] == ["SPIFFE", "ID", "ROOT"]
    default = next(r for r in rows if r.startswith("default"))
    assert re.match(r"default\s+Cert Chain\s+ACTIVE\s+true\s+[0-9a-f]+\s+\S+Z\s+\S+Z\s+"
                    + re.escape(SPIFFE) + r"\s+O=cluster.local$", default)
    assert re.match(r"ROOTCA\s+CA\s+ACTIVE\s+true\s+[0-9a-f]+", next(
        r for r in rows if r.startswith("ROOTCA")))
    data = json.loads(run("-o", "json"))
    assert data["@type"] == "type.googleapis.com/envoy.admin.v3.SecretsConfigDump"
    assert {e["name"] for e in data["dynamic_active_secrets"]} == {"default", "ROOTCA"}


def test_rotation_pushes_new_certificates_to_the_same_envoy(mesh: LocalMesh, node: Node):
    proxy = mesh.start_proxy("gw-2", "shop", extra=[
        *identity_args(mesh, node.token_file("gw-2"), "--cert-ttl", "6s"), *secure_xds(mesh)])
    first = wait_until(lambda: leaf(proxy), 20, what="a first certificate")
    pid = envoy_pid(proxy)
    uptime = http(f"{proxy.admin}/server_info").json()["uptime_current_epoch"]
    serials = {first.serial_number}

    def renewed_twice() -> bool:
        current = leaf(proxy)
        if current is not None:
            serials.add(current.serial_number)
        return len(serials) >= 3

    wait_until(renewed_twice, 30, interval=0.2, what="two renewals reaching Envoy")
    assert envoy_pid(proxy) == pid  # no restart, no hot restart
    info = http(f"{proxy.admin}/server_info").json()
    assert info["state"] == "LIVE"
    assert info["command_line_options"].get("restart_epoch", 0) == 0
    assert float(info["uptime_current_epoch"].rstrip("s")) > float(uptime.rstrip("s"))
    # Each renewal cut the relayed xDS connection; Envoy came back with the new certificate.
    mesh.wait_synced("gw-2.shop", timeout=15)
    assert identity_of(mesh, "gw-2.shop") == SPIFFE
    log = proxy.process.log(400)
    assert "renewed certificate" in log
    assert "closed 1 xDS connection(s) so the proxy reconnects with the new certificate" in log
    discovery = (mesh.workdir / "discovery.log").read_text()
    assert len(re.findall(r"gw-2\.shop-\d+ connected", discovery)) >= 2
    assert "proven by certificate" in discovery  # renewals authenticate with the old one


def test_a_new_root_in_the_root_file_reaches_envoy_and_renews(mesh: LocalMesh, node: Node,
                                                              tmp_path: Path):
    roots = tmp_path / "root-cert.pem"
    roots.write_bytes(mesh.root_cert.read_bytes())
    args = identity_args(mesh, node.token_file("gw-6"))
    args[args.index("--root-cert") + 1] = str(roots)
    proxy = mesh.start_proxy("gw-6", "shop", extra=[*args, *secure_xds(mesh)])
    first = wait_until(lambda: leaf(proxy), 20, what="a first certificate")
    new_root, _ = pki.self_signed_root("cluster.local", time.time())
    roots.write_text(mesh.root_cert.read_text() + pki.cert_pem(new_root))

    def both_roots() -> bool:
        held = secrets(proxy).get("ROOTCA")
        return held is not None and len(certs(held)) == 2

    wait_until(both_roots, 20, what="ROOTCA with the added root")  # polled every 5 s
    renewed = wait_until(lambda: (c := leaf(proxy)) is not None and
                         c.serial_number != first.serial_number, 10,
                         what="a renewal after the trust bundle changed")
    assert renewed
    assert new_root in certs(secrets(proxy)["ROOTCA"])
    assert "changed (2 roots): renewing the certificate; pushing ROOTCA" in \
        proxy.process.log(100)
    mesh.wait_synced("gw-6.shop", timeout=15)  # discovery's root is still trusted


def test_a_token_that_appears_late_is_used_after_retries(mesh: LocalMesh, node: Node):
    token = node.token_file("gw-4", write=False)
    log_file = mesh.workdir / "proxy-gw-4.log"
    stop = threading.Event()

    def write_once_missed() -> None:  # the token appears once the agent has missed it
        while not stop.wait(0.1):
            if log_file.exists() and "cannot read the pod token" in log_file.read_text():
                node.token_file("gw-4")
                return

    writer = threading.Thread(target=write_once_missed, daemon=True)
    writer.start()
    try:
        proxy = mesh.start_proxy("gw-4", "shop", extra=[
            *identity_args(mesh, token), *secure_xds(mesh)])
        assert wait_until(lambda: leaf(proxy), 20, what="a certificate") is not None
    finally:
        stop.set()
        writer.join()
    log = proxy.process.log(200)
    assert re.search(r"cannot get a workload certificate \(attempt 1\): cannot read the pod "
                     r"token \(--token-file\) \S+: No such file or directory; retrying in "
                     r"\d+\.\ds; the proxy has no certificate yet", log)


def test_an_unreachable_ca_is_retried_with_backoff(tmp_path: Path, node: Node):
    with LocalMesh(tmp_path) as mesh:
        mesh.write("shop.yaml", CONFIG.split("---")[0])
        mesh.start_discovery(token_key=node.public_file)
        closed = f"127.0.0.1:{free_port()}"
        args = identity_args(mesh, node.token_file("gw-5"))
        args[args.index("--ca-address") + 1] = closed
        proxy = mesh.start_proxy("gw-5", "shop", extra=args)  # plaintext xDS: goes LIVE

        def attempts() -> list[float]:
            found = re.findall(r"cannot get a workload certificate \(attempt \d+\): "
                               r"CreateCertificate at " + re.escape(closed) +
                               r": UNAVAILABLE: .*; retrying in (\d+\.\d)s; the proxy has "
                               r"no certificate yet", proxy.process.log(200))
            return [float(w) for w in found] if len(found) >= 4 else []

        waits = wait_until(attempts, 30, what="four failed attempts in the agent's log")
        # 0.5 s growing 1.5x, each randomized by ±50 %.
        for attempt, wait in enumerate(waits[:4]):
            nominal = 0.5 * 1.5 ** attempt
            assert nominal * 0.5 - 0.05 <= wait <= nominal * 1.5 + 0.05, (attempt, waits)
        assert http(f"{proxy.admin}/ready").status == 200  # Envoy runs on without it
        assert secrets(proxy) == {}


def tls_secret(name: str, namespace: str, cert: bytes, key: bytes) -> str:
    return f"""\
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: {namespace}}}
type: kubernetes.io/tls
data: {{tls.crt: {base64.b64encode(cert).decode()}, tls.key: {base64.b64encode(key).decode()}}}
"""


def credential_gateway(name: str, label: str, port: int) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: shop}}
spec:
  selector: {{istio: {label}}}
  servers:
  - port: {{number: {port}, name: https, protocol: HTTPS}}
    hosts: [web.example.com]
    tls: {{mode: SIMPLE, credentialName: web-cert}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: shop}}
spec:
  hosts: [web.example.com]
  gateways: [{name}]
  http: [{{directResponse: {{status: 200, body: {{string: served}}}}}}]
"""


def served_certificate(port: int) -> bytes:
    """The certificate a TLS server on ``port`` shows for SNI web.example.com (DER)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=3) as raw, \
            context.wrap_socket(raw, server_hostname="web.example.com") as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n")
        assert tls.recv(4096).startswith(b"HTTP/1.1 200")
        return tls.getpeercert(binary_form=True) or b""


@pytest.mark.parametrize("proxy", ["envoy", "native"])
def test_credential_name_secrets_reach_authenticated_gateways_only(mesh: LocalMesh,
                                                                   node: Node, proxy: str):
    """``credentialName`` is a Secret in the gateway's namespace, served by discovery over
    the gateway's ADS on 15012 (as istiod): a rotated Secret is pushed; a gateway on
    plaintext 15010 with the same config gets no secret, and another namespace's Secret of
    that name is never used."""
    secure_port, plain_port = free_port(), free_port()
    first, key = self_signed("web.example.com")
    other, other_key = self_signed("other.example.com")
    mesh.write("credential.yaml", "---\n".join([
        tls_secret("web-cert", "shop", first, key),
        tls_secret("web-cert", "elsewhere", other, other_key),
        credential_gateway("secure", "secure-gw", secure_port),
        credential_gateway("plain", "plain-gw", plain_port)]))
    secure = mesh.start_proxy("gw-secure", "shop", labels={"istio": "secure-gw"}, extra=[
        *identity_args(mesh, node.token_file("gw-secure")), *secure_xds(mesh),
        "--proxy", proxy])
    plain = mesh.start_proxy("gw-plain", "shop", labels={"istio": "plain-gw"},
                             extra=[*identity_args(mesh, node.token_file("gw-plain")),
                                    "--proxy", proxy])
    try:
        _credentials_reach_only_the_secure_gateway(mesh, plain, first, key, secure_port,
                                                   plain_port)
    finally:  # the module's mesh goes on: the next test's gateways take these ports' places
        secure.process.stop()
        plain.process.stop()


def _credentials_reach_only_the_secure_gateway(mesh: LocalMesh, plain: Proxy, first: bytes,
                                               key: bytes, secure_port: int,
                                               plain_port: int) -> None:
    der = ssl.PEM_cert_to_DER_cert(first.decode())
    assert wait_until(lambda: served_certificate(secure_port), 20,
                      what="HTTPS with the Secret's certificate") == der
    assert identity_of(mesh, "gw-secure.shop") == SPIFFE  # ADS came in over 15012
    # Rotation: the Secret changes, the same Envoy serves the new certificate.
    second, second_key = self_signed("web.example.com")
    mesh.write("credential.yaml", mesh.config_dir.joinpath("credential.yaml").read_text()
               .replace(base64.b64encode(first).decode(), base64.b64encode(second).decode())
               .replace(base64.b64encode(key).decode(), base64.b64encode(second_key).decode()))
    wait_until(lambda: served_certificate(secure_port) == ssl.PEM_cert_to_DER_cert(
        second.decode()), 20, what="the rotated certificate")
    # Plaintext xDS: the listener is there, the secret never is.
    mesh.wait_synced("gw-plain.shop")
    assert "kubernetes://web-cert" in json.dumps(plain.config_dump())
    assert "kubernetes://web-cert" not in secrets(plain)
    with pytest.raises((OSError, ssl.SSLError)):
        served_certificate(plain_port)


BACKEND_TLS = """\
apiVersion: v1
kind: Service
metadata: {{name: secure, namespace: shop}}
spec:
  selector: {{app: secure}}
  ports: [{{name: https, port: 443, targetPort: {backend_port}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: secure-1, namespace: shop, labels: {{app: secure}}}}
status: {{podIP: {backend}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: secure-ca, namespace: shop}}
data: {{ca.crt: {ca}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: btls, namespace: shop}}
spec:
  gatewayClassName: istio
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: secure, namespace: shop}}
spec:
  parentRefs: [{{name: btls}}]
  rules: [{{backendRefs: [{{name: secure, port: 443}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: secure, namespace: shop}}
spec:
  targetRefs: [{{group: "", kind: Service, name: secure, sectionName: https}}]
  validation:
    hostname: {hostname}
    caCertificateRefs: [{{group: "", kind: ConfigMap, name: secure-ca}}]
"""


def https_backend(address: str, port: int, cert: bytes, key: bytes, tmp: Path
                  ) -> socket.socket:
    """An HTTPS server answering ``secure:<SNI>`` to every request, in a thread."""
    (tmp / "backend.pem").write_bytes(cert)
    (tmp / "backend.key").write_bytes(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp / "backend.pem", tmp / "backend.key")
    names: list[str] = []
    context.sni_callback = lambda conn, name, ctx: names.append(name or "") and None

    def answer(raw: socket.socket) -> None:
        with context.wrap_socket(raw, server_side=True) as conn:
            conn.recv(4096)
            body = f"secure:{names[-1] if names else ''}".encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n"
                         b"connection: close\r\n\r\n%s" % (len(body), body))

    return serve(address, port, answer)


@pytest.mark.parametrize("proxy", ["envoy", "native"])
@pytest.mark.parametrize("hostname", ["secure.example.com", "wrong.example.com"])
def test_backend_tls_policy_originates_tls_verified_with_the_configmap_ca(
        mesh: LocalMesh, node: Node, tmp_path: Path, hostname: str, proxy: str):
    """BackendTLSPolicy: the router speaks TLS to the backend with the policy's hostname
    as SNI, trusting only the ConfigMap's CA; a hostname the backend's certificate does not
    name fails the handshake (503)."""
    ca, cert, key = ca_signed("secure.example.com")
    backend, port = "127.0.23.4", free_port()
    backend_port = free_port(backend)
    listener = https_backend(backend, backend_port, cert, key, tmp_path)
    router: Proxy | None = None
    try:
        mesh.write("btls.yaml", BACKEND_TLS.format(
            backend=backend, backend_port=backend_port, port=port, hostname=hostname,
            ca=json.dumps(ca.decode())))
        name = f"btls-{hostname.split('.')[0]}"
        router = mesh.start_proxy(
            name, "shop", labels={"gateway.networking.k8s.io/gateway-name": "btls"},
            extra=[*identity_args(mesh, node.token_file(name)), *secure_xds(mesh),
                   "--proxy", proxy])
        mesh.wait_synced(f"{name}.shop")
        answer = wait_until(lambda: (r := http(f"http://127.0.0.1:{port}/", timeout=2)).status
                            in (200, 503) and r, 20, what="the route through the gateway")
        if hostname == "secure.example.com":
            answer = wait_until(lambda: (r := http(f"http://127.0.0.1:{port}/", timeout=2)
                                         ).status == 200 and r, 20, what="TLS to the backend")
            assert answer.body == b"secure:secure.example.com"
        else:
            assert answer.status == 503
    finally:
        if router is not None:  # the module's mesh goes on; the next router serves this
            router.process.stop()
        listener.close()
        mesh.remove("btls.yaml")
