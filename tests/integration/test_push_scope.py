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


SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.7.1, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: old, namespace: legacy}
spec: {clusterIP: 10.96.7.2, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: legacy}
spec: {clusterIP: 10.96.7.3, ports: [{name: tcp, port: 5432}]}
"""


def sidecar_egress(*hosts: str) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: shop}}
spec:
  egress: [{{hosts: {list(hosts)!r}}}]
"""


def outbound_hosts(proxy) -> set[str]:
    clusters = next(c for c in proxy.config_dump()["configs"]
                    if c["@type"].endswith("ClustersConfigDump"))
    names = [e["cluster"]["name"] for e in clusters.get("dynamic_active_clusters", [])]
    return {n.split("|")[3] for n in names if n.startswith("outbound|")}


def test_sidecar_egress_exclusion_keeps_a_namespace_out_of_envoy(tmp_path):
    with LocalMesh(tmp_path) as mesh:
        mesh.write("services.yaml", SERVICES)
        mesh.write("sidecar.yaml", sidecar_egress("*/*", "~legacy/*"))
        mesh.start_discovery()
        proxy = mesh.start_proxy("web-0", "shop", proxy_type="sidecar", ip="127.0.41.1",
                                 labels={"app": "web"})
        mesh.wait_synced("web-0.shop")
        assert outbound_hosts(proxy) == {"web.shop.svc.cluster.local"}
        mesh.write("sidecar.yaml", sidecar_egress("*/*", "~legacy/db.legacy.svc.cluster.local"))
        wait_until(lambda: outbound_hosts(proxy) == {"web.shop.svc.cluster.local",
                                                     "old.legacy.svc.cluster.local"}, 10,
                   what="the excluded host alone to stay out")
