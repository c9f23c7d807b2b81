"""``pilotfish describe pod``: a running discovery's answer, printed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from pilotfish.testing.mesh import LocalMesh
from pilotfish.testing.processes import pilotfish

CONFIG = """\
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  labels: {app: web, version: v1, security.istio.io/tlsMode: istio}
status: {podIP: 127.0.40.1}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec: {mtls: {mode: STRICT}}
"""


def test_describe_pod_prints_what_discovery_serves_for_it(tmp_path: Path) -> None:
    with LocalMesh(tmp_path) as mesh:
        mesh.write("shop.yaml", CONFIG)
        mesh.start_discovery()
        debug = f"127.0.0.1:{mesh.debug_port}"

        def run(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(pilotfish("describe", "pod", *argv,
                                            "--discovery-address", debug),
                                  capture_output=True, text=True)

        shown = run("web-1.shop")
        assert shown.returncode == 0, shown.stderr
        assert "Pod: web-1.shop" in shown.stdout and "Data plane: sidecar" in shown.stdout
        assert "Port: http 80/HTTP targets pod port 8080" in shown.stdout
        assert "Matching subsets: v1" in shown.stdout
        assert "Workload mTLS mode: STRICT" in shown.stdout and "strict.shop" in shown.stdout
        data = json.loads(run("web-1.shop", "-o", "json").stdout)
        assert data["services"][0]["destinationRule"]["otherSubsets"] == ["v2"]
        missing = run("nope.shop")
        assert missing.returncode != 0
        assert "discovery knows no pod nope.shop" in missing.stderr
