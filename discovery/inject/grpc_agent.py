"""The ``grpc-agent`` template (``inject.istio.io/templates: grpc-agent``): proxyless gRPC
with an agent beside the app and no proxy, as Istio's template of that name makes it.

The pod gets an ``istio-proxy`` container that runs ``pilotfish agent --proxy grpc``
(Istio's ``pilot-agent`` with ``DISABLE_ENVOY=true`` and ``ISTIO_META_GENERATOR=grpc``):
it gets the pod's certificate with its token and writes it to ``OUTPUT_CERTS``
(``/var/lib/istio/data``, the ``istio-data`` volume), writes gRPC's xDS bootstrap to
``/etc/istio/proxy/grpc-bootstrap.json`` (the ``istio-xds`` volume) and relays the app's
xDS from ``/etc/istio/proxy/XDS`` to discovery over mTLS. Every app container gets
``GRPC_XDS_BOOTSTRAP`` pointing at that bootstrap and both volumes mounted. No capture, no
``istio-init``; the agent's readiness is on its status port (15020), which the app's
``postStart`` waits for; the app's probes are not rewritten. The
``security.istio.io/tlsMode`` label is left to the user, as in Istio: only an app that
uses xDS credentials serves mTLS.

The volumes and the agent's mounts are the sidecar's, less what only Envoy uses, with
``istio-envoy`` named ``istio-xds`` as Istio names it here. One difference from Istio's
template, which puts the agent's resources and volume mounts under the same condition as
its readiness probe: with ``status.sidecar.istio.io/port: 0`` the agent keeps its mounts
here (without them it could not write the bootstrap).
"""

from __future__ import annotations

from typing import Any

from pilotfish.discovery.inject.gateway import labels
from pilotfish.discovery.inject.settings import clean_proxy_config
from pilotfish.discovery.inject.template import (
    ANN,
    CONFIG_DIR,
    PROXY,
    Context,
    _env,
    _field,
    agent_args,
    identity_env,
    pod_ports_env,
    readiness_probe,
    resources,
    volume_mounts,
)
from pilotfish.discovery.inject.template import volumes as sidecar_volumes

STATUS_PORT = 15020  # readiness and metrics: there is no proxy to serve 15021
DATA_DIR = "/var/lib/istio/data"  # OUTPUT_CERTS: the workload certificate as files
BOOTSTRAP = f"{CONFIG_DIR}/grpc-bootstrap.json"
CREDENTIALS_DIR = "/var/run/secrets/workload-spiffe-credentials"
READY_URL = f"http://localhost:{STATUS_PORT}/healthz/ready"
# The sidecar's volumes this template has not: no external SDS socket, CRL or tracer
# certificates (there is no Envoy). Istio's keeps a custom bootstrap's volume, unmounted.
DROPPED = ("credential-socket", "istio-ca-crl", "lightstep-certs")
UNMOUNTED = (*DROPPED, "custom-bootstrap-volume")


def _gke(ctx: Context) -> bool:
    return ctx.settings.text("global.caName") == "GkeWorkloadCertificate"


def _xds(entry: dict[str, Any]) -> dict[str, Any]:
    """The sidecar's ``istio-envoy`` volume (or mount) under this template's name."""
    return {**entry, "name": "istio-xds"} if entry["name"] == "istio-envoy" else entry


def _credentials_mount(ctx: Context) -> dict[str, Any]:
    if _gke(ctx):
        return {"name": "gke-workload-certificate", "mountPath": CREDENTIALS_DIR,
                "readOnly": True}
    return {"name": "workload-certs", "mountPath": CREDENTIALS_DIR}


def agent_env(ctx: Context) -> list[dict[str, Any]]:
    """The agent's environment, in the template's order."""
    s, mesh = ctx.settings, ctx.settings.mesh
    env = [_env("ISTIO_META_GENERATOR", "grpc"), _env("OUTPUT_CERTS", DATA_DIR)]
    if str((mesh.get("inboundTrafficPolicy") or {}).get("mode", "")).upper() == "LOCALHOST":
        env.append(_env("REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION", "true"))
    env += [*identity_env(ctx),
            _env("PROXY_CONFIG", clean_proxy_config(ctx.proxy_config) + "\n"),
            pod_ports_env(ctx),
            _env("ISTIO_META_APP_CONTAINERS", ",".join(ctx.app_containers)),
            _env("ISTIO_META_CLUSTER_ID", s.text("global.multiCluster.clusterName")
                 or "Kubernetes"),
            _field("ISTIO_META_NODE_NAME", "spec.nodeName")]
    if s.text("global.network"):
        env.append(_env("ISTIO_META_NETWORK", s.text("global.network")))
    w = ctx.workload
    if w.name:
        env.append(_env("ISTIO_META_WORKLOAD_NAME", w.name))
    if w.api_version and w.name:
        env.append(_env("ISTIO_META_OWNER", f"kubernetes://apis/{w.api_version}/namespaces/"
                        f"{w.namespace or 'default'}/{w.kind.lower()}s/{w.name}"))
    trust_domain = s.trust_domain()
    if s.text("global.meshID") or trust_domain:
        env.append(_env("ISTIO_META_MESH_ID", s.text("global.meshID") or trust_domain))
    if trust_domain:
        env.append(_env("TRUST_DOMAIN", trust_domain))
    env += [_env(k, str(v)) for k, v in sorted(ctx.metadata_env.items())]
    # gRPC resolves xds:/// names itself: no DNS capture; and no Envoy to run.
    env += [_env("ISTIO_META_DNS_CAPTURE", "false"), _env("DISABLE_ENVOY", "true")]
    return env


def agent_container(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    args = agent_args(ctx, "sidecar", labels(ctx))
    at = args.index("--type") + 2
    args[at:at] = ["--proxy", "grpc"]
    if ctx.status_port != "0":  # the template probes and waits on 15020, whatever the port
        at = args.index("--status-port") + 1
        args[at] = str(STATUS_PORT)
    container: dict[str, Any] = {
        "name": PROXY,
        "image": s.image("proxy", ctx.annotations.get(ANN + "proxyImage", "")),
        "ports": [{"containerPort": STATUS_PORT, "protocol": "TCP", "name": "mesh-metrics"}],
        "args": args,
        "lifecycle": {"postStart": {"exec": {"command": [
            "pilotfish", "agent", "wait", f"--url={READY_URL}"]}}},
        "env": agent_env(ctx),
    }
    if s.text("global.imagePullPolicy"):
        container["imagePullPolicy"] = s.text("global.imagePullPolicy")
    if ctx.status_port != "0":
        probe = readiness_probe(ctx)
        probe["httpGet"]["port"] = STATUS_PORT  # the agent's status port: no 15021 here
        container["readinessProbe"] = probe
    container["resources"] = resources(ctx)
    container["volumeMounts"] = [_xds(m) for m in volume_mounts(ctx)
                                  if m["name"] not in UNMOUNTED]
    return container


def app_container(ctx: Context, name: str) -> dict[str, Any]:
    return {"name": name,
            "env": [_env("GRPC_XDS_EXPERIMENTAL_SECURITY_SUPPORT", "true"),
                    _env("GRPC_XDS_BOOTSTRAP", BOOTSTRAP)],
            "volumeMounts": [{"mountPath": DATA_DIR, "name": "istio-data"},
                             {"mountPath": CONFIG_DIR, "name": "istio-xds"},
                             _credentials_mount(ctx)]}


def volumes(ctx: Context) -> list[dict[str, Any]]:
    return [_xds(v) for v in sidecar_volumes(ctx) if v["name"] not in DROPPED]


def render(ctx: Context) -> dict[str, Any]:
    """The pod fragment the grpc-agent template makes for this pod."""
    s = ctx.settings
    annotations = {"istio.io/rev": s.revision or "default"}
    if ctx.app_containers:
        for key in ("kubectl.kubernetes.io/default-logs-container",
                    "kubectl.kubernetes.io/default-container"):
            if key not in ctx.annotations:
                annotations[key] = ctx.app_containers[0]
    annotations[ANN + "rewriteAppHTTPProbers"] = "false"
    spec: dict[str, Any] = {
        "containers": [agent_container(ctx),
                       *(app_container(ctx, name) for name in ctx.app_containers)],
        "volumes": volumes(ctx),
    }
    secrets = s.value("global.imagePullSecrets") or []
    if secrets:
        spec["imagePullSecrets"] = [{"name": str(name)} for name in secrets]
    return {"metadata": {"labels": labels(ctx), "annotations": annotations}, "spec": spec}
