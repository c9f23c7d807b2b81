"""Gateway credentials on cases Istio's test data does not hold: the Secret looked up in
the gateway pods' namespace rather than the Gateway's, MUTUAL servers and their CA,
certificates judged by the time passed in, PASSTHROUGH servers."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import attrs

from pilotfish.analysis import gateway_credentials
from pilotfish.analysis.base import Finding
from pilotfish.cli import analyze
from pilotfish.core import meshconfig
from pilotfish.testing.certs import self_signed

POD = """\
apiVersion: v1
kind: Pod
metadata: {name: ingress-0, namespace: istio-system, labels: {istio: ingress}}
spec: {containers: [{name: istio-proxy, image: proxyv2}]}
"""


def secret(name: str, namespace: str, **data: bytes) -> str:
    encoded = ", ".join(f"{k}: {base64.b64encode(v).decode()}" for k, v in data.items())
    return f"""\
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: {namespace}}}
type: Opaque
data: {{{encoded}}}
"""


def gateway(name: str, credential: str, mode: str = "SIMPLE", namespace: str = "shop") -> str:
    return f"""\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {{istio: ingress}}
  servers:
  - port: {{number: 443, name: https-{name}, protocol: HTTPS}}
    hosts: [{name}.example.com]
    tls: {{mode: {mode}, credentialName: {credential}}}
"""


def run(tmp_path: Path, config: str, now: float | None = None) -> list[Finding]:
    (tmp_path / "config.yaml").write_text(config)
    inputs, _ = analyze.load(tmp_path, meshconfig.MeshConfig())
    if now is not None:
        inputs = attrs.evolve(inputs, now=now)
    return list(gateway_credentials.analyze(inputs))


def test_the_secret_is_looked_up_where_the_gateway_pods_run(tmp_path: Path) -> None:
    cert, key = self_signed("a.example.com", days=30)
    config = POD + secret("web-cert", "shop", cert=cert, key=key) \
        + secret("edge-cert", "istio-system", cert=cert, key=key) \
        + gateway("web", "web-cert") + gateway("edge", "edge-cert")
    (missing,) = run(tmp_path, config)
    assert missing.check.code == "PF0120" and missing.key is not None
    assert missing.key.name == "web"
    assert missing.field == "spec.servers[0].tls.credentialName"
    assert "no Secret istio-system/web-cert" in missing.message


def test_mutual_servers_need_a_ca_in_the_secret_or_beside_it(tmp_path: Path) -> None:
    cert, key = self_signed("a.example.com", days=30)
    config = POD + secret("plain", "istio-system", cert=cert, key=key) \
        + secret("with-ca", "istio-system", cert=cert, key=key, cacert=cert) \
        + secret("beside", "istio-system", cert=cert, key=key) \
        + secret("beside-cacert", "istio-system", cacert=cert) \
        + gateway("plain", "plain", "MUTUAL") + gateway("ca", "with-ca", "MUTUAL") \
        + gateway("beside", "beside", "MUTUAL") + gateway("simple", "plain")
    (found,) = [f for f in run(tmp_path, config) if f.check.code != "PF0122"]
    assert found.check.code == "PF0121" and found.key is not None
    assert found.key.name == "plain" and "MUTUAL" in found.message


def test_expiry_is_judged_by_the_time_passed_in(tmp_path: Path) -> None:
    cert, key = self_signed("a.example.com", days=1)
    config = POD + secret("short", "istio-system", cert=cert, key=key) \
        + gateway("web", "short") + gateway("raw", "nowhere", "PASSTHROUGH")
    assert run(tmp_path, config) == []  # now, and PASSTHROUGH needs no credential
    (expired,) = run(tmp_path, config, now=time.time() + 3 * 86400)
    assert expired.check.code == "PF0121" and "expired on" in expired.message
    (early,) = run(tmp_path, config, now=time.time() - 86400)
    assert "not valid before" in early.message


def test_a_certificate_shared_by_gateways_on_the_same_proxies(tmp_path: Path) -> None:
    cert, key = self_signed("*.example.com", days=30)
    files = """\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: %s, namespace: shop}
spec:
  selector: %s
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [%s.example.com]
    tls: {mode: SIMPLE, serverCertificate: /etc/certs/tls.crt, privateKey: /etc/certs/tls.key}
"""
    config = POD + secret("wild", "istio-system", cert=cert, key=key) \
        + gateway("a", "wild") + gateway("b", "wild") \
        + gateway("c", "wild", "PASSTHROUGH") \
        + files % ("d", "{istio: ingress}", "d") + files % ("e", "{istio: ingress}", "e") \
        + files % ("f", "{istio: other}", "f")
    found = [(f.key.name if f.key else "", f.field, f.severity.value)
             for f in run(tmp_path, config)]
    assert found == [
        ("a", "spec.servers[0].tls.credentialName", "warning"),
        ("b", "spec.servers[0].tls.credentialName", "warning"),
        ("d", "spec.servers[0].tls.serverCertificate", "warning"),
        ("e", "spec.servers[0].tls.serverCertificate", "warning"),
    ]
