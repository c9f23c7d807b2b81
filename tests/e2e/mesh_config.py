"""The e2e mesh: injected namespace ``mesh``, plain namespace ``plain``."""

from __future__ import annotations

import sys

APP = [sys.executable, "-m", "pilotfish.demo.app"]


def pod(name: str, namespace: str, labels: dict[str, str], args: list[str],
        annotations: dict[str, str] | None = None, run_as: int | None = None,
        ports: tuple[int, ...] = (8080,)) -> str:
    label_text = ", ".join(f"{k}: {v}" for k, v in labels.items())
    annotation_text = ", ".join(f'{k}: "{v}"' for k, v in (annotations or {}).items())
    security = f"\n  securityContext: {{runAsUser: {run_as}, runAsGroup: {run_as}}}" \
        if run_as is not None else ""
    command = ", ".join(f'"{a}"' for a in APP)
    arg_text = ", ".join(f'"{a}"' for a in args)
    port_text = ", ".join(f"{{containerPort: {p}}}" for p in ports)
    return f"""\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {namespace}
  labels: {{{label_text}}}
  annotations: {{{annotation_text}}}
spec:{security}
  serviceAccountName: {labels.get("app", name)}
  containers:
  - name: app
    command: [{command}]
    args: [{arg_text}]
    env: [{{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}]
    ports: [{port_text}]
"""


def serve(app: str, version: str = "v1", port: int = 8080) -> list[str]:
    return ["--serve", f"{app}:{version}@$(POD_IP):{port}"]


def service(name: str, namespace: str) -> str:
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 9080, targetPort: 8080}}]
"""


ROUTES = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: mesh}
spec:
  host: web
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: mesh}
spec:
  hosts: [web]
  http:
  - route:
    - {destination: {host: web, subset: v1}, weight: 80}
    - {destination: {host: web, subset: v2}, weight: 20}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: mesh}
spec:
  hosts: [api]
  http:
  - headers: {request: {set: {x-outbound-sidecar: "ROUTE_MARK"}}}
    route: [{destination: {host: api}}]
"""


def documents(route_mark: str = "first") -> dict[str, str]:
    first_call = "http://api:9080/first"
    return {
        "namespaces.yaml": """\
apiVersion: v1
kind: Namespace
metadata: {name: mesh, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
""",
        "services.yaml": "---\n".join(service(s, "mesh") for s in ("web", "api", "local")),
        "pods.yaml": "---\n".join([
            pod("web-v1", "mesh", {"app": "web", "version": "v1"}, serve("web", "v1")),
            pod("web-v2", "mesh", {"app": "web", "version": "v2"}, serve("web", "v2")),
            pod("api-1", "mesh", {"app": "api", "version": "v1"},
                [*serve("api"), *serve("api", port=9090)],
                {"traffic.sidecar.istio.io/excludeInboundPorts": "9090",
                 "prometheus.io/scrape": "true", "prometheus.io/port": "8080"},
                ports=(8080, 9090)),
            pod("client", "mesh", {"app": "client"}, serve("client")),
            pod("rogue", "mesh", {"app": "rogue"}, serve("rogue"), run_as=1337),
            pod("held", "mesh", {"app": "held"}, [*serve("held"), "--first-call", first_call],
                {"proxy.istio.io/config": "holdApplicationUntilProxyStarts: true"}),
            pod("unheld", "mesh", {"app": "unheld"},
                [*serve("unheld"), "--first-call", first_call]),
            # Listens on 127.0.0.1 only: its sidecar cannot reach it (analyze says so).
            pod("local-1", "mesh", {"app": "local"}, ["--serve", "local:v1@127.0.0.1:8080"]),
            pod("outsider", "plain", {"app": "outsider"}, serve("outsider")),
        ]),
        "routes.yaml": ROUTES.replace("ROUTE_MARK", route_mark),
    }
