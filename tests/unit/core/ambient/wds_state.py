"""A ztunnel's WorkloadState filled the way the real one is: YAML → push context → the WDS
generators discovery serves (Addresses, Authorizations) → serialized → ``apply``."""

from __future__ import annotations

from pilotfish.core import push_context
from pilotfish.core.ambient.state import ADDRESS, AUTHORIZATION, WorkloadState
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.xds.types import resource_name
from pilotfish.core.yamlload import load_text
from pilotfish.translators.ambient import authorization, peer_authentication
from pilotfish.translators.ambient.addresses import addresses


def state_from(config: str) -> WorkloadState:
    objects, errors = load_text(config, "ambient.yaml")
    assert not errors, errors
    push = push_context.build(objects, MeshSettings(), "v1")
    state = WorkloadState()
    for address in addresses(push):
        state.apply(ADDRESS, resource_name(address), address.SerializeToString())
    root = push.mesh.root_namespace
    for policy in [*authorization.authorizations(push.security.authorization_policies, root),
                   *peer_authentication.authorizations(push.security.peer_authentications,
                                                       root)]:
        state.apply(AUTHORIZATION, resource_name(policy), policy.SerializeToString())
    return state


def pod(name: str, namespace: str, ip: str, app: str, account: str, node: str,
        ready: bool = True, labels: str = "") -> str:
    condition = "True" if ready else "False"
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, labels: {{app: {app}{labels}}}}}
spec:
  serviceAccountName: {account}
  nodeName: {node}
  containers: [{{name: app, ports: [{{name: http, containerPort: 8080}}]}}]
status:
  phase: Running
  podIP: {ip}
  conditions: [{{type: Ready, status: "{condition}"}}]
"""


def service(name: str, namespace: str, vip: str, app: str, port: int, target: str,
            extra: str = "", labels: str = "{}") -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}, labels: {labels}}}
spec:
  clusterIP: {vip}
  selector: {{app: {app}}}
  ports: [{{name: p{port}, port: {port}, targetPort: {target}}}]
  {extra}
"""


# shop: ambient; a client, three cart pods (one not ready) behind cart (named target port)
# and cart-local (internalTrafficPolicy: Local). legacy: a plain pod behind db. bank: ambient
# with a waypoint for services and workloads (its pod, Service and Gateway), and ledger.
MESH = "---".join([
    """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
""", """
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
""", """
apiVersion: v1
kind: Namespace
metadata: {name: bank, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}
""",
    pod("client-0", "shop", "10.0.1.2", "client", "frontend", "node-a"),
    pod("cart-a", "shop", "10.0.1.5", "cart", "cart", "node-a"),
    pod("cart-b", "shop", "10.0.1.6", "cart", "cart", "node-b"),
    pod("cart-c", "shop", "10.0.1.7", "cart", "cart", "node-b", ready=False),
    service("cart", "shop", "10.96.0.10", "cart", 80, "http"),
    service("cart-local", "shop", "10.96.0.11", "cart", 81, "8080",
            "internalTrafficPolicy: Local"),
    service("nobody", "shop", "10.96.0.12", "nothing-has-this", 80, "8080"),
    pod("db-0", "legacy", "10.0.2.9", "db", "db", "node-b"),
    service("db", "legacy", "10.96.0.20", "db", 5432, "5432"),
    pod("ledger-0", "bank", "10.0.3.5", "ledger", "ledger", "node-a"),
    service("ledger", "bank", "10.96.0.40", "ledger", 80, "8080"),
    pod("waypoint-0", "bank", "10.0.3.30", "waypoint", "waypoint", "node-b",
        labels=", gateway.istio.io/managed: istio.io-mesh-controller, "
               "gateway.networking.k8s.io/gateway-name: waypoint"),
    service("waypoint", "bank", "10.96.0.30", "waypoint", 15008, "15008",
            labels="{gateway.istio.io/managed: istio.io-mesh-controller}"), """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: bank, labels: {istio.io/waypoint-for: all}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"""])

CART = "spiffe://cluster.local/ns/shop/sa/cart"
FRONTEND = "spiffe://cluster.local/ns/shop/sa/frontend"
WAYPOINT = "spiffe://cluster.local/ns/bank/sa/waypoint"
