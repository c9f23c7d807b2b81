"""Config the tests share: the smallest mesh that has something to serve."""

from __future__ import annotations

# The Service alone: a sidecar in `shop` gets its cluster, with no endpoint.
WEB_SERVICE_ONLY = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
"""

# One Service with one Pod behind it: a sidecar in `shop` gets a cluster and an endpoint.
WEB_SERVICE = WEB_SERVICE_ONLY + """\
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
status: {podIP: 10.0.0.1}
"""


def backend(name: str, pod_ip: str, target_port: int, *, namespace: str = "default",
            port_name: str = "http", port: int = 80) -> str:
    """A Service ``name`` on ``port`` and one Pod behind it at ``pod_ip:target_port``."""
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: {port_name}, port: {port}, targetPort: {target_port}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}-1, namespace: {namespace}, labels: {{app: {name}}}}}
status: {{podIP: {pod_ip}}}
"""


def ingress_gateway(port: int, *, protocol: str = "HTTP", name: str = "edge",
                    namespace: str = "default") -> str:
    """A Gateway ``name`` for the ``istio: ingressgateway`` proxies, one server on ``port``
    for every host."""
    server = f"port: {{number: {port}, name: {protocol.lower()}, protocol: {protocol}}}"
    return f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{{server}, hosts: ["*"]}}]
"""


def documents(*parts: str) -> str:
    """YAML documents, one after another."""
    return "---\n".join(part if part.endswith("\n") else part + "\n" for part in parts)


def routes_to(host: str, *, gateway: str = "gw", name: str = "shop") -> dict:
    """A VirtualService ``name`` (as an object for the Kubernetes API) sending every host's
    requests through ``gateway`` to ``host``."""
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name},
            "spec": {"hosts": ["*"], "gateways": [gateway],
                     "http": [{"route": [{"destination": {"host": host}}]}]}}
