"""The ``gateway`` template (``inject.istio.io/templates: gateway``): a pod whose only
proxy is the gateway itself, as Istio's gateway injection template makes it.

Where the sidecar template adds a proxy beside an app, this one fills in a pod that already
has an ``istio-proxy`` container (``image: auto``, as Istio's gateway Deployments have it):
the proxy runs as the pod's main container — never an init container, whatever
``global.nativeSidecar`` says — as ``pilotfish agent --type router`` (Istio's ``proxy
router``), serving its own metrics on 15090 and its readiness on 15021. Compared with a
sidecar it has no ``istio-init`` (a gateway does not capture traffic), no
``security.istio.io/tlsMode`` label, no resources of its own, no lifecycle hook unless
``global.proxy.lifecycle`` gives one, a plain security context (the proxy's uid and gid),
and the pod may bind ports below 1024 (``net.ipv4.ip_unprivileged_port_start=0``, unless
``gateways.securityContext`` gives the pod's security context).
"""

from __future__ import annotations

from typing import Any

from pilotfish.discovery.inject.template import (
    ANN,
    PROMETHEUS_PORT,
    PROXY,
    Context,
    agent_args,
    injected_labels,
    proxy_env,
    readiness_probe,
    volume_mounts,
    volumes,
)

# The sidecar's volumes a gateway has too (no CRL, no user or tracer volumes).
VOLUMES = ("workload-socket", "credential-socket", "workload-certs",
           "gke-workload-certificate", "istio-envoy", "istio-data", "istio-podinfo",
           "istio-token", "istiod-ca-cert")
SCRATCH = ("credential-socket", "workload-certs")  # explicitly emptyDir on a gateway


def labels(ctx: Context) -> dict[str, str]:
    """The canonical service labels; a gateway is not an mTLS sidecar (no tlsMode)."""
    return {k: v for k, v in injected_labels(ctx).items()
            if k.startswith("service.istio.io/canonical-")}


def render(ctx: Context) -> dict[str, Any]:
    """The pod fragment the gateway template makes for this pod."""
    s = ctx.settings
    container: dict[str, Any] = {
        "name": PROXY,
        "image": s.image("proxy", ctx.annotations.get(ANN + "proxyImage", "")),
        "ports": [{"containerPort": PROMETHEUS_PORT, "protocol": "TCP",
                   "name": "http-envoy-prom"}],
        # A router serves no metrics of its own unless told: this pod declares 15090.
        "args": [*agent_args(ctx, "router", labels(ctx)),
                 "--prometheus-port", str(PROMETHEUS_PORT)],
    }
    lifecycle = s.value("global.proxy.lifecycle")
    if lifecycle:
        container["lifecycle"] = dict(lifecycle)
    container["securityContext"] = {"runAsUser": ctx.proxy_uid or 1337,
                                    "runAsGroup": ctx.proxy_gid or 1337}
    container["env"] = proxy_env(ctx, router=True)
    if s.text("global.imagePullPolicy"):
        container["imagePullPolicy"] = s.text("global.imagePullPolicy")
    container["readinessProbe"] = readiness_probe(ctx)
    container["volumeMounts"] = [m for m in volume_mounts(ctx) if m["name"] in VOLUMES]
    spec: dict[str, Any] = {
        "securityContext": dict(s.value("gateways.securityContext") or {}) or {
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
        "containers": [container],
        "volumes": [{**v, "emptyDir": {}} if v["name"] in SCRATCH else v
                    for v in volumes(ctx) if v["name"] in VOLUMES],
    }
    secrets = s.value("global.imagePullSecrets") or []
    if secrets:
        spec["imagePullSecrets"] = [{"name": str(name)} for name in secrets]
    return {"metadata": {"labels": labels(ctx),
                         "annotations": {"istio.io/rev": s.revision or "default"}},
            "spec": spec}
