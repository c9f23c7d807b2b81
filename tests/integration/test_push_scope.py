"""A change reaches only the proxies whose resources change."""

from __future__ import annotations

import pytest

from pilotfish.testing.mesh import LocalMesh
from pilotfish.testing.processes import free_port, http, wait_until

pytestmark = pytest.mark.envoy


def gateway(name: str, label: str, port: int, prefix: str) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: edge}}
spec:
  selector: {{istio: {label}}}
  servers: [{{port: {{number: {port}, name: http, protocol: HTTP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: edge}}
spec:
  hosts: ["*"]
  gateways: [{name}]
  http:
  - match: [{{uri: {{prefix: {prefix}}}}}]
    directResponse: {{status: 200, body: {{string: "{name}{prefix}"}}}}
"""


def responses(mesh: LocalMesh, proxy_id: str) -> dict[str, int]:
    for connection in http(f"{mesh.debug}/debug/adsz").json():
        if connection["proxy"].split("~")[2] == proxy_id:
            return {"responses": connection["responses"], "bytes": connection["bytes_sent"]}
    raise AssertionError(f"{proxy_id} is not connected")


def test_route_change_for_one_gateway_leaves_the_other_alone(tmp_path):
    port_a, port_b = free_port(), free_port()
    with LocalMesh(tmp_path) as mesh:
        mesh.write("a.yaml", gateway("gw-a", "a", port_a, "/one"))
        mesh.write("b.yaml", gateway("gw-b", "b", port_b, "/one"))
        mesh.start_discovery()
        mesh.start_proxy("a", "edge", labels={"istio": "a"})
        mesh.start_proxy("b", "edge", labels={"istio": "b"}, xds_mode="sotw")
        mesh.wait_synced("a.edge")
        mesh.wait_synced("b.edge")
        before_b = responses(mesh, "b.edge")
        before_a = responses(mesh, "a.edge")
        mesh.write("a.yaml", gateway("gw-a", "a", port_a, "/two"))
        wait_until(lambda: http(f"http://127.0.0.1:{port_a}/two").status == 200, 3,
                   what="gateway a to get the new route")
        mesh.wait_synced("a.edge")
        assert responses(mesh, "a.edge")["responses"] > before_a["responses"]
        assert responses(mesh, "b.edge") == before_b  # nothing at all was sent to b
        assert http(f"http://127.0.0.1:{port_b}/one").body == b"gw-b/one"
