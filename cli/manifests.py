"""What ``pilotfish manifest generate`` prints and ``pilotfish install`` applies: every object
that runs discovery on a cluster, as istiod's chart does, from a profile and ``--set`` values.

Pure: values in, objects out (dicts in Kubernetes' shape, in the order they are applied:
CRDs, the namespace, then what discovery needs before its Deployment).

Values are a small flat set, each with a default; a profile changes some of them and
``--set KEY=VALUE`` any (``meshConfig.*`` takes any mesh config field into the ``istio``
ConfigMap, as istioctl's does):

| key | default | what |
|---|---|---|
| ``namespace`` | ``istio-system`` | where discovery runs (and the mesh's root namespace) |
| ``hub``, ``tag`` | ``localhost``, the version | the image ``HUB/pilotfish:TAG`` of all |
| ``imagePullPolicy`` | ``IfNotPresent`` | |
| ``components.crds.enabled`` | true | Istio's and the Gateway API's CRDs |
| ``components.discovery.replicas`` | 1 | |
| ``components.discovery.cpu``, ``.memory`` | ``500m``, ``2048Mi`` | requests (Istio's) |
| ``components.webhooks.enabled`` | true | injection and validation (on 15017) |
| ``components.cni.enabled`` | false | the CNI DaemonSet; injection adds no ``istio-init`` |
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import yaml

from pilotfish.core.output import CommandError
from pilotfish.discovery.inject.policy import webhook_configurations
from pilotfish.discovery.inject.settings import DEFAULT_VALUES, InjectionError, Settings

IMAGE_NAME = "pilotfish"
PORTS = {"grpc-xds": 15010, "https-dns": 15012, "http-monitoring": 15014}
WEBHOOK_PORT = 15017
STATE_DIR = "/var/lib/pilotfish/discovery"
CONFIG_DIR = "/etc/pilotfish"
PART_OF = {"app.kubernetes.io/part-of": "pilotfish"}

DEFAULTS: dict[str, Any] = {
    "namespace": "istio-system",
    "hub": DEFAULT_VALUES["global"]["hub"],  # the injector's: one image for all
    "tag": DEFAULT_VALUES["global"]["tag"],
    "imagePullPolicy": "IfNotPresent",
    "components.crds.enabled": True,
    "components.discovery.replicas": 1,
    "components.discovery.cpu": "500m",
    "components.discovery.memory": "2048Mi",
    "components.webhooks.enabled": True,
    "components.cni.enabled": False,
}
PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    # Config from the API server only: no injection or validation webhooks.
    "minimal": {"components.webhooks.enabled": False},
}
MESH_PREFIX = "meshConfig."


def values(profile: str = "default", sets: Sequence[str] = ()) -> dict[str, Any]:
    """The profile's values with each ``KEY=VALUE`` applied; an unknown profile or key, or
    a value of the wrong type, is a `CommandError` naming it."""
    if profile not in PROFILES:
        raise CommandError(f"--profile {profile}: unknown profile; known: "
                           f"{', '.join(PROFILES)}")
    result: dict[str, Any] = {**DEFAULTS, **PROFILES[profile], "meshConfig": {}}
    for assignment in sets:
        key, sep, text = assignment.partition("=")
        if not sep or not key:
            raise CommandError(f"--set {assignment}: expected KEY=VALUE")
        if key.startswith(MESH_PREFIX) and len(key) > len(MESH_PREFIX):
            _set_path(result["meshConfig"], key[len(MESH_PREFIX):].split("."),
                      yaml.safe_load(text) if text else "")
            continue
        if key not in DEFAULTS:
            raise CommandError(f"--set {key}: unknown key; known: {', '.join(DEFAULTS)}, "
                               f"{MESH_PREFIX}FIELD")
        result[key] = _typed(key, text, DEFAULTS[key])
    return result


def _typed(key: str, text: str, default: Any) -> Any:
    if isinstance(default, bool):
        if text.lower() not in ("true", "false"):
            raise CommandError(f"--set {key}={text}: expected true or false")
        return text.lower() == "true"
    if isinstance(default, int):
        if not text.isdigit():
            raise CommandError(f"--set {key}={text}: expected a whole number")
        return int(text)
    if not text:
        raise CommandError(f"--set {key}: expected a value")
    return text


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        child = tree.get(part)
        if not isinstance(child, dict):
            child = tree[part] = {}
        tree = child
    tree[path[-1]] = value


def image(vals: Mapping[str, Any]) -> str:
    return f"{vals['hub']}/{IMAGE_NAME}:{vals['tag']}"


# -- the objects ---------------------------------------------------------------------------


def crds() -> list[dict[str, Any]]:
    """Istio's and the Gateway API's CRDs, from the copies shipped with pilotfish (read once:
    2 MB of YAML; callers do not change them)."""
    return list(_crds())


@functools.cache
def _crds() -> tuple[dict[str, Any], ...]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ten times faster
    folder = resources.files("pilotfish.cli").joinpath("crds")
    found: list[dict[str, Any]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            found.extend(d for d in yaml.load_all(entry.read_text(), Loader=loader)
                         if d and d.get("kind") == "CustomResourceDefinition")
    return tuple(found)


def generate(vals: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every object, in the order they are applied."""
    ns = vals["namespace"]
    objects: list[dict[str, Any]] = crds() if vals["components.crds.enabled"] else []
    objects.append(_object("v1", "Namespace", ns))
    objects.append(_object("v1", "ServiceAccount", "istiod", ns))
    objects.extend(rbac(ns))
    objects.append(_object("v1", "ConfigMap", "istio", ns, data={
        "mesh": yaml.safe_dump(mesh_config(vals), sort_keys=False)}))
    objects.append(_object("v1", "ConfigMap", "pilotfish", ns, data={
        "pilotfish.yaml": yaml.safe_dump(pilotfish_config(vals), sort_keys=False)}))
    objects.append(service(vals))
    objects.append(deployment(vals))
    objects.append(disruption_budget(vals))
    if vals["components.webhooks.enabled"]:
        objects.extend(webhooks(vals))
    if vals["components.cni.enabled"]:
        objects.append(_object("v1", "ServiceAccount", "istio-cni", ns))
        objects.extend(cni_rbac(ns))
        objects.append(cni_daemonset(vals))
    return objects


def _object(api_version: str, kind: str, name: str, namespace: str | None = None,
            **fields: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = dict(PART_OF)
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, **fields}


def injection_values(vals: Mapping[str, Any]) -> dict[str, Any]:
    """The injector's values (Istio's shape) that follow from the install's."""
    return {"global": {"hub": vals["hub"], "tag": vals["tag"],
                       "imagePullPolicy": vals["imagePullPolicy"],
                       "istioNamespace": vals["namespace"]},
            "pilot": {"cni": {"enabled": vals["components.cni.enabled"]}}}


def pilotfish_config(vals: Mapping[str, Any]) -> dict[str, Any]:
    """Discovery's ``pilotfish.yaml``: the injection values and the root namespace (the
    rest of the mesh config comes from the ``istio`` ConfigMap)."""
    return {"mesh": {"rootNamespace": vals["namespace"]}, "injection": injection_values(vals)}


def mesh_config(vals: Mapping[str, Any]) -> dict[str, Any]:
    ns = vals["namespace"]
    mesh: dict[str, Any] = {"rootNamespace": ns, "trustDomain": "cluster.local",
                            "defaultConfig": {"discoveryAddress": f"istiod.{ns}.svc:15012"}}
    for key, value in vals["meshConfig"].items():
        if isinstance(value, dict) and isinstance(mesh.get(key), dict):
            mesh[key] = {**mesh[key], **value}
        else:
            mesh[key] = value
    return mesh


def _rule(groups: Iterable[str], resources_: Iterable[str], verbs: Iterable[str],
          names: Iterable[str] = ()) -> dict[str, Any]:
    rule: dict[str, Any] = {"apiGroups": list(groups), "resources": list(resources_),
                            "verbs": list(verbs)}
    if names:
        rule["resourceNames"] = list(names)
    return rule


READ = ("get", "list", "watch")
# What discovery writes the status of (the Gateway API's kinds), and its Leases.
STATUS_PLURALS = ("gatewayclasses", "gateways", "httproutes", "grpcroutes", "tlsroutes",
                  "tcproutes", "backendtlspolicies")
LEASES = ("istio-gateway-status-leader", "istio-namespace-controller-election")
CONFIG_GROUPS = ("networking.istio.io", "security.istio.io", "telemetry.istio.io",
                 "extensions.istio.io", "gateway.networking.k8s.io")


def rbac(ns: str) -> list[dict[str, Any]]:
    """Discovery's service account may do what its parts need, and no more (docs/kubernetes.md
    says which part needs which rule)."""
    cluster_rules = [
        # the kubernetes source
        _rule([""], ["namespaces", "nodes", "services", "pods", "serviceaccounts", "secrets",
                     "configmaps"], READ),
        _rule(["discovery.k8s.io"], ["endpointslices"], READ),
        _rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], READ),
        _rule(CONFIG_GROUPS, ["*"], READ),
        _rule([""], ["events"], ["create", "patch"]),
        # the CA: callers' tokens, and the root published to every namespace
        _rule(["authentication.k8s.io"], ["tokenreviews"], ["create"]),
        _rule([""], ["configmaps"], ["create", "update", "patch"]),
        # the webhooks' caBundle, in their own configurations only
        _rule(["admissionregistration.k8s.io"],
              ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"], READ),
        _rule(["admissionregistration.k8s.io"], ["mutatingwebhookconfigurations"],
              ["update", "patch"], ["istio-sidecar-injector"]),
        _rule(["admissionregistration.k8s.io"], ["validatingwebhookconfigurations"],
              ["update", "patch"], [f"istio-validator-{ns}"]),
        # the leader's Gateway API status write-back (the status subresource only)
        _rule(["gateway.networking.k8s.io"], [f"{plural}/status" for plural in STATUS_PLURALS],
              ["update", "patch"]),
    ]
    # The CA's root, shared by every replica, lives in a Secret of discovery's namespace;
    # so do the Leases that elect one replica for the status and the root ConfigMaps.
    role_rules = [_rule([""], ["secrets"], ["create"]),
                  _rule([""], ["secrets"], ["update", "patch"], ["istio-ca-secret"]),
                  _rule(["coordination.k8s.io"], ["leases"], ["create"]),
                  _rule(["coordination.k8s.io"], ["leases"], ["get", "update"], LEASES)]
    subject = [{"kind": "ServiceAccount", "name": "istiod", "namespace": ns}]
    rbac_v1 = "rbac.authorization.k8s.io/v1"
    cluster_name = f"istiod-clusterrole-{ns}"
    return [
        _object(rbac_v1, "ClusterRole", cluster_name, rules=cluster_rules),
        _object(rbac_v1, "ClusterRoleBinding", cluster_name, subjects=subject,
                roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": cluster_name}),
        _object(rbac_v1, "Role", "istiod", ns, rules=role_rules),
        _object(rbac_v1, "RoleBinding", "istiod", ns, subjects=subject,
                roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                         "name": "istiod"}),
    ]


SELECTOR = {"app": "istiod", "istio": "pilot"}


def service(vals: Mapping[str, Any]) -> dict[str, Any]:
    ports = [{"name": name, "port": port, "targetPort": port, "protocol": "TCP"}
             for name, port in PORTS.items()]
    if vals["components.webhooks.enabled"]:
        ports.insert(2, {"name": "https-webhook", "port": 443, "targetPort": WEBHOOK_PORT,
                         "protocol": "TCP"})
    svc = _object("v1", "Service", "istiod", vals["namespace"],
                  spec={"selector": dict(SELECTOR), "ports": ports})
    svc["metadata"]["labels"].update(SELECTOR)
    return svc


def discovery_args(vals: Mapping[str, Any]) -> list[str]:
    args = ["discovery", "--xds-address", f"0.0.0.0:{PORTS['grpc-xds']}",
            "--secure-xds-address", f"0.0.0.0:{PORTS['https-dns']}",
            "--debug-address", f"0.0.0.0:{PORTS['http-monitoring']}",
            "--state-dir", STATE_DIR, "--mesh-config", f"{CONFIG_DIR}/pilotfish.yaml"]
    if vals["components.webhooks.enabled"]:
        # all addresses: a bare ":PORT" is 127.0.0.1 to discovery, which the API server
        # and the kubelet cannot reach
        args += ["--webhook-address", f"0.0.0.0:{WEBHOOK_PORT}"]
    return args


def deployment(vals: Mapping[str, Any]) -> dict[str, Any]:
    ports = [{"name": name, "containerPort": port, "protocol": "TCP"}
             for name, port in PORTS.items()]
    if vals["components.webhooks.enabled"]:
        ports.append({"name": "https-webhook", "containerPort": WEBHOOK_PORT,
                      "protocol": "TCP"})
    container = {
        "name": "discovery", "image": image(vals), "imagePullPolicy": vals["imagePullPolicy"],
        "command": ["pilotfish"], "args": discovery_args(vals), "ports": ports,
        # Its identity in the Leases, as istiod's (with a random suffix per start).
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {
            "apiVersion": "v1", "fieldPath": "metadata.name"}}}],
        # /ready: every kind listed and the first push made, as istiod's
        "readinessProbe": {"httpGet": {"path": "/ready", "port": PORTS["http-monitoring"]},
                           "initialDelaySeconds": 1, "periodSeconds": 3,
                           "timeoutSeconds": 5},
        "resources": {"requests": {"cpu": vals["components.discovery.cpu"],
                                   "memory": vals["components.discovery.memory"]}},
        "securityContext": {"allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "state", "mountPath": STATE_DIR},
                         {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],  # the root is read-only
    }
    pod = {"metadata": {"labels": {**SELECTOR, "sidecar.istio.io/inject": "false"}},
           "spec": {"serviceAccountName": "istiod",
                    "securityContext": {"runAsUser": 1337, "runAsGroup": 1337,
                                        "runAsNonRoot": True, "fsGroup": 1337},
                    "containers": [container],
                    "volumes": [{"name": "state", "emptyDir": {}},
                                {"name": "config", "configMap": {"name": "pilotfish"}},
                                {"name": "tmp", "emptyDir": {}}]}}
    dep = _object("apps/v1", "Deployment", "istiod", vals["namespace"], spec={
        "replicas": vals["components.discovery.replicas"],
        "selector": {"matchLabels": dict(SELECTOR)},
        "strategy": {"rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "25%"}},
        "template": pod})
    dep["metadata"]["labels"].update(SELECTOR)
    return dep


def disruption_budget(vals: Mapping[str, Any]) -> dict[str, Any]:
    # One replica must not block a node's drain; with more, keep one serving.
    limit = {"minAvailable": 1} if vals["components.discovery.replicas"] > 1 else \
        {"maxUnavailable": 1}
    return _object("policy/v1", "PodDisruptionBudget", "istiod", vals["namespace"],
                   spec={**limit, "selector": {"matchLabels": dict(SELECTOR)}})


def webhooks(vals: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``pilotfish webhook-config``'s configurations, without a ``caBundle``: discovery's CA
    fills it, and a field this install left out is one a re-install does not take back."""
    try:
        settings = Settings.create(injection_values(vals))
    except InjectionError as exc:
        raise CommandError(str(exc)) from None
    configurations = webhook_configurations("", settings, namespace=vals["namespace"])
    for configuration in configurations:
        configuration["metadata"]["labels"].update(PART_OF)
        for hook in configuration["webhooks"]:
            hook["clientConfig"].pop("caBundle", None)
    return configurations


VENV = "/opt/pilotfish"  # where the Containerfile installs pilotfish
CNI_BIN, CNI_CONF, CNI_RUN = "/opt/cni/bin", "/etc/cni/net.d", "/var/run/pilotfish-cni"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# The node's runtime runs CNI plugins as host programs; pilotfish-cni is Python inside this
# image, so the host gets a wrapper that runs it in this pod's mount namespace, and the
# plugin is chained into the node's first conflist. The runtime passes only each pod's name
# and namespace, so the plugin reads the pod from the API server, with this pod's service
# account (a kubeconfig written here, its token file read at each call: it rotates).
CNI_INSTALL = f"""set -eu
echo $$ > {CNI_RUN}/pid
cat > /host{CNI_BIN}/pilotfish-cni.new <<'EOF'
#!/bin/sh
exec nsenter --mount=/proc/$(cat {CNI_RUN}/pid)/ns/mnt -- {VENV}/bin/pilotfish-cni "$@"
EOF
chmod 755 /host{CNI_BIN}/pilotfish-cni.new
mv /host{CNI_BIN}/pilotfish-cni.new /host{CNI_BIN}/pilotfish-cni
python3 - <<'EOF'
import json, os, pathlib
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
server = f"https://[{{host}}]:{{port}}" if ":" in host else f"https://{{host}}:{{port}}"
kubeconfig = pathlib.Path("{CNI_RUN}/kubeconfig")
kubeconfig.write_text(json.dumps({{
    "apiVersion": "v1", "kind": "Config", "current-context": "cni",
    "clusters": [{{"name": "cluster", "cluster": {{
        "server": server, "certificate-authority": "{SA_DIR}/ca.crt"}}}}],
    "users": [{{"name": "istio-cni", "user": {{"tokenFile": "{SA_DIR}/token"}}}}],
    "contexts": [{{"name": "cni", "context": {{"cluster": "cluster", "user": "istio-cni"}}}}]}}))
confs = sorted(pathlib.Path("/host{CNI_CONF}").glob("*.conflist"))
if not confs:
    raise SystemExit("no conflist in {CNI_CONF}: install the pod network first")
conf = json.loads(confs[0].read_text())
ours = {{"type": "pilotfish-cni", "kubernetes": {{"kubeconfig": str(kubeconfig)}}}}
if ours not in conf["plugins"]:
    conf["plugins"] = [p for p in conf["plugins"] if p.get("type") != "pilotfish-cni"]
    conf["plugins"].append(ours)
    confs[0].write_text(json.dumps(conf, indent=2))
    print("pilotfish-cni chained into", confs[0])
EOF
exec sleep infinity
"""


def cni_rbac(ns: str) -> list[dict[str, Any]]:
    """The CNI plugin reads the pods it captures (their annotations and containers)."""
    rbac_v1, name = "rbac.authorization.k8s.io/v1", f"istio-cni-{ns}"
    return [
        _object(rbac_v1, "ClusterRole", name, rules=[_rule([""], ["pods"], ["get"])]),
        _object(rbac_v1, "ClusterRoleBinding", name,
                subjects=[{"kind": "ServiceAccount", "name": "istio-cni", "namespace": ns}],
                roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": name}),
    ]


def cni_daemonset(vals: Mapping[str, Any]) -> dict[str, Any]:
    def host(name: str, path: str) -> dict[str, Any]:
        return {"name": name, "hostPath": {"path": path}}

    container = {
        "name": "install-cni", "image": image(vals), "imagePullPolicy": vals["imagePullPolicy"],
        "command": ["sh", "-c", CNI_INSTALL],
        "securityContext": {"privileged": True, "runAsUser": 0},
        "volumeMounts": [{"name": "cni-bin", "mountPath": f"/host{CNI_BIN}"},
                         {"name": "cni-conf", "mountPath": f"/host{CNI_CONF}"},
                         {"name": "cni-run", "mountPath": CNI_RUN},
                         {"name": "netns", "mountPath": "/var/run/netns",
                          "mountPropagation": "HostToContainer"}],
        "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}},
    }
    labels = {"k8s-app": "istio-cni-node"}
    ds = _object("apps/v1", "DaemonSet", "istio-cni-node", vals["namespace"], spec={
        "selector": {"matchLabels": dict(labels)},
        "template": {"metadata": {"labels": {**labels, "sidecar.istio.io/inject": "false"}},
                     "spec": {"serviceAccountName": "istio-cni", "hostNetwork": True,
                              "hostPID": True,
                              "nodeSelector": {"kubernetes.io/os": "linux"},
                              "tolerations": [{"operator": "Exists"}],
                              "priorityClassName": "system-node-critical",
                              "containers": [container],
                              "volumes": [host("cni-bin", CNI_BIN), host("cni-conf", CNI_CONF),
                                          host("cni-run", CNI_RUN),
                                          host("netns", "/var/run/netns")]}}})
    ds["metadata"]["labels"].update(labels)
    return ds



def add_value_arguments(p: argparse.ArgumentParser) -> None:
    """``--profile`` and ``--set``, as ``manifest generate``, ``install`` and ``uninstall``
    take them."""
    p.add_argument("--profile", default="default", choices=list(PROFILES),
                   help="default: discovery with the webhooks; minimal: without them")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="change a value (repeatable): namespace, hub, tag, imagePullPolicy, "
                   "components.{crds,webhooks,cni}.enabled, components.discovery.{replicas,"
                   "cpu,memory}, meshConfig.FIELD")
