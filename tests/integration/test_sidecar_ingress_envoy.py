"""Sidecar ``ingress[]`` listeners on a real Envoy sidecar: they replace the ports the
workload's services give, deliver to their ``defaultEndpoint``, and with ``captureMode:
NONE`` bind a listener of their own (here reached without iptables)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

from pilotfish.plugins.envoy.backend import envoy_binary
from pilotfish.testing.certs import self_signed
from pilotfish.testing.mesh import LocalMesh
from pilotfish.testing.processes import free_port, http, wait_until

pytestmark = pytest.mark.envoy

envoy_binary()  # part of the dev install: a missing binary fails loudly, never skips

POD = "127.0.42.1"

CONFIG = """\
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: 9999}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: web, namespace: shop}}
spec:
  workloadSelector: {{labels: {{app: web}}}}
  ingress:
  - port: {{number: {captured}, protocol: HTTP, name: http}}
    defaultEndpoint: 127.0.0.1:{app_port}
  - port: {{number: {plain}, protocol: HTTP, name: http-direct}}
    bind: {pod}
    captureMode: NONE
    defaultEndpoint: 127.0.0.1:{app_port}
  - port: {{number: {tls}, protocol: HTTPS, name: https-direct}}
    bind: {pod}
    captureMode: NONE
    defaultEndpoint: 127.0.0.1:{app_port}
    tls: {{mode: SIMPLE, serverCertificate: {certs}/web.pem, privateKey: {certs}/web.key}}
"""



def test_sidecar_ingress_listeners_replace_the_service_ports(mesh: LocalMesh,
                                                             tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    cert, key = self_signed("web.example.com")
    (certs / "web.pem").write_bytes(cert)
    (certs / "web.key").write_bytes(key)
    captured, plain, tls = free_port(POD), free_port(POD), free_port(POD)
    app_port = free_port()
    mesh.write("shop.yaml", CONFIG.format(captured=captured, plain=plain, tls=tls, pod=POD,
                                          app_port=app_port, certs=certs))
    mesh.start_discovery()
    mesh.start_apps([f"web:v1@127.0.0.1:{app_port}"])
    proxy = mesh.start_proxy("web-0", "shop", proxy_type="sidecar", ip=POD,
                             labels={"app": "web"})
    mesh.wait_synced("web-0.shop")
    # Bound ingress listeners: reached at bind:port, delivered to 127.0.0.1:app_port.
    answer = wait_until(lambda: (r := http(f"http://{POD}:{plain}/x", timeout=2)).status == 200
                        and r, 15, what="the bound ingress listener")
    assert answer.json()["path"] == "/x"
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((POD, tls), timeout=3) as raw, \
            context.wrap_socket(raw, server_hostname="web.example.com") as conn:
        conn.sendall(b"GET /secure HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        assert conn.getpeercert(binary_form=True) == ssl.PEM_cert_to_DER_cert(cert.decode())
    # The captured one is a virtualInbound chain to inbound|PORT||, in place of the
    # service's target port 9999.
    dump = proxy.config_dump()
    listeners = next(c for c in dump["configs"] if c["@type"].endswith("ListenersConfigDump"))
    inbound = next(entry["active_state"]["listener"] for entry in listeners["dynamic_listeners"]
                   if entry["name"] == "virtualInbound")
    ports = {c.get("filter_chain_match", {}).get("destination_port")
             for c in inbound["filter_chains"]}
    assert captured in ports and 9999 not in ports
    clusters = next(c for c in dump["configs"] if c["@type"].endswith("ClustersConfigDump"))
    names = {e["cluster"]["name"] for e in clusters["dynamic_active_clusters"]}
    assert {f"inbound|{captured}||", f"inbound|{plain}||", f"inbound|{tls}||"} <= names
