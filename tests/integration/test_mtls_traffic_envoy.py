"""The mesh mTLS scheme, RBAC and JWT carry real traffic through a real Envoy, and through
the native proxy given the same static bootstrap.

One proxy plays both sides. Server listeners are built from the inbound chain builder
(`sidecar_inbound.port_chains`) in each mode; their terminal filters answer directly
(``app`` over HTTP with the peer's SPIFFE ID in ``x-peer``; TCP echoes). Client
listeners send HTTP through clusters carrying the auto-mTLS socket matches. The agent's SDS
is not part of this test: the same secret names are served statically from the bootstrap,
so everything else is exactly what the translators push. Python plays the clients Envoy
cannot: plaintext, an application's own TLS, another mesh identity.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import socket
import ssl
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.echo.v3 import echo_pb2
from google.protobuf import json_format

from pilotfish.core.protocol import Protocol
from pilotfish.core.security_policies import AuthzPolicy, MtlsMode
from pilotfish.core.sniffing import HTTP_INSPECTOR, TLS_INSPECTOR
from pilotfish.core.yamlload import load_text
from pilotfish.plugins.envoy.backend import envoy_binary
from pilotfish.testing.processes import Process, free_port, http, wait_until
from pilotfish.translators import auto_mtls
from pilotfish.translators.common import pack
from pilotfish.translators.http_filters import http_connection_manager
from pilotfish.translators.jwt_authn import jwt_filter
from pilotfish.translators.listener_filters import listener_filter
from pilotfish.translators.peer_authn import PortKind
from pilotfish.translators.rbac import http_rbac_filters, network_rbac_filters
from pilotfish.translators.sidecar_inbound import port_chains

pytestmark = pytest.mark.envoy

TRUST_DOMAIN = "cluster.local"
WEB = f"spiffe://{TRUST_DOMAIN}/ns/shop/sa/web"
INTRUDER = f"spiffe://{TRUST_DOMAIN}/ns/other/sa/intruder"
ISSUER = "https://issuer.example.com"


# -- certificates and tokens ---------------------------------------------------------------


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, text)])


def _certificate(subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool,
                 uri: str = "") -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if uri:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_identities(folder: Path) -> dict[str, Path]:
    """A mesh root and workload certificates for ``web`` and ``intruder``."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _certificate("mesh root", root_key, "mesh root", root_key, ca=True)
    paths = {"root": folder / "root.pem"}
    paths["root"].write_bytes(_pem(root))
    for name, uri in (("web", WEB), ("intruder", INTRUDER)):
        key = ec.generate_private_key(ec.SECP256R1())
        paths[name] = folder / f"{name}.pem"
        paths[name].write_bytes(_pem(_certificate(name, key, "mesh root", root_key, ca=False,
                                                  uri=uri)))
        paths[f"{name}-key"] = folder / f"{name}-key.pem"
        paths[f"{name}-key"].write_bytes(_key_pem(key))
    return paths


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


SIGNER = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks() -> str:
    numbers = SIGNER.public_key().public_numbers()
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    return json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "kid": "k1", "use": "sig",
                                 "e": "AQAB", "n": _b64(n)}]})


def token(claims: dict[str, Any], key: Any = SIGNER) -> str:
    head = _b64(json.dumps({"alg": "RS256", "kid": "k1", "typ": "JWT"}).encode())
    body = _b64(json.dumps({"exp": 4102444800, **claims}).encode())
    signature = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{_b64(signature)}"


# -- the Envoy under test -------------------------------------------------------------------


def _app_http(name: str, auth: list[Any]) -> Any:
    route = rc_pb2.Route(match=rc_pb2.RouteMatch(prefix="/"),
                         direct_response=rc_pb2.DirectResponseAction(status=200))
    route.direct_response.body.inline_string = "app"
    vhost = rc_pb2.VirtualHost(name=name, domains=["*"], routes=[route])
    vhost.response_headers_to_add.add(header={"key": "x-peer",
                                              "value": "%DOWNSTREAM_PEER_URI_SAN%"})
    return http_connection_manager(name, route_config=route_pb2.RouteConfiguration(
        name=name, virtual_hosts=[vhost]), auth_filters=auth)


def _app_tcp() -> lc_pb2.Filter:
    return lc_pb2.Filter(name="envoy.filters.network.echo", typed_config=pack(echo_pb2.Echo()))


def _static_secrets(tree: Any) -> Any:
    """The SDS references as pushed, pointed at the bootstrap's static secrets instead."""
    if isinstance(tree, dict):
        return {k: _static_secrets(v) for k, v in tree.items() if k != "sdsConfig"}
    if isinstance(tree, list):
        return [_static_secrets(v) for v in tree]
    return tree


def server_listener(name: str, port: int, kind: PortKind, mode: MtlsMode,
                    auth: Sequence[Any] = (), tcp_guards: Sequence[Any] = ()) -> dict[str, Any]:
    chains = port_chains(None, kind, mode, names=(name, name), trust_domain=TRUST_DOMAIN,
                         http=lambda: _app_http(name, list(auth)), tcp=_app_tcp,
                         tcp_guards=tcp_guards)
    return _static_secrets({
        "name": name,
        "address": {"socketAddress": {"address": "127.0.0.1", "portValue": port}},
        "listenerFilters": [json_format.MessageToDict(listener_filter(TLS_INSPECTOR)),
                            json_format.MessageToDict(listener_filter(HTTP_INSPECTOR))],
        "listenerFiltersTimeout": "1s",
        "continueOnListenerFiltersTimeout": True,
        "filterChains": [json_format.MessageToDict(c) for c in chains],
    })


def client(name: str, port: int, target: int, sans: list[str], mesh_endpoint: bool = True
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    """A plaintext HTTP listener sending everything to a cluster with auto mTLS."""
    cluster = {
        "name": name, "type": "STATIC", "connect_timeout": "2s",
        "transportSocketMatches": [json_format.MessageToDict(m) for m in
                                   auto_mtls.socket_matches(f"outbound_.80_._.{name}", sans,
                                                            Protocol.HTTP)],
        "loadAssignment": {"clusterName": name, "endpoints": [{"lbEndpoints": [{
            "endpoint": {"address": {"socketAddress": {"address": "127.0.0.1",
                                                        "portValue": target}}},
            "metadata": {"filterMetadata": {"envoy.transport_socket_match": {
                "tlsMode": "istio"}}} if mesh_endpoint else {},
        }]}]},
    }
    route = rc_pb2.Route(match=rc_pb2.RouteMatch(prefix="/"),
                         route=rc_pb2.RouteAction(cluster=name))
    manager = http_connection_manager(f"client_{name}", route_config=route_pb2.RouteConfiguration(
        name=name, virtual_hosts=[rc_pb2.VirtualHost(name=name, domains=["*"],
                                                     routes=[route])]))
    listener = {"name": f"client_{name}",
                "address": {"socketAddress": {"address": "127.0.0.1", "portValue": port}},
                "filterChains": [{"filters": [json_format.MessageToDict(manager)]}]}
    return _static_secrets(listener), _static_secrets(cluster)


def authz(yaml_text: str) -> list[AuthzPolicy]:
    objects, errors = load_text(yaml_text, "policy.yaml")
    assert not errors, errors
    return [AuthzPolicy(o.name, o.namespace, str(o.spec.get("action") or "ALLOW"),
                        tuple(o.spec.get("rules") or ())) for o in objects]


ONLY_WEB = authz("""\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-web, namespace: shop}
spec: {rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: shop}
spec: {action: DENY, rules: [{to: [{operation: {paths: [/admin*]}}]}]}
""")

JWT_POLICY = authz(f"""\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: jwt-for-secure, namespace: shop}}
spec:
  action: DENY
  rules: [{{from: [{{source: {{notRequestPrincipals: ["*"]}}}}],
           to: [{{operation: {{paths: [/secure]}}}}]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: alice-only, namespace: shop}}
spec:
  action: DENY
  rules: [{{from: [{{source: {{notRequestPrincipals: ["{ISSUER}/alice"]}}}}],
           to: [{{operation: {{paths: [/alice]}}}}]}}]
""")


def request_authn() -> Any:
    text = json.dumps({"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
                       "metadata": {"name": "jwt", "namespace": "shop"},
                       "spec": {"jwtRules": [{"issuer": ISSUER, "jwks": jwks()}]}})
    objects, errors = load_text(text, "ra.yaml")
    assert not errors, errors
    return objects


@pytest.fixture(scope="module", params=["envoy", "native"])
def mesh(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[dict[str, Any]]:
    work = Path(tmp_path_factory.mktemp(f"mtls-{request.param}"))
    certs = make_identities(work)
    ports = {name: free_port() for name in (
        "permissive", "strict", "disable", "tcp", "rbac", "rbac_tcp", "http_deny_on_tcp", "jwt",
        "to_permissive", "to_strict", "to_plain_endpoint", "wrong_san", "to_rbac", "admin")}
    servers = [
        server_listener("permissive", ports["permissive"], PortKind.HTTP, MtlsMode.PERMISSIVE),
        server_listener("strict", ports["strict"], PortKind.HTTP, MtlsMode.STRICT),
        server_listener("disable", ports["disable"], PortKind.HTTP, MtlsMode.DISABLE),
        server_listener("tcp", ports["tcp"], PortKind.TCP, MtlsMode.PERMISSIVE),
        server_listener("rbac", ports["rbac"], PortKind.HTTP, MtlsMode.STRICT,
                        auth=http_rbac_filters(ONLY_WEB)),
        server_listener("rbac_tcp", ports["rbac_tcp"], PortKind.TCP, MtlsMode.STRICT,
                        tcp_guards=network_rbac_filters(ONLY_WEB[:1])),
        server_listener("http_deny_on_tcp", ports["http_deny_on_tcp"], PortKind.TCP,
                        MtlsMode.STRICT, tcp_guards=network_rbac_filters(ONLY_WEB)),
        server_listener("jwt", ports["jwt"], PortKind.HTTP, MtlsMode.DISABLE,
                        auth=[*jwt_filter(request_authn()), *http_rbac_filters(JWT_POLICY)]),
    ]
    clients = [
        client("to_permissive", ports["to_permissive"], ports["permissive"], [WEB]),
        client("to_strict", ports["to_strict"], ports["strict"], [WEB]),
        client("to_plain_endpoint", ports["to_plain_endpoint"], ports["permissive"], [WEB],
               mesh_endpoint=False),
        client("wrong_san", ports["wrong_san"], ports["strict"], [INTRUDER]),
        client("to_rbac", ports["to_rbac"], ports["rbac"], [WEB]),
    ]
    bootstrap = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": ports["admin"]}}},
        "static_resources": {
            "listeners": servers + [listener for listener, _ in clients],
            "clusters": [cluster for _, cluster in clients],
            "secrets": [
                {"name": "default", "tls_certificate": {
                    "certificate_chain": {"filename": str(certs["web"])},
                    "private_key": {"filename": str(certs["web-key"])}}},
                {"name": "ROOTCA", "validation_context": {
                    "trusted_ca": {"filename": str(certs["root"])}}},
            ],
        },
    }
    path = work / "envoy.json"
    path.write_text(json.dumps(bootstrap, indent=1))
    command = [str(envoy_binary()), "-c", str(path), "--disable-hot-restart",
               "--base-id", str(ports["admin"]), "-l", "warning"] \
        if request.param == "envoy" else \
        [sys.executable, "-m", "pilotfish.core.native", "-c", str(path), "-l", "warning"]
    process = Process(request.param, command, work / f"{request.param}.log").start()
    try:
        for port in ports.values():
            wait_until(lambda p=port: _connects(p), what=f"Envoy listening on {port}")
        yield {"ports": ports, "certs": certs}
    finally:
        process.stop()


def _connects(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def get(port: int, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, str]:
    result = http(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=5)
    return result.status, result.headers.get("x-peer", "")


def mesh_tls(certs: dict[str, Path], identity: str | None, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(certs["root"])
    if identity:
        context.load_cert_chain(certs[identity], certs[f"{identity}-key"])
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def tls_get(port: int, context: ssl.SSLContext, path: str = "/") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n".encode())
        return _read_all(sock)


def tls_echo(port: int, context: ssl.SSLContext) -> bytes:
    """Send ``ping`` through mTLS to an echoing TCP app; what comes back (b'' if closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw) as sock:
        try:
            sock.sendall(b"ping")
            return _read_upto(sock, 4)
        except (ConnectionResetError, ssl.SSLError):
            return b""


def _read_upto(sock: socket.socket, size: int) -> bytes:
    out = b""
    while len(out) < size and (chunk := sock.recv(size - len(out))):
        out += chunk
    return out


def client_hello(alpn: list[str]) -> bytes:
    """The first flight of a TLS client, as bytes on the wire."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    with contextlib.suppress(ssl.SSLWantReadError):
        context.wrap_bio(incoming, outgoing).do_handshake()
    return outgoing.read()


def _read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(4096):
        out += chunk
    return out


def plain_get(port: int) -> bytes:
    """Plaintext HTTP over a raw socket: b'' when the server closes on us."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        try:
            return _read_all(sock)
        except ConnectionResetError:
            return b""


# -- mTLS modes -------------------------------------------------------------------------------


def test_auto_mtls_reaches_permissive_and_strict_servers_as_the_workload(
        mesh: dict[str, Any]) -> None:
    ports = mesh["ports"]
    assert get(ports["to_permissive"]) == (200, WEB)
    assert get(ports["to_strict"]) == (200, WEB)


def test_endpoints_without_the_mark_get_plaintext(mesh: dict[str, Any]) -> None:
    assert get(mesh["ports"]["to_plain_endpoint"]) == (200, "")


def test_a_server_outside_the_expected_identities_is_refused(mesh: dict[str, Any]) -> None:
    assert get(mesh["ports"]["wrong_san"])[0] == 503


def test_permissive_accepts_plaintext_and_strict_refuses_it(mesh: dict[str, Any]) -> None:
    ports = mesh["ports"]
    assert plain_get(ports["permissive"]).startswith(b"HTTP/1.1 200")
    assert plain_get(ports["disable"]).startswith(b"HTTP/1.1 200")
    assert plain_get(ports["strict"]) == b""


def test_strict_requires_a_client_certificate(mesh: dict[str, Any]) -> None:
    certs = mesh["certs"]
    assert b"200 OK" in tls_get(mesh["ports"]["strict"], mesh_tls(certs, "web", ["istio"]))
    # TLS 1.3: the client's handshake is over before the server checks its certificate;
    # the refusal shows on the first read, as an alert (Envoy) or the connection closed
    # without one (the native proxy: Python's TLS drops the alert of a failed handshake)
    try:
        answer = tls_get(mesh["ports"]["strict"], mesh_tls(certs, None, ["istio"]))
    except (ssl.SSLError, ConnectionResetError):
        answer = b""
    assert answer == b""


def test_disable_serves_no_tls(mesh: dict[str, Any]) -> None:
    with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
        tls_get(mesh["ports"]["disable"], mesh_tls(mesh["certs"], "web", ["istio"]))


def test_permissive_tcp_tells_mesh_tls_from_the_apps_own_tls(mesh: dict[str, Any]) -> None:
    certs, port = mesh["certs"], mesh["ports"]["tcp"]
    # A mesh client (ALPN istio) is terminated: the app's bytes come through the tunnel.
    assert tls_echo(port, mesh_tls(certs, "web", ["istio"])) == b"ping"
    # TLS without the mesh ALPN is the application's own: the app (an echo here) gets the
    # ClientHello untouched, where the mTLS chain would have answered with a ServerHello.
    hello = client_hello(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(hello)
        assert _read_upto(sock, len(hello)) == hello
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"ping")
        assert _read_upto(sock, 4) == b"ping"  # and plaintext is plaintext


# -- authorization ----------------------------------------------------------------------------


def test_allow_by_principal_and_deny_by_path_over_http(mesh: dict[str, Any]) -> None:
    ports, certs = mesh["ports"], mesh["certs"]
    assert get(ports["to_rbac"]) == (200, WEB)
    assert get(ports["to_rbac"], "/admin/users")[0] == 403  # DENY wins over ALLOW
    intruder = tls_get(ports["rbac"], mesh_tls(certs, "intruder", ["istio"]))
    assert intruder.startswith(b"HTTP/1.1 403")


def test_tcp_rbac_closes_the_connection_of_other_principals(mesh: dict[str, Any]) -> None:
    port, certs = mesh["ports"]["rbac_tcp"], mesh["certs"]
    assert tls_echo(port, mesh_tls(certs, "web", ["istio"])) == b"ping"
    assert tls_echo(port, mesh_tls(certs, "intruder", ["istio"])) == b""


def test_an_http_only_deny_rule_denies_all_tcp(mesh: dict[str, Any]) -> None:
    # DENY paths /admin* cannot be checked on TCP: the rule loses its path and matches all.
    port, certs = mesh["ports"]["http_deny_on_tcp"], mesh["certs"]
    assert tls_echo(port, mesh_tls(certs, "web", ["istio"])) == b""


# -- JWT --------------------------------------------------------------------------------------


def test_jwt_missing_passes_invalid_fails_and_required_paths_need_one(
        mesh: dict[str, Any]) -> None:
    port = mesh["ports"]["jwt"]
    alice = token({"iss": ISSUER, "sub": "alice"})
    bob = token({"iss": ISSUER, "sub": "bob"})
    forged = token({"iss": ISSUER, "sub": "alice"},
                   rsa.generate_private_key(public_exponent=65537, key_size=2048))
    bearer = {"Authorization": f"Bearer {alice}"}
    assert get(port, "/open")[0] == 200
    assert get(port, "/open", {"Authorization": f"Bearer {forged}"})[0] == 401
    assert get(port, "/secure")[0] == 403
    assert get(port, "/secure", bearer)[0] == 200
    assert get(port, "/alice", bearer)[0] == 200
    assert get(port, "/alice", {"Authorization": f"Bearer {bob}"})[0] == 403
