"""``pilotfish up --kubeconfig PATH``: the local node as the one node of a cluster.

The API server holds the objects; discovery reads them from it (``--kubeconfig``), with its
webhooks on the node's address. The node does, for that API server, what a cluster runs
beside it:

- the Deployment and ReplicaSet controllers: a Deployment's Pods (`workloads`' names) are
  created through the API server, so admission, and the injection webhook, see them as
  they see any pod; pods a Deployment no longer asks for are deleted there;
- the kubelet: every Pod the API server holds is run in a network namespace, as with files
  (`up`). A pod the webhook injected gets its sidecar from the node: the ``istio-proxy``
  container is run as ``pilotfish agent`` with the node's paths for what it mounts, its
  token from the API server's TokenRequest (audience ``istio-ca``, bound to the pod), its
  root from the namespace's ``istio-ca-root-cert`` ConfigMap; ``istio-init`` is not run
  (the node's CNI plugin captures, as with Istio's CNI, and reads the pod from the API
  server as on a cluster: the runtime passes it only the pod's name and namespace). The
  pod's status (phase, IPs, Ready) is written back, from which discovery finds the
  endpoints;
- kube-proxy's job, and names: as with files, from the Services the API server holds
  (ClusterIPs are the API server's).

At start the node makes the ``istio-system`` namespace and registers the webhook
configurations (``url`` the node's address, ``caBundle`` discovery's root), as
``pilotfish install`` would with the Service in a cluster.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.abc

from pilotfish.cni.pod import pod_from_object
from pilotfish.core.gateway_api import GROUP
from pilotfish.core.interceptor import PodFacts
from pilotfish.core.objects import ConfigKey, ConfigObject
from pilotfish.node import pods, workloads
from pilotfish.node.ambient import ZTUNNEL_NAMESPACE
from pilotfish.node.netns import NodeError
from pilotfish.node.state import PodState
from pilotfish.node.up import Node, UpOptions, new_store, step
from pilotfish.plugins.kube.client import ApiError
from pilotfish.plugins.kube.resources import Resource
from pilotfish.plugins.kube.source import KubernetesSource

log = logging.getLogger("pilotfish.node")

DEPLOYMENTS = Resource("apps", "v1", "Deployment", "deployments")
WEBHOOK_PORT = 15017
ROOT_CONFIGMAP = "istio-ca-root-cert"
MANAGER = "pilotfish-node"  # the field manager of what the node writes
GATEWAY_MANAGER = "istio.io-gateway-controller"  # of what it writes for Gateways, as Istio
_GATEWAY_KINDS = ("ServiceAccount", "Service", "Deployment")
TOKEN_SECONDS = 7 * 24 * 3600  # as the node's own tokens: longer than a session
ROOT_WAIT = 60.0  # how long a pod waits for discovery to publish the root in its namespace
RETRY = 2.0  # a failed write (discovery's webhook not up yet, ...) is tried again after this


class KubeNode(Node):
    def __init__(self, options: UpOptions) -> None:
        super().__init__(options)
        self.source = KubernetesSource(options.kubeconfig, options.context,
                                       root_namespace=self.mesh.mesh.root_namespace,
                                       extra=(DEPLOYMENTS,))
        self.changed = anyio.Event()
        self.statuses: dict[tuple[str, str, str], dict[str, Any]] = {}  # to write
        self.failed_writes = False
        self.applied: dict[tuple[str, str, str], Mapping[str, Any]] = {}

    async def call(self, method: str, path: str, body: Any = None,
                   query: Mapping[str, str] | None = None) -> dict[str, Any]:
        return await self.source.call(method, path, query, body)

    # -- the objects ------------------------------------------------------------------

    async def load(self, tg: anyio.abc.TaskGroup) -> None:
        step(f"objects from the API server of {self.options.kubeconfig}")
        self.store = new_store(self.mesh)
        await tg.start(self.source.run, self.store)
        self.store.subscribe(lambda _update: self.changed.set())
        print(f"    {self.source.client.host}", flush=True)
        namespace = self.mesh.mesh.root_namespace
        await self._create("/api/v1/namespaces", {"metadata": {"name": namespace}},
                           f"namespace {namespace}")

    def initial_pods(self) -> list[ConfigObject]:
        # Pods are started once discovery (and its injection webhook) is up.
        self.update_view()
        return []

    def update_view(self) -> workloads.ClusterView:
        assert self.store is not None
        objects = tuple(self.store.objects())
        # Every pod but ztunnel's, which the node runs as ambient mode's node proxy.
        own = (ZTUNNEL_NAMESPACE, self.ambient.ztunnel_name) if self.ambient else None
        running = tuple(sorted((o for o in objects if o.kind == "Pod" and o.group == ""
                                and (o.namespace, o.name) != own),
                               key=lambda o: (o.namespace, o.name)))
        self.view = workloads.ClusterView(objects, running)
        return self.view

    def conflist(self) -> dict[str, Any]:
        """As with files, but pilotfish-cni reads each pod from the API server, as Istio's
        CNI plugin does: kubelets' runtimes pass only its name and namespace."""
        chain = super().conflist()
        capture = chain["plugins"][-1]
        capture.pop("capabilities", None)
        capture["kubernetes"] = {"kubeconfig": str(self.options.kubeconfig)}
        return chain

    def cni_inputs(self, obj: ConfigObject, sidecar: bool
                   ) -> tuple[dict[str, Any], dict[str, str] | None, PodFacts]:
        args = {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": obj.namespace,
                "K8S_POD_NAME": obj.name, "K8S_POD_UID": str(obj.metadata.get("uid") or ""),
                "K8S_POD_INFRA_CONTAINER_ID": pods.netns_name(obj, self.state.bridge)}
        return {}, args, pod_from_object(obj.body)

    def wants_sidecar(self, obj: ConfigObject, namespace_labels: dict[str, str]) -> bool:
        return pods.injected(obj)  # the webhook decided

    @staticmethod
    def unchanged(wanted: ConfigObject, running: ConfigObject) -> bool:
        # The status the node writes back changes the object, not the pod.
        return (wanted.spec, wanted.labels, wanted.annotations) == \
            (running.spec, running.labels, running.annotations)

    def publish(self, bodies: list[dict[str, Any]]) -> None:
        """What the kubelet and the load balancer report, written back (in
        `write_statuses`) where the API server has something else: each running pod's
        phase, addresses and readiness, a LoadBalancer Service's ingress address."""
        assert self.store is not None
        for body in bodies:
            kind, metadata = body.get("kind"), body["metadata"]
            if kind == "Pod":
                status = pod_status(body["status"]["podIP"], self.state.gateway_ip)
            elif kind == "Service" and (body.get("status") or {}).get("loadBalancer"):
                status = {"loadBalancer": body["status"]["loadBalancer"]}
            else:
                continue
            key = (str(kind), metadata["namespace"], metadata["name"])
            held = self.store.get(ConfigKey(*key))
            if held is not None and not _same_status(held.body.get("status"), status):
                self.statuses[key] = status

    async def write_statuses(self) -> None:
        for key, status in list(self.statuses.items()):
            try:
                await self.source.thread(
                    self.source.client.request, "PATCH", _path(*key) + "/status", None,
                    {"status": status}, "application/merge-patch+json")
            except ApiError as exc:
                if exc.status != 404:  # deleted meanwhile: it needs no status
                    log.warning("%s %s/%s: status: %s", *key, exc)
                    self.failed_writes = True
                    continue
            if self.statuses.get(key) is status:
                del self.statuses[key]

    # -- Istio's Gateway deployment controller -------------------------------------------

    async def sync_gateways(self) -> None:
        """What each served Gateway API Gateway gets (`workloads.gateway_objects`), applied
        through the API server; what a Gateway no longer there had is deleted (the owner
        references say whose it was: there is no garbage collector to do it)."""
        assert self.store is not None
        objects = list(self.store.objects())
        made = {(o.kind, o.namespace, o.name): o
                for gateway in workloads.served_gateways(objects)
                for o in workloads.gateway_objects(gateway)}
        for key, obj in sorted(made.items()):
            if self.applied.get(key) == obj.body:
                continue
            try:
                await self.source.thread(
                    self.source.client.request, "PATCH", _path(obj.kind, key[1], key[2]),
                    {"fieldManager": GATEWAY_MANAGER, "force": "true"}, obj.body,
                    "application/apply-patch+yaml")
            except ApiError as exc:
                print(f"    {key[0]} {key[1]}/{key[2]}: {exc}", flush=True)
                self.failed_writes = True
                continue
            self.applied[key] = obj.body
        owned = [(o.kind, o.namespace, o.name) for o in objects
                 if o.kind in _GATEWAY_KINDS and any(
                     ref.get("kind") == "Gateway" and ref.get("apiVersion", "").startswith(
                         GROUP) for ref in o.metadata.get("ownerReferences") or ())]
        for key in sorted(set(owned) - made.keys()):
            self.applied.pop(key, None)
            try:
                await self.call("DELETE", _path(*key))
            except ApiError as exc:
                if exc.status != 404:
                    print(f"    {key[0]} {key[1]}/{key[2]}: {exc}", flush=True)
                    self.failed_writes = True

    # -- the Deployment controller ------------------------------------------------------

    async def sync_deployments(self) -> None:
        """Each Deployment's pods created through the API server (admission included);
        pods of a ReplicaSet no Deployment asks for any more deleted."""
        assert self.store is not None
        wanted = {(p.namespace, p.name): p
                  for d in self.store.objects("Deployment") if workloads.is_deployment(d)
                  for p in workloads.deployment_pods(d)}
        held = {(o.namespace, o.name) for o in self.store.objects("Pod")
                if workloads.owner(o)}
        for (namespace, name), pod in sorted(wanted.items()):
            if (namespace, name) in held:
                continue
            step(f"pod {namespace}/{name}: created for {workloads.owner(pod)}")
            try:
                await self.call("POST", f"/api/v1/namespaces/{namespace}/pods", pod.body)
            except ApiError as exc:
                if exc.status != 409:
                    print(f"    pod {namespace}/{name}: {exc}", flush=True)
                    self.failed_writes = True
        for namespace, name in sorted(held - wanted.keys()):
            step(f"pod {namespace}/{name}: deleted (its Deployment no longer asks for it)")
            try:
                await self.call("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}")
            except ApiError as exc:
                if exc.status != 404:
                    print(f"    pod {namespace}/{name}: {exc}", flush=True)
                    self.failed_writes = True

    # -- discovery and its webhooks ----------------------------------------------------

    def discovery_argv(self) -> list[str]:
        argv = [*self.discovery_common_argv(), "--kubeconfig", str(self.options.kubeconfig),
                "--webhook-address", f"{self.state.gateway_ip}:{WEBHOOK_PORT}"]
        if self.options.context:
            argv += ["--context", self.options.context]
        return argv

    async def discovery_started(self, tg: anyio.abc.TaskGroup) -> None:
        from pilotfish.discovery.inject.policy import webhook_configurations
        from pilotfish.discovery.inject.settings import Settings

        root = await self.root_cert(self.mesh.mesh.root_namespace)
        url = f"https://{self.state.gateway_ip}:{WEBHOOK_PORT}"
        step(f"webhooks: injection and validation at {url}")
        settings = Settings.create(dict(self.mesh.injection), self.mesh.mesh_fields)
        for configuration in webhook_configurations(
                base64.b64encode(root).decode(), settings,
                namespace=self.mesh.mesh.root_namespace, url=url):
            kind = configuration["kind"]
            plural = kind.lower() + "s"
            await self.source.thread(
                self.source.client.request, "PATCH",
                f"/apis/admissionregistration.k8s.io/v1/{plural}/"
                f"{configuration['metadata']['name']}",
                {"fieldManager": MANAGER, "force": "true"}, configuration,
                "application/apply-patch+yaml")
        await self.settle(tg)

    async def settle(self, tg: anyio.abc.TaskGroup) -> None:
        """One round: Deployments' pods, then the kubelet's, then their statuses."""
        self.failed_writes = False
        await self.sync_gateways()
        await self.sync_deployments()
        await self.source_caught_up()
        await self.reconcile(tg)
        await self.write_statuses()

    async def source_caught_up(self) -> None:
        """Until what the node just wrote is back in its store (its own writes are what the
        next steps read)."""
        with anyio.move_on_after(5):
            while True:
                assert self.store is not None
                pods_held = {(o.namespace, o.name) for o in self.store.objects("Pod")
                             if workloads.owner(o)}
                wanted = {(p.namespace, p.name)
                          for d in self.store.objects("Deployment")
                          for p in workloads.deployment_pods(d)}
                if wanted <= pods_held or self.failed_writes:
                    return
                await anyio.sleep(0.05)

    async def watch_config(self, tg: anyio.abc.TaskGroup) -> None:
        """Every change the API server reports (and a failed write, after a while) is one
        more round."""
        while True:
            with anyio.move_on_after(RETRY if self.failed_writes or self.statuses else None):
                await self.changed.wait()
            self.changed = anyio.Event()
            await anyio.sleep(0.05)  # what comes together is handled together
            await self.settle(tg)

    # -- what the kubelet mounts --------------------------------------------------------

    async def credentials(self, obj: ConfigObject, pod: PodState) -> tuple[str, bytes]:
        return await self.pod_token(obj), await self.root_cert(obj.namespace)

    async def pod_token(self, obj: ConfigObject) -> str:
        """A TokenRequest's token for the pod's service account (audience ``istio-ca``),
        bound to the pod, which discovery's TokenReview checks."""
        account = str(obj.spec.get("serviceAccountName") or "default")
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "spec": {"audiences": ["istio-ca"], "expirationSeconds": TOKEN_SECONDS,
                            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                                               "name": obj.name,
                                               "uid": str(obj.metadata.get("uid") or "")}}}
        answer = await self.call(
            "POST", f"/api/v1/namespaces/{obj.namespace}/serviceaccounts/{account}/token",
            request)
        token = str((answer.get("status") or {}).get("token") or "")
        if not token:
            raise NodeError(f"pod {obj.namespace}/{obj.name}: the API server gave no token "
                            f"for service account {obj.namespace}/{account}")
        return token

    async def ztunnel_token(self) -> str:
        """ztunnel's pod made in the API server (what its DaemonSet would make on this
        node: service account ``istio-system/ztunnel``, host network), so that discovery's
        CA finds it when ztunnel asks for the certificates of this node's pods; and its
        token, bound to it. The node runs that pod itself (`update_view` leaves it out of
        the pods it starts); its status is written back as every pod's."""
        assert self.ambient is not None
        body = self.ambient.ztunnel_pod()
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        account = body["spec"]["serviceAccountName"]
        await self._create(f"/api/v1/namespaces/{namespace}/serviceaccounts",
                           {"metadata": {"name": account}},
                           f"service account {namespace}/{account}")
        path = f"/api/v1/namespaces/{namespace}/pods"
        made = await self._create(path, {k: v for k, v in body.items() if k != "status"},
                                  f"ztunnel's pod {namespace}/{name}")
        if made is None:
            made = await self.call("GET", f"{path}/{name}")
        return await self.pod_token(ConfigObject(
            api_version="v1", kind="Pod", name=name, namespace=namespace, body=made))

    async def _create(self, path: str, body: Mapping[str, Any], what: str
                      ) -> dict[str, Any] | None:
        """POST ``body``; None when it exists already."""
        try:
            return await self.call("POST", path, body)
        except ApiError as exc:
            if exc.status == 409:
                return None
            raise NodeError(f"{what}: {exc}") from exc

    async def volume_object(self, kind: str, namespace: str, name: str
                            ) -> Mapping[str, Any] | None:
        plural = "secrets" if kind == "Secret" else "configmaps"
        try:
            return await self.call("GET", f"/api/v1/namespaces/{namespace}/{plural}/{name}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise NodeError(f"{kind} {namespace}/{name}: {exc}") from exc

    async def root_cert(self, namespace: str) -> bytes:
        """The mesh root discovery publishes in ``namespace`` (waited for)."""
        path = f"/api/v1/namespaces/{namespace}/configmaps/{ROOT_CONFIGMAP}"
        with anyio.move_on_after(ROOT_WAIT):
            while True:
                try:
                    found = await self.call("GET", path)
                except ApiError as exc:
                    if exc.status != 404:
                        raise NodeError(f"ConfigMap {namespace}/{ROOT_CONFIGMAP}: {exc}"
                                        ) from exc
                else:
                    pem = str((found.get("data") or {}).get("root-cert.pem") or "")
                    if pem:
                        return pem.encode()
                await anyio.sleep(0.2)
        raise NodeError(f"discovery did not publish ConfigMap {namespace}/{ROOT_CONFIGMAP} "
                        f"within {ROOT_WAIT:.0f}s")


def _path(kind: str, namespace: str, name: str) -> str:
    base = "/apis/apps/v1" if kind == "Deployment" else "/api/v1"
    return f"{base}/namespaces/{namespace}/{kind.lower()}s/{name}"


def pod_status(ip: str, host_ip: str) -> dict[str, Any]:
    """What the kubelet reports for a running pod."""
    return {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": host_ip,
            "conditions": [{"type": kind, "status": "True"}
                           for kind in ("PodScheduled", "Initialized", "ContainersReady",
                                        "Ready")]}


def _same_status(held: Any, wanted: Mapping[str, Any]) -> bool:
    """Whether the status held already says what ``wanted`` says (conditions by type)."""
    held = held if isinstance(held, Mapping) else {}
    for field, value in wanted.items():
        if field == "conditions":
            states = {c.get("type"): c.get("status") for c in held.get("conditions") or ()}
            if any(states.get(c["type"]) != c["status"] for c in value):
                return False
        elif held.get(field) != value:
            return False
    return True
