"""mTLS, identities and authorization on the local node, as root, with real Envoy sidecars
and again with native ones.

Namespaces: ``strict`` (PeerAuthentication STRICT), ``perm`` (no policy: PERMISSIVE),
``disabled`` (DISABLE) — all injected — and ``plain`` (no sidecars).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
import security_config as config
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import SubjectAlternativeName, UniformResourceIdentifier

from pilotfish.core import prometheus
from pilotfish.core.prometheus import Sample
from pilotfish.testing.certs import create_certificate, make_csr
from pilotfish.testing.node import Node, leftovers
from pilotfish.testing.processes import http, wait_until

pytestmark = [pytest.mark.envoy, pytest.mark.e2e]



@pytest.fixture(scope="module")
def jwt_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


NETWORKS = {"envoy": ("10.249.0.0/24", "pfs0"), "native": ("10.249.1.0/24", "pfs1")}


@pytest.fixture(scope="module", params=["envoy", "native"])
def node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
         jwt_key: rsa.RSAPrivateKey) -> Iterator[Node]:
    assert os.geteuid() == 0, "the e2e tests run as root (CI does)"
    workdir = tmp_path_factory.mktemp("secure-node")
    jwks = workdir / "jwks.json"
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(jwt_key.public_key()))
    jwks.write_text(json.dumps({"keys": [{**public, "kid": "test", "alg": "RS256"}]}))
    folder = workdir / "config"
    folder.mkdir()
    for name, text in config.documents(jwks).items():
        (folder / name).write_text(text)
    subnet, bridge = NETWORKS[request.param]
    node = Node(workdir, folder, subnet, bridge, extra_args=("--proxy", request.param))
    try:
        node.start()
        assert node.config_errors() == []
        yield node
    finally:
        names = [p["netns"] for p in node.status()["pods"]]
        node.stop()
        node.down()
        assert leftovers(node, names) == []


def pod(node: Node, namespace: str, name: str) -> dict[str, Any]:
    for item in node.status()["pods"]:
        if item["namespace"] == namespace and item["name"] == name:
            return dict(item)
    raise KeyError(f"{namespace}/{name}")


def curl(node: Node, source: str, url: str, *headers: str, method: str = "GET"
         ) -> tuple[int, str]:
    """(status, body) of an HTTP request from a pod; status 0 if the connection failed."""
    args = ["curl", "-s", "-m", "5", "-X", method, "-w", "\n%{http_code}"]
    for header in headers:
        args += ["-H", header]
    out = node.exec(source, [*args, url])
    body, _, code = out.stdout.rpartition("\n")
    return (int(code) if out.returncode == 0 and code.isdigit() else 0), body


# -- PeerAuthentication -------------------------------------------------------------------


def test_strict_refuses_plaintext_and_accepts_mesh_clients(node: Node):
    server_ip = pod(node, "strict", "server")["ip"]
    status, _ = curl(node, "plain/client", f"http://{server_ip}:8080/plain")
    assert status == 0  # plaintext from outside the mesh is refused
    status, body = curl(node, "perm/client", "http://server.strict:9080/mesh")
    assert status == 200 and json.loads(body)["peer"] == "127.0.0.6"


def test_permissive_accepts_both(node: Node):
    server_ip = pod(node, "perm", "server")["ip"]
    assert curl(node, "plain/client", f"http://{server_ip}:8080/open/plain")[0] == 200
    assert curl(node, "strict/client", "http://server.perm:9080/open/mesh")[0] == 200


def wire(node: Node, namespace: str, marker: str, request: Any) -> dict[str, Any]:
    """Capture on the server pod's interface while ``request()`` runs."""
    netns = pod(node, namespace, "server")["netns"]
    sniffer = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-m", "pilotfish.testing.wire",
         "--interface", "eth0", "--port", "8080", "--seconds", "3",
         "--marker", marker],
        stdout=subprocess.PIPE, text=True)
    assert sniffer.stdout is not None
    assert sniffer.stdout.readline().strip() == "capturing"
    request()
    out, _ = sniffer.communicate(timeout=10)
    return dict(json.loads(out))


def test_disable_is_plaintext_on_the_wire_and_strict_is_tls(node: Node):
    seen = wire(node, "disabled", "/wire-check-off",
                lambda: curl(node, "perm/client", "http://server.disabled:9080/wire-check-off"))
    assert seen["marker"] and seen["tls_records"] == 0, seen
    seen = wire(node, "strict", "/wire-check-strict",
                lambda: curl(node, "perm/client", "http://server.strict:9080/wire-check-strict"))
    assert not seen["marker"] and seen["tls_records"] > 0, seen


# -- identities -----------------------------------------------------------------------------


def spiffe_ids(node: Node, namespace: str, name: str) -> list[str]:
    chain = node.proxy_certificates(f"{name}.{namespace}")["default"]
    san = chain[0].extensions.get_extension_for_class(SubjectAlternativeName).value
    return list(san.get_values_for_type(UniformResourceIdentifier))


@pytest.mark.parametrize(("namespace", "name", "account"), [
    ("strict", "server", "server"), ("perm", "client", "client"), ("perm", "other", "other"),
    ("disabled", "server", "server"),
])
def test_every_workload_cert_carries_its_pods_spiffe_id(node, namespace, name, account):
    assert set(spiffe_ids(node, namespace, name)) == {
        f"spiffe://cluster.local/ns/{namespace}/sa/{account}"}


def ca(node: Node) -> tuple[str, bytes]:
    state = json.loads((node.state_dir / "state.json").read_text())
    root = (node.state_dir / "discovery" / "root-cert.pem").read_bytes()
    return state["secure_xds_address"], root


def token_of(node: Node, namespace: str, name: str) -> str:
    netns = pod(node, namespace, name)["netns"]
    return (Path("/run/pilotfish/pods") / netns / "token").read_text()


def test_a_pod_cannot_get_another_accounts_identity(node: Node):
    address, root = ca(node)
    csr, _ = make_csr(uris=["spiffe://cluster.local/ns/perm/sa/other"])
    with pytest.raises(grpc.RpcError) as info:
        create_certificate(address, root, csr, token=token_of(node, "perm", "client"))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "sa/client" in info.value.details()


def test_malformed_csr_gets_a_clear_error_and_discovery_keeps_serving(node: Node):
    address, root = ca(node)
    token = token_of(node, "perm", "client")
    with pytest.raises(grpc.RpcError) as info:
        create_certificate(address, root, "-----BEGIN CERTIFICATE REQUEST-----\nno\n",
                           token=token)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "CSR" in info.value.details() or "csr" in info.value.details()
    csr, _ = make_csr()
    chain = create_certificate(address, root, csr, token=token)
    assert len(chain) >= 2
    assert curl(node, "perm/client", "http://server.strict:9080/still")[0] == 200


# -- AuthorizationPolicy --------------------------------------------------------------------


def test_allow_by_principal_path_and_method(node: Node):
    assert curl(node, "perm/client", "http://server.perm:9080/allowed/x")[0] == 200
    status, body = curl(node, "perm/client", "http://server.perm:9080/allowed/x", method="POST")
    assert status == 403 and "RBAC" in body
    assert curl(node, "perm/other", "http://server.perm:9080/allowed/x")[0] == 403
    assert curl(node, "perm/client", "http://server.perm:9080/elsewhere")[0] == 403


def test_allow_by_namespace(node: Node):
    assert curl(node, "strict/client", "http://server.perm:9080/from-strict/x")[0] == 200
    assert curl(node, "perm/client", "http://server.perm:9080/from-strict/x")[0] == 403


def test_deny_wins_over_allow(node: Node):
    assert curl(node, "perm/client", "http://server.perm:9080/allowed/forbidden")[0] == 403


def test_tcp_connection_closed_for_denied_principal(node: Node):
    assert curl(node, "perm/client", "http://server.strict:9090/tcp")[0] == 200
    assert curl(node, "perm/other", "http://server.strict:9090/tcp")[0] == 0
    assert curl(node, "perm/other", "http://server.strict:9080/http")[0] == 200  # other port


def test_jwt_required_paths(node: Node, jwt_key: rsa.RSAPrivateKey):
    url = "http://server.perm:9080/secure/x"
    assert curl(node, "perm/client", url)[0] == 403  # no token
    bad = jwt.encode({"iss": config.ISSUER, "sub": "u"},
                     rsa.generate_private_key(public_exponent=65537, key_size=2048),
                     algorithm="RS256", headers={"kid": "test"})
    assert curl(node, "perm/client", url, f"Authorization: Bearer {bad}")[0] == 401
    good = jwt.encode({"iss": config.ISSUER, "sub": "user-1", "exp": int(time.time()) + 600},
                      jwt_key, algorithm="RS256", headers={"kid": "test"})
    assert curl(node, "perm/client", url, f"Authorization: Bearer {good}")[0] == 200
    assert curl(node, "perm/client", "http://server.perm:9080/open/x")[0] == 200  # no JWT needed


# -- metrics --------------------------------------------------------------------------------


def test_server_metrics_say_who_called_and_whether_it_was_mutual_tls(node: Node):
    server_ip = pod(node, "perm", "server")["ip"]
    assert curl(node, "perm/client", "http://server.perm:9080/open/metrics")[0] == 200
    assert curl(node, "plain/client", f"http://{server_ip}:8080/open/metrics-plain")[0] == 200

    def requests() -> list[Sample] | None:
        text = http(f"http://{server_ip}:15020/stats/prometheus").body.decode()
        family = {f.name: f for f in prometheus.parse(text, "server")}.get(
            "istio_requests_total")
        seen = [s for s in family.samples if s.label("reporter") == "destination"] \
            if family else []
        policies = {s.label("connection_security_policy") for s in seen}
        return seen if {"mutual_tls", "none"} <= policies else None

    samples = wait_until(requests, 15, interval=0.5, what="both kinds of request counted")
    mutual = [s for s in samples if s.label("connection_security_policy") == "mutual_tls"
              and s.label("source_principal") == "spiffe://cluster.local/ns/perm/sa/client"]
    assert mutual and all(
        s.label("destination_principal") == "spiffe://cluster.local/ns/perm/sa/server"
        and s.label("destination_service") == "server.perm.svc.cluster.local"
        for s in mutual), samples
    plain = [s for s in samples if s.label("connection_security_policy") == "none"]
    assert all(s.label("source_principal") == "unknown" for s in plain), plain
