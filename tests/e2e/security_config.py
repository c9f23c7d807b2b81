"""The mesh for the security e2e tests: namespaces in each PeerAuthentication mode, a plain
namespace, authorization policies and a JWT rule."""

from __future__ import annotations

from pathlib import Path

import mesh_config as mc

ISSUER = "https://issuer.pilotfish.test"


def namespace(name: str, injected: bool) -> str:
    labels = "{istio-injection: enabled}" if injected else "{}"
    return f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {labels}}}\n"


def server_service(namespace: str) -> str:
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: server, namespace: {namespace}}}
spec:
  selector: {{app: server}}
  ports:
  - {{name: http, port: 9080, targetPort: 8080}}
  - {{name: tcp-raw, port: 9090, targetPort: 8081}}
"""


def server(namespace: str) -> str:
    return mc.pod("server", namespace, {"app": "server"},
                  [*mc.serve("server"), *mc.serve("server", port=8081)], ports=(8080, 8081))


POLICIES = f"""\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: strict}}
spec: {{mtls: {{mode: STRICT}}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: disabled}}
spec: {{mtls: {{mode: DISABLE}}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: server-allow, namespace: perm}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: ["cluster.local/ns/perm/sa/client"]}}}}]
    to: [{{operation: {{methods: [GET], paths: ["/allowed*"]}}}}]
  - from: [{{source: {{namespaces: [strict]}}}}]
    to: [{{operation: {{paths: ["/from-strict*"]}}}}]
  - to: [{{operation: {{paths: ["/open*", "/secure*"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: server-deny, namespace: perm}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  action: DENY
  rules:
  - to: [{{operation: {{paths: ["/allowed/forbidden*"]}}}}]
  - from: [{{source: {{notRequestPrincipals: ["*"]}}}}]
    to: [{{operation: {{paths: ["/secure*"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: tcp-deny, namespace: strict}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  action: DENY
  rules:
  - from: [{{source: {{principals: ["cluster.local/ns/perm/sa/other"]}}}}]
    to: [{{operation: {{ports: ["8081"]}}}}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: perm}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  jwtRules:
  - issuer: {ISSUER}
    jwksUri: file://JWKS_PATH
"""


def documents(jwks_path: Path) -> dict[str, str]:
    return {
        "namespaces.yaml": "---\n".join([
            namespace("strict", True), namespace("perm", True), namespace("disabled", True),
            namespace("plain", False)]),
        "services.yaml": "---\n".join(server_service(ns) for ns in ("strict", "perm", "disabled")),
        "pods.yaml": "---\n".join([
            server("strict"), server("perm"), server("disabled"),
            mc.pod("client", "strict", {"app": "client"}, mc.serve("client")),
            mc.pod("client", "perm", {"app": "client"}, mc.serve("client")),
            mc.pod("other", "perm", {"app": "other"}, mc.serve("other")),
            mc.pod("client", "plain", {"app": "client"}, mc.serve("client")),
        ]),
        "policies.yaml": POLICIES.replace("JWKS_PATH", str(jwks_path)),
    }
