"""Proxyless gRPC with an agent and no proxy (``pilotfish agent --proxy grpc``): Istio's
``grpc-agent`` pods, with real processes throughout.

Discovery runs its CA and authenticated xDS (the ``grpc`` profile, as in
test_grpc_proxyless), the agent gets the pod's certificate with its token and writes it as
files, and writes gRPC's xDS bootstrap naming its own relay socket. The real grpcio xDS
client, given only that bootstrap (``GRPC_XDS_BOOTSTRAP``), resolves and calls the echo
servers, its xDS going plaintext to the relay and from there over mTLS to discovery, which
sees the pod's SPIFFE ID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pilotfish.core.security import tokens
from pilotfish.testing.mesh import LocalMesh
from pilotfish.testing.processes import Process, free_port, http, pilotfish, wait_until
from tests.integration.test_grpc_proxyless import SERVERS, SERVICE, TARGET, TARGET_PORT, pod

SPIFFE = "spiffe://cluster.local/ns/grpc/sa/client"


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    private, public = tokens.generate_keypair()
    (tmp_path / "token-key.pem").write_bytes(public)
    (tmp_path / "client.token").write_text(
        tokens.issue(private, "grpc", "client", "client-1", 3600))
    with LocalMesh(tmp_path) as mesh:
        mesh.processes.append(Process(
            "grpc-v1", [sys.executable, "-m", "pilotfish.testing.grpc_apps", "serve",
                        "--listen", f"{SERVERS['v1']}:{TARGET_PORT}", "--name", "v1"],
            tmp_path / "grpc-v1.log").start())
        mesh.write("echo.yaml", "---\n".join([SERVICE, pod("v1")]))  # test_grpc_proxyless's
        mesh.start_discovery("profile: [sidecar, grpc]\n", token_key=tmp_path / "token-key.pem")
        yield mesh


def start_agent(mesh: LocalMesh, *extra: str, env: dict[str, str]) -> tuple[Process, int]:
    health = free_port()
    args = ["agent", "--proxy", "grpc", "--name", "client-1", "--namespace", "grpc",
            "--ip", "127.0.0.1", "--service-account", "client",
            "--discovery", mesh.secure_address, "--xds-tls", "--ca-address", mesh.secure_address,
            "--token-file", str(mesh.workdir / "client.token"),
            "--root-cert", str(mesh.root_cert),
            "--config-dir", str(mesh.workdir / "xds"),
            "--status-port", str(free_port()), "--health-port", str(health), *extra]
    process = Process("agent", pilotfish(*args), mesh.workdir / "agent.log").start(env=env)
    mesh.processes.append(process)
    return process, health


def test_a_grpc_app_calls_through_the_agents_bootstrap_certificates_and_mtls_relay(
        mesh: LocalMesh):
    certs = mesh.workdir / "certs"
    agent, health = start_agent(mesh, env={"OUTPUT_CERTS": str(certs)})

    def ready() -> bool:
        agent.check_running()
        return http(f"http://127.0.0.1:{health}/healthz/ready", timeout=1).status == 200

    wait_until(ready, 30, what="the agent to be ready (its certificate written)")

    # The certificate files: the pod's identity, a key that goes with it, the mesh root.
    leaf, *_ = x509.load_pem_x509_certificates((certs / "cert-chain.pem").read_bytes())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [SPIFFE]
    key = serialization.load_pem_private_key((certs / "key.pem").read_bytes(), None)
    assert key.public_key() == leaf.public_key()
    assert os.stat(certs / "key.pem").st_mode & 0o077 == 0
    roots = x509.load_pem_x509_certificates((certs / "root-cert.pem").read_bytes())
    assert x509.load_pem_x509_certificate(mesh.root_cert.read_bytes()) in roots

    # The bootstrap: the agent's relay socket, GENERATOR grpc, the files as provider.
    bootstrap_file = mesh.workdir / "xds" / "grpc-bootstrap.json"
    bootstrap = json.loads(bootstrap_file.read_text())
    assert bootstrap["xds_servers"][0]["server_uri"] == f"unix://{mesh.workdir}/xds/XDS"
    assert bootstrap["node"]["metadata"]["GENERATOR"] == "grpc"
    provider = bootstrap["certificate_providers"]["default"]["config"]
    assert provider["certificate_file"] == str(certs / "cert-chain.pem")

    # The real grpcio xDS client, with nothing but that bootstrap.
    env = {"GRPC_XDS_BOOTSTRAP": str(bootstrap_file)}
    done = subprocess.run(
        [sys.executable, "-m", "pilotfish.testing.grpc_apps", "call", "--target", TARGET,
         "--count", "3"], capture_output=True, text=True, timeout=120,
        env={**os.environ, **env})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["health: SERVING", "v1", "v1", "v1"], done.stdout

    # While a client runs, discovery lists it as a grpc proxy with the pod's identity: its
    # xDS came over mTLS with the agent's certificate.
    client = Process("client", [sys.executable, "-m", "pilotfish.testing.grpc_apps", "call",
                                "--target", TARGET, "--count", "3000", "--interval", "0.01"],
                     mesh.workdir / "client.log").start(env=env)
    mesh.processes.append(client)
    wait_until(lambda: "\nv1" in client.log(), 30, what="the client's first answers")
    [seen] = [i for i in mesh.syncz() if i["proxy"] == "client-1.grpc"]
    assert seen["proxy_type"] == "grpc"
    assert seen["identity"] == SPIFFE
    client.stop()

    # No process of its own: SIGTERM ends the agent at once, with 0.
    agent.signal(signal.SIGTERM)
    assert agent.popen is not None
    assert agent.popen.wait(10) == 0


def serial(path: Path) -> int:
    return x509.load_pem_x509_certificates(path.read_bytes())[0].serial_number


def test_a_renewal_rewrites_the_files_and_the_app_redials_with_the_new_certificate(
        mesh: LocalMesh):
    certs = mesh.workdir / "certs"
    agent, health = start_agent(mesh, "--cert-ttl", "6s", "--output-certs", str(certs),
                                env={})
    wait_until(lambda: http(f"http://127.0.0.1:{health}/healthz/ready", timeout=1).status
               == 200, 30, what="the agent to be ready")
    client = Process("client", [sys.executable, "-m", "pilotfish.testing.grpc_apps", "call",
                                "--target", TARGET, "--count", "1500", "--interval", "0.01"],
                     mesh.workdir / "client.log").start(
        env={"GRPC_XDS_BOOTSTRAP": str(mesh.workdir / "xds" / "grpc-bootstrap.json")})
    mesh.processes.append(client)
    wait_until(lambda: "\nv1" in client.log(), 30, what="the client's first answers")
    first = serial(certs / "cert-chain.pem")

    # Renewed at about half of 6 s: new files, and the relayed xDS cut so the app's xDS
    # client handshakes again, with the new certificate.
    wait_until(lambda: serial(certs / "cert-chain.pem") != first, 15,
               what="the renewed certificate in the files")
    wait_until(lambda: "so the proxy reconnects with the new certificate" in agent.log(200),
               10, what="the relay to cut the app's xDS after the renewal")
    answered = client.log(5000).count("\nv1")
    wait_until(lambda: client.log(5000).count("\nv1") > answered + 50, 15,
               what="answers after the reconnect")
    wait_until(lambda: [i for i in mesh.syncz() if i["proxy"] == "client-1.grpc"], 15,
               what="the app's xDS back at discovery")
    assert "error" not in client.log(5000)
