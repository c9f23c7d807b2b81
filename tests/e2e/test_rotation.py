"""Certificates rotate under load: two-minute workload certificates, steady traffic for over
five minutes through STRICT mTLS with a fresh handshake per request, discovery killed half
way; not one request may fail, every sidecar's serial must change, the root must not.

The longest test of the suite (about six minutes): rotation only shows with time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import mesh_config as mc
import pytest
import security_config as sc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import load_pem_x509_certificate

from pilotfish.testing.node import Node, leftovers
from pilotfish.testing.processes import wait_until

pytestmark = [pytest.mark.envoy, pytest.mark.e2e]

TTL = "2m"
LOAD_SECONDS = 320  # over five minutes
SAMPLE_EVERY = 10.0
KILL_AT = 150.0

CONFIG = {
    "namespace.yaml": sc.namespace("rot", True),
    "server.yaml": sc.server_service("rot") + "---\n" + sc.server("rot"),
    "client.yaml": mc.pod("client", "rot", {"app": "client"}, mc.serve("client")),
    "policies.yaml": """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: rot}
spec: {mtls: {mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: server, namespace: rot}
spec:
  host: server
  # A new upstream connection, so a new mTLS handshake, for every request.
  trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 1}}}
""",
}


NETWORKS = {"envoy": ("10.248.0.0/24", "pfr0"), "native": ("10.248.1.0/24", "pfr1")}


@pytest.fixture(scope="module", params=["envoy", "native"])
def node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Node]:
    workdir = tmp_path_factory.mktemp("rotation-node")
    folder = workdir / "config"
    folder.mkdir()
    for name, text in CONFIG.items():
        (folder / name).write_text(text)
    subnet, bridge = NETWORKS[request.param]
    node = Node(workdir, folder, subnet, bridge,
                extra_args=("--cert-ttl", TTL, "--proxy", request.param))
    try:
        node.start()
        assert node.config_errors() == []
        yield node
    finally:
        names = [p["netns"] for p in node.status()["pods"]]
        node.stop()
        node.down()
        assert leftovers(node, names) == []


def sidecars(node: Node) -> list[str]:
    return [f"{p['name']}.{p['namespace']}" for p in node.status()["pods"] if p["sidecar"] != "-"]


def held(node: Node, pod: str) -> dict[str, list[x509.Certificate]]:
    """The proxy's secrets. On each renewal the agent closes the proxy's xDS connection so
    that it reconnects with the new certificate; proxy-config finds the proxy through
    discovery, so ask again while it reconnects (half a second, Envoy's first backoff)."""
    return wait_until(lambda: node.proxy_certificates(pod), 15, interval=0.5,
                      what=f"{pod} to be connected to discovery")


def restart_discovery(node: Node, pods: list[str]) -> None:
    """Kill discovery outright; the node's supervisor starts it again (as a Deployment),
    and every proxy reconnects over mTLS with the certificate it holds."""
    old = node.discovery_pid()
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: node.discovery_pid() != old and node.discovery_ready(), 60,
               what="discovery to come back")
    for pod in pods:
        wait_until(lambda pod=pod: node.proxy_certificates(pod), 60, interval=1,
                   what=f"{pod} to reconnect to discovery")


@pytest.mark.timeout(LOAD_SECONDS + 180)
def test_certificates_rotate_under_load_without_a_failed_request(node: Node):
    root_file = node.state_dir / "discovery" / "root-cert.pem"
    root = root_file.read_bytes()
    pods = sidecars(node)
    assert sorted(pods) == ["client.rot", "server.rot"]
    first = {pod: held(node, pod)["default"][0] for pod in pods}
    for cert in first.values():
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert lifetime.total_seconds() <= 120 + 2 * 60 + 5  # TTL, plus Istio's 2 min backdate

    errors = (node.workdir / "load.err").open("w")  # a pipe nobody reads could fill up
    load = subprocess.Popen(
        node.cli("exec", "--state-dir", str(node.state_dir), "client.rot", "--",
                 sys.executable, "-m", "pilotfish.testing.load",
                 "--url", "http://server.rot:9080/rotation", "--seconds", str(LOAD_SECONDS)),
        stdout=subprocess.PIPE, stderr=errors, text=True)
    serials: dict[str, list[int]] = {pod: [first[pod].serial_number] for pod in pods}
    at_restart: dict[str, int] = {}
    start = time.monotonic()
    while load.poll() is None:
        time.sleep(SAMPLE_EVERY)
        if not at_restart and time.monotonic() - start >= KILL_AT:
            at_restart = {pod: serials[pod][-1] for pod in pods}
            restart_discovery(node, pods)
            assert root_file.read_bytes() == root, "discovery made a new root on restart"
        for pod in pods:
            serial = held(node, pod)["default"][0].serial_number
            if serial != serials[pod][-1]:
                serials[pod].append(serial)
    out, _ = load.communicate()
    errors.close()
    assert load.returncode == 0, (node.workdir / "load.err").read_text()
    result = json.loads(out)

    assert result["failed"] == 0, result
    assert result["requests"] > LOAD_SECONDS * 5, result
    assert at_restart, "the load ended before discovery was restarted"
    for pod in pods:
        # Renewal at about half of two minutes: four or more certificates in 320 s.
        assert len(serials[pod]) >= 4, (pod, serials[pod])
        assert serials[pod][-1] != at_restart[pod], f"{pod}: no new certificate after restart"
        secrets = held(node, pod)
        assert secrets["ROOTCA"][0].public_bytes(Encoding.PEM).strip() == root.strip()
        # SDS serves the chain without the root (that is ROOTCA); it leads to the root.
        assert secrets["default"][-1].issuer == load_pem_x509_certificate(root).subject

