"""The sidecar template: what injection lays over a pod, built the way Istio's
``injection-template.yaml`` describes it, with pilotfish's commands.

``render`` returns a pod fragment (labels, annotations, ``istio-init``, ``istio-proxy``, the
volumes) that ``pod.inject`` merges onto the pod. It follows Istio's template field by field,
with two differences, both in command lines: ``istio-init`` runs ``pilotfish iptables`` (the
same flags as ``istio-iptables``; the log level becomes ``pilotfish --log-level``, and
``istio-validation``, CNI's check container, is not added: pilotfish has no validation
mode, and with the CNI plugin the pod simply gets no init container), and ``istio-proxy``
runs ``pilotfish agent`` with flags for what pilot-agent reads from the environment. The
hooks ``pilot-agent wait`` and ``pilot-agent request ... drain`` become ``pilotfish agent
wait`` and ``pilotfish agent request ... drain``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from pilotfish.core.pod_owner import PodOwner
from pilotfish.discovery.inject.quantity import canonical_resources
from pilotfish.discovery.inject.settings import (
    InjectionError,
    Settings,
    clean_proxy_config,
    go_string,
)

PROXY = "istio-proxy"
INIT = "istio-init"
ANN = "sidecar.istio.io/"
TRAFFIC = "traffic.sidecar.istio.io/"
STATUS_PORT = "status.sidecar.istio.io/port"
READINESS = "readiness.status.sidecar.istio.io/"
REROUTE = "istio.io/reroute-virtual-interfaces"
HEALTH_PORT = 15021  # the agent's /healthz/ready
PROMETHEUS_PORT = 15090  # the proxy's own /stats/prometheus
TOKEN_DIR = "/var/run/secrets/tokens"
ROOT_CERT_DIR = "/var/run/secrets/istio"
CONFIG_DIR = "/etc/istio/proxy"  # the istio-envoy volume: bootstrap and sockets
AGENT_LOG_LEVELS = {"debug": "debug", "info": "info", "warn": "warning", "warning": "warning",
                    "error": "error", "fatal": "error", "none": "error"}


# What owns the pod (Istio's DeploymentMeta and TypeMeta), as the template names it.
Workload = PodOwner


@attrs.frozen
class Context:
    """Everything the template reads."""

    pod: Mapping[str, Any]  # metadata and spec, as the pod stands before injection
    settings: Settings
    proxy_config: Mapping[str, Any]
    workload: Workload
    native: bool = True  # the cluster runs native sidecars unless the pod says otherwise
    # The user's own istio-proxy runAsUser/runAsGroup: capture must exempt that user.
    proxy_uid: int | None = None
    proxy_gid: int | None = None

    @property
    def annotations(self) -> Mapping[str, str]:
        return (self.pod.get("metadata") or {}).get("annotations") or {}

    @property
    def labels(self) -> Mapping[str, str]:
        return (self.pod.get("metadata") or {}).get("labels") or {}

    @property
    def spec(self) -> Mapping[str, Any]:
        return self.pod.get("spec") or {}

    def annotation(self, name: str, default: Any) -> str:
        """The pod's annotation if it has it (even empty), else the default, as text."""
        if name in self.annotations:
            return str(self.annotations[name])
        return go_string(default)

    @property
    def interception(self) -> str:
        return self.annotation(ANN + "interceptionMode",
                               self.proxy_config.get("interceptionMode") or "REDIRECT")

    @property
    def tproxy(self) -> bool:
        return self.interception == "TPROXY"

    @property
    def native_sidecar(self) -> bool:
        chosen = self.annotations.get(ANN + "nativeSidecar") or ("true" if self.native
                                                                 else "false")
        return chosen != "false"

    @property
    def hold(self) -> bool:
        return (bool(self.proxy_config.get("holdApplicationUntilProxyStarts"))
                or self.settings.flag("global.proxy.holdApplicationUntilProxyStarts")) \
            and not self.native_sidecar

    @property
    def status_port(self) -> str:
        return self.annotation(STATUS_PORT, self.settings.value("global.proxy.statusPort"))

    @property
    def app_containers(self) -> list[str]:
        return [str(c.get("name")) for c in self.spec.get("containers") or ()
                if c.get("name") != PROXY]

    @property
    def metadata_env(self) -> Mapping[str, str]:
        return self.proxy_config.get("proxyMetadata") or {}


def render(ctx: Context) -> dict[str, Any]:
    """The pod fragment the sidecar template makes for this pod."""
    spec: dict[str, Any] = {}
    init = [] if ctx.interception == "NONE" or ctx.settings.cni else [init_container(ctx)]
    proxy = proxy_container(ctx)
    if ctx.native_sidecar:
        spec["initContainers"] = [*init, proxy]
    else:
        spec["initContainers"] = init
        spec["containers"] = [proxy]
    spec["volumes"] = volumes(ctx)
    secrets = ctx.settings.value("global.imagePullSecrets") or []
    if secrets:
        spec["imagePullSecrets"] = [{"name": str(name)} for name in secrets]
    return {"metadata": {"labels": injected_labels(ctx),
                         "annotations": injected_annotations(ctx)},
            "spec": spec}


def canonical_name(ctx: Context) -> str:
    name = (ctx.labels.get("service.istio.io/canonical-name")
            or ctx.labels.get("app.kubernetes.io/name") or ctx.labels.get("app")
            or ctx.workload.name)
    return str(name)[:63].strip("-_.")


def injected_labels(ctx: Context) -> dict[str, str]:
    out = {"security.istio.io/tlsMode": ctx.labels.get("security.istio.io/tlsMode") or "istio"}
    if ctx.metadata_env.get("ISTIO_META_ENABLE_HBONE") == "true":
        out["networking.istio.io/tunnel"] = ctx.labels.get("networking.istio.io/tunnel") or "http"
    out["service.istio.io/canonical-name"] = canonical_name(ctx)
    out["service.istio.io/canonical-revision"] = str(
        ctx.labels.get("service.istio.io/canonical-revision")
        or ctx.labels.get("app.kubernetes.io/version") or ctx.labels.get("version") or "latest")
    return out


def injected_annotations(ctx: Context) -> dict[str, str]:
    s = ctx.settings
    out = {"istio.io/rev": s.revision or "default"}
    if ctx.app_containers:
        first = ctx.app_containers[0]
        for key in ("kubectl.kubernetes.io/default-logs-container",
                    "kubectl.kubernetes.io/default-container"):
            if key not in ctx.annotations:
                out[key] = first
    if not s.cni:
        return out
    if s.text("pilot.cni.provider") == "multus":
        out["k8s.v1.cni.cncf.io/networks"] = append_multus_network(
            ctx.annotations.get("k8s.v1.cni.cncf.io/networks", ""), "default/istio-cni")
    out[ANN + "interceptionMode"] = ctx.interception
    for key, value in (("includeOutboundIPRanges", "global.proxy.includeIPRanges"),
                       ("excludeOutboundIPRanges", "global.proxy.excludeIPRanges")):
        if ctx.annotation(TRAFFIC + key, s.value(value)):
            out[TRAFFIC + key] = ctx.annotation(TRAFFIC + key, s.value(value))
    out[TRAFFIC + "includeInboundPorts"] = ctx.annotation(
        TRAFFIC + "includeInboundPorts", s.value("global.proxy.includeInboundPorts"))
    out[TRAFFIC + "excludeInboundPorts"] = excluded_inbound(ctx)
    for key in ("includeOutboundPorts", "excludeOutboundPorts"):
        if TRAFFIC + key in ctx.annotations or s.text(f"global.proxy.{key}"):
            out[TRAFFIC + key] = ctx.annotation(TRAFFIC + key, s.value(f"global.proxy.{key}"))
    for key in (TRAFFIC + "kubevirtInterfaces", REROUTE, TRAFFIC + "excludeInterfaces"):
        if ctx.annotations.get(key):
            out[key] = str(ctx.annotations[key])
    return out


def excluded_inbound(ctx: Context) -> str:
    """The pod's excluded inbound ports with the agent's status port added (Istio's
    ``excludeInboundPort``)."""
    excluded = ctx.annotation(TRAFFIC + "excludeInboundPorts",
                              ctx.settings.value("global.proxy.excludeInboundPorts"))
    port = ctx.status_port.strip()
    if not port or port == "0":
        return excluded
    ports = [p.strip() for p in excluded.split(",")]
    if port in ports:
        return excluded
    return ",".join([p for p in ports if p] + [port])


def append_multus_network(existing: str, network: str) -> str:
    """Istio CNI's network added to the pod's Multus networks (a list or JSON), once."""
    text = existing.strip()
    if not text:
        return network
    if text.startswith("["):
        namespace, _, name = network.rpartition("/")
        if f'"{name}"' in text:
            return existing
        entry = f'{{"name": "{name}", "namespace": "{namespace}"}}' if namespace else \
            f'{{"name": "{name}"}}'
        i = existing.rstrip().rfind("]")
        return existing[:i] + f", {entry}]"
    names = [n.strip() for n in existing.split(",")]
    if network in names:
        return existing
    return f"{existing}, {network}"


def resources(ctx: Context) -> dict[str, Any]:
    """The proxy's (and istio-init's) resources: the ``proxyCPU``/``proxyMemory``[``Limit``]
    annotations when any is set, else ``global.proxy.resources``."""
    keys = {"proxyCPU": ("requests", "cpu"), "proxyMemory": ("requests", "memory"),
            "proxyCPULimit": ("limits", "cpu"), "proxyMemoryLimit": ("limits", "memory")}
    given = {k: ctx.annotations[ANN + k] for k in keys if ANN + k in ctx.annotations}
    if given:
        out: dict[str, dict[str, Any]] = {}
        for key, value in given.items():
            part, resource = keys[key]
            out.setdefault(part, {})[resource] = str(value)
        return canonical_resources(out)
    configured = ctx.settings.value("global.proxy.resources") or {}
    return canonical_resources({part: dict(amounts) for part, amounts in configured.items()
                                if isinstance(amounts, Mapping) and amounts})


def log_level(istio_level: str) -> str:
    """``--log_output_level`` (``default:info``, ``all:debug,ads:warn``) → the level
    ``pilotfish --log-level`` takes: the ``default`` (or ``all``, or first) scope's."""
    scopes = {}
    for part in istio_level.split(","):
        scope, _, level = part.strip().rpartition(":")
        scopes[scope or "default"] = level.strip().lower()
    level = scopes.get("default") or scopes.get("all") or next(iter(scopes.values()), "")
    return AGENT_LOG_LEVELS.get(level, "info")


def init_container(ctx: Context) -> dict[str, Any]:
    s, mesh = ctx.settings, ctx.settings.mesh
    agent_level = ctx.annotation(ANN + "agentLogLevel", s.value("global.logging.level"))
    args = ["--log-level", log_level(agent_level), "iptables",
            "-p", go_string(mesh.get("proxyListenPort") or 15001),
            "-z", go_string(mesh.get("proxyInboundListenPort") or 15006),
            "-u", str(ctx.proxy_uid or 1337),
            "-m", ctx.interception,
            "-i", ctx.annotation(TRAFFIC + "includeOutboundIPRanges",
                                 s.value("global.proxy.includeIPRanges")),
            "-x", ctx.annotation(TRAFFIC + "excludeOutboundIPRanges",
                                 s.value("global.proxy.excludeIPRanges")),
            "-b", ctx.annotation(TRAFFIC + "includeInboundPorts",
                                 s.value("global.proxy.includeInboundPorts")),
            "-d", ",".join(p for p in ("15090,15021", excluded_inbound(ctx)) if p)]
    for flag, key in (("-q", "includeOutboundPorts"), ("-o", "excludeOutboundPorts")):
        if TRAFFIC + key in ctx.annotations or s.text(f"global.proxy.{key}"):
            args += [flag, ctx.annotation(TRAFFIC + key, s.value(f"global.proxy.{key}"))]
    if REROUTE in ctx.annotations:
        args += ["-k", str(ctx.annotations[REROUTE])]
    elif TRAFFIC + "kubevirtInterfaces" in ctx.annotations:
        args += ["-k", str(ctx.annotations[TRAFFIC + "kubevirtInterfaces"])]
    if TRAFFIC + "excludeInterfaces" in ctx.annotations:
        args += ["-c", str(ctx.annotations[TRAFFIC + "excludeInterfaces"])]
    container: dict[str, Any] = {
        "name": INIT,
        "image": s.image("proxy_init", ctx.annotations.get(ANN + "proxyImage", "")),
        "args": args,
    }
    if s.text("global.imagePullPolicy"):
        container["imagePullPolicy"] = s.text("global.imagePullPolicy")
    if ctx.metadata_env:
        container["env"] = [{"name": k, "value": str(v)}
                            for k, v in sorted(ctx.metadata_env.items())]
    container["resources"] = resources(ctx)
    privileged = s.flag("global.proxy.privileged")
    container["securityContext"] = {
        "allowPrivilegeEscalation": privileged, "privileged": privileged,
        "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        "readOnlyRootFilesystem": False, "runAsGroup": 0, "runAsNonRoot": False,
        "runAsUser": 0,
        **_seccomp(s),
    }
    return container


def _seccomp(s: Settings) -> dict[str, Any]:
    profile = s.value("global.proxy.seccompProfile")
    return {"seccompProfile": dict(profile)} if profile else {}


def agent_args(ctx: Context, proxy_type: str = "sidecar",
               injected: Mapping[str, str] | None = None) -> list[str]:
    """``pilotfish agent``'s command line for this pod: what pilot-agent takes from its
    environment (the pod's name, namespace, IP and service account through Kubernetes'
    ``$(VAR)`` expansion of the env the template sets) and flags. ``injected``: the labels
    the template adds (default: the sidecar's)."""
    s, config = ctx.settings, ctx.proxy_config
    agent_level = ctx.annotation(ANN + "agentLogLevel", s.value("global.logging.level"))
    proxy_level = ctx.annotation(ANN + "logLevel", s.value("global.proxy.logLevel"))
    args = ["--log-level", log_level(agent_level), "agent", "--type", proxy_type,
            "--discovery", s.discovery_address(config),
            "--name", "$(POD_NAME)", "--namespace", "$(POD_NAMESPACE)",
            "--ip", "$(INSTANCE_IP)", "--service-account", "$(SERVICE_ACCOUNT)",
            "--interception-mode", ctx.interception if ctx.interception in
            ("REDIRECT", "TPROXY", "NONE") else "REDIRECT",
            "--proxy-log-level", proxy_level,
            "--status-port", ctx.status_port,
            "--config-dir", CONFIG_DIR,
            "--token-file", f"{TOKEN_DIR}/istio-token",
            "--root-cert", f"{ROOT_CERT_DIR}/root-cert.pem",
            "--ca-address", "$(CA_ADDR)"]
    if injected is None:
        injected = injected_labels(ctx)
    labels = {**ctx.labels, **{k: v for k, v in injected.items() if k not in ctx.labels}}
    if labels:
        args += ["--labels", ",".join(f"{k}={v}" for k, v in labels.items())]
    ports = pod_ports(ctx.spec)
    if ports:
        args += ["--pod-ports", ",".join(
            f"{p['name'] + ':' if p.get('name') else ''}{p['containerPort']}"
            f"/{p.get('protocol') or 'TCP'}" for p in ports)]
    for flag, key in (("--drain-duration", "drainDuration"),
                      ("--termination-drain-duration", "terminationDrainDuration"),
                      ("--concurrency", "concurrency")):
        if config.get(key) is not None:
            args += [flag, go_string(config[key])]
    return args


def pod_ports(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [port for c in spec.get("containers") or () for port in c.get("ports") or ()
            if isinstance(port, Mapping) and port.get("containerPort")]


def _port_json(port: Mapping[str, Any]) -> str:
    fields = ("name", "hostPort", "containerPort", "protocol", "hostIP")
    return json.dumps({f: port[f] for f in fields if port.get(f)}, separators=(",", ":"))


def _field(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _limit(name: str, resource: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"resourceFieldRef": {"resource": resource,
                                                             "divisor": "1"}}}


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value} if value else {"name": name}


def identity_env(ctx: Context) -> list[dict[str, Any]]:
    """Who the pod is and where its CA is, as every agent template gives them."""
    s = ctx.settings
    return [_env("PILOT_CERT_PROVIDER", s.text("global.pilotCertProvider")),
            _env("CA_ADDR", s.ca_address()),
            _field("POD_NAME", "metadata.name"), _field("POD_NAMESPACE", "metadata.namespace"),
            _field("INSTANCE_IP", "status.podIP"),
            _field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
            _field("HOST_IP", "status.hostIP")]


def pod_ports_env(ctx: Context) -> dict[str, Any]:
    """``ISTIO_META_POD_PORTS``: the containers' ports, one JSON object a line."""
    lines = ["    " + ("," if i else "") + _port_json(p)
             for i, p in enumerate(pod_ports(ctx.spec))]
    return _env("ISTIO_META_POD_PORTS", "\n".join(["[", *lines, "]"]))


def proxy_env(ctx: Context, router: bool = False) -> list[dict[str, Any]]:
    """The proxy's environment; a gateway's (``router``) has no app probes to rewrite and
    names the app containers after the memory limit."""
    s, mesh = ctx.settings, ctx.settings.mesh
    env: list[dict[str, Any]] = []
    if not router and \
            str((mesh.get("inboundTrafficPolicy") or {}).get("mode", "")).upper() == "LOCALHOST":
        env.append(_env("REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION", "true"))
    env += [*identity_env(ctx), _limit("ISTIO_CPU_LIMIT", "limits.cpu"),
            _env("PROXY_CONFIG", clean_proxy_config(ctx.proxy_config) + "\n"),
            pod_ports_env(ctx)]
    apps = [_env("ISTIO_META_APP_CONTAINERS", ",".join(ctx.app_containers))]
    memory = [_limit("GOMEMLIMIT", "limits.memory")]
    env += [*memory, *apps] if router else [*apps, *memory]
    compliance = s.text("global.compliancePolicy")
    if compliance:
        env.append(_env("COMPLIANCE_POLICY", compliance))
        if compliance == "fips-140-3":
            env.append(_env("GODEBUG", "fips140=only"))
    env += [_env("ISTIO_META_CLUSTER_ID", s.text("global.multiCluster.clusterName")
                 or "Kubernetes"),
            _field("ISTIO_META_NODE_NAME", "spec.nodeName"),
            _env("ISTIO_META_INTERCEPTION_MODE",
                 ctx.annotations.get(ANN + "interceptionMode")
                 or str(ctx.proxy_config.get("interceptionMode") or "REDIRECT"))]
    workload = ctx.labels.get("service.istio.io/workload-name") or ctx.workload.name
    if workload:
        env.append(_env("ISTIO_META_WORKLOAD_NAME", str(workload)))
    w = ctx.workload
    if w.api_version and w.name:
        env.append(_env("ISTIO_META_OWNER", f"kubernetes://apis/{w.api_version}/namespaces/"
                        f"{w.namespace or 'default'}/{w.kind.lower()}s/{w.name}"))
    if ANN + "bootstrapOverride" in ctx.annotations:
        env.append(_env("ISTIO_BOOTSTRAP_OVERRIDE",
                        "/etc/istio/custom-bootstrap/custom_bootstrap.json"))
    trust_domain = s.trust_domain()
    if s.text("global.meshID") or trust_domain:
        env.append(_env("ISTIO_META_MESH_ID", s.text("global.meshID") or trust_domain))
    if trust_domain:
        env.append(_env("TRUST_DOMAIN", trust_domain))
    if s.text("global.proxy.tracer") == "datadog" and "apm.datadoghq.com/env" in ctx.annotations:
        try:
            extra = json.loads(ctx.annotations["apm.datadoghq.com/env"])
        except ValueError:
            raise InjectionError("annotation apm.datadoghq.com/env: expected a JSON object "
                                 "of variables") from None
        env += [_env(str(k), go_string(v)) for k, v in sorted(dict(extra).items())]
    otel = otel_resource_attributes(ctx)
    if otel:
        env.append(_env("OTEL_RESOURCE_ATTRIBUTES", otel))
    env += [_env(k, str(v)) for k, v in sorted(ctx.metadata_env.items())]
    return env


def otel_resource_attributes(ctx: Context) -> str:
    """OpenTelemetry's service attributes, when a tracing provider of the mesh asks for
    its semantic conventions."""
    providers = ctx.settings.mesh.get("extensionProviders") or []
    wanted = any(isinstance(p, Mapping) and isinstance(p.get("opentelemetry"), Mapping)
                 and p["opentelemetry"].get("serviceAttributeEnrichment")
                 == "OTEL_SEMANTIC_CONVENTIONS" for p in providers)
    if not wanted:
        return ""
    namespace = ctx.workload.namespace or "default"
    parts = [f"service.namespace={namespace}"]
    version = ctx.labels.get("app.kubernetes.io/version") or ctx.labels.get("version")
    if version:
        parts.append(f"service.version={version}")
    if ctx.app_containers:
        parts.append(f"service.instance.id={namespace}.$(POD_NAME).{ctx.app_containers[0]}")
    return ",".join(parts)


def proxy_container(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    container: dict[str, Any] = {
        "name": PROXY,
        "image": s.image("proxy", ctx.annotations.get(ANN + "proxyImage", "")),
    }
    if ctx.native_sidecar:
        container["restartPolicy"] = "Always"
    container["ports"] = [{"containerPort": PROMETHEUS_PORT, "protocol": "TCP",
                           "name": "http-envoy-prom"}]
    container["args"] = agent_args(ctx)
    lifecycle = s.value("global.proxy.lifecycle")
    if lifecycle:
        container["lifecycle"] = dict(lifecycle)
    elif ctx.hold:
        container["lifecycle"] = {"postStart": {"exec": {"command": [
            "pilotfish", "agent", "wait"]}}}
    elif ctx.native_sidecar:
        # preStop runs when the pod starts shutting down: start draining; SIGTERM comes
        # once the apps are gone.
        container["lifecycle"] = {"preStop": {"exec": {"command": [
            "pilotfish", "agent", "request", f"--debug-port={ctx.status_port}", "POST",
            "drain"]}}}
    container["env"] = proxy_env(ctx)
    if s.text("global.imagePullPolicy"):
        container["imagePullPolicy"] = s.text("global.imagePullPolicy")
    if ctx.status_port != "0":
        if s.flag("global.proxy.startupProbe.enabled"):
            container["startupProbe"] = {
                "httpGet": {"path": "/healthz/ready", "port": HEALTH_PORT},
                "periodSeconds": 1, "timeoutSeconds": 3,
                "failureThreshold": s.number("global.proxy.startupProbe.failureThreshold")}
        container["readinessProbe"] = readiness_probe(ctx)
    container["securityContext"] = proxy_security_context(ctx)
    container["resources"] = resources(ctx)
    container["volumeMounts"] = volume_mounts(ctx)
    return container


def readiness_probe(ctx: Context) -> dict[str, Any]:
    """The agent's ``/healthz/ready``, with the readiness values or the pod's
    ``readiness.status.sidecar.istio.io/*`` annotations."""
    s = ctx.settings
    readiness: dict[str, Any] = {"httpGet": {"path": "/healthz/ready", "port": HEALTH_PORT}}
    for field in ("initialDelaySeconds", "periodSeconds"):
        value = _whole(ctx, READINESS + field,
                       s.value(f"global.proxy.readiness{field[0].upper()}{field[1:]}"))
        if value:
            readiness[field] = value
    readiness["timeoutSeconds"] = 3
    readiness["failureThreshold"] = _whole(ctx, READINESS + "failureThreshold",
                                           s.value("global.proxy.readinessFailureThreshold"))
    return readiness


def _whole(ctx: Context, annotation: str, default: Any) -> int:
    text = ctx.annotation(annotation, default)
    try:
        return int(text)
    except ValueError:
        raise InjectionError(f"annotation {annotation}: {text!r} is not a whole number"
                             ) from None


def proxy_security_context(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    if ctx.metadata_env.get("IPTABLES_TRACE_LOGGING") == "true":
        return {"allowPrivilegeEscalation": True,
                "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
                "privileged": True, "readOnlyRootFilesystem": True, "runAsGroup": 1337,
                "runAsNonRoot": False, "runAsUser": 0, **_seccomp(s)}
    bind = ctx.annotation(ANN + "capNetBindService",
                          s.value("global.proxy.capNetBindService")) == "true"
    privileged = s.flag("global.proxy.privileged")
    capabilities: dict[str, Any] = {}
    add = [cap for cap, wanted in (("NET_ADMIN", ctx.tproxy), ("NET_BIND_SERVICE", bind))
           if wanted]
    if add:
        capabilities["add"] = add
    capabilities["drop"] = ["ALL"]
    context: dict[str, Any] = {"allowPrivilegeEscalation": privileged,
                               "capabilities": capabilities, "privileged": privileged,
                               "readOnlyRootFilesystem": True}
    if add:
        context.update(runAsNonRoot=False, runAsUser=0, runAsGroup=1337)
    else:
        context.update(runAsNonRoot=True, runAsUser=ctx.proxy_uid or 1337,
                       runAsGroup=ctx.proxy_gid or 1337)
    return {**context, **_seccomp(s)}


def _user_entries(ctx: Context, annotation: str) -> list[tuple[str, Mapping[str, Any]]]:
    text = ctx.annotations.get(annotation)
    if text is None:
        return []
    try:
        entries = json.loads(text)
    except ValueError:
        entries = None
    if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
        raise InjectionError(f"annotation {annotation}: expected a JSON object of name → "
                             "volume (or mount) fields")
    return sorted(entries.items())


def volume_mounts(ctx: Context) -> list[dict[str, Any]]:
    s = ctx.settings
    mounts: list[dict[str, Any]] = [
        {"name": "workload-socket", "mountPath": "/var/run/secrets/workload-spiffe-uds"},
        {"name": "credential-socket", "mountPath": "/var/run/secrets/credential-uds"}]
    if s.text("global.caName") == "GkeWorkloadCertificate":
        mounts.append({"name": "gke-workload-certificate", "readOnly": True,
                       "mountPath": "/var/run/secrets/workload-spiffe-credentials"})
    else:
        mounts.append({"name": "workload-certs",
                       "mountPath": "/var/run/secrets/workload-spiffe-credentials"})
    if s.text("global.pilotCertProvider") == "istiod":
        mounts += [{"mountPath": ROOT_CERT_DIR, "name": "istiod-ca-cert"},
                   {"mountPath": f"{ROOT_CERT_DIR}/crl", "name": "istio-ca-crl"}]
    mounts.append({"mountPath": "/var/lib/istio/data", "name": "istio-data"})
    if ANN + "bootstrapOverride" in ctx.annotations:
        mounts.append({"mountPath": "/etc/istio/custom-bootstrap",
                       "name": "custom-bootstrap-volume"})
    mounts += [{"mountPath": CONFIG_DIR, "name": "istio-envoy"},
               {"mountPath": TOKEN_DIR, "name": "istio-token"}]
    if s.flag("global.mountMtlsCerts"):
        mounts.append({"mountPath": "/etc/certs/", "name": "istio-certs", "readOnly": True})
    mounts.append({"name": "istio-podinfo", "mountPath": "/etc/istio/pod"})
    tls = (ctx.proxy_config.get("tracing") or {}).get("tlsSettings") or {}
    if s.text("global.proxy.tracer") == "lightstep" and tls:
        directory = str(tls.get("caCertificates") or "").rpartition("/")[0] or "."
        mounts.append({"mountPath": directory, "name": "lightstep-certs", "readOnly": True})
    mounts += [{"name": name, **dict(fields)}
               for name, fields in _user_entries(ctx, ANN + "userVolumeMount")]
    return mounts


def volumes(ctx: Context) -> list[dict[str, Any]]:
    s = ctx.settings
    out: list[dict[str, Any]] = [{"name": "workload-socket"}, {"name": "credential-socket"}]
    if s.text("global.caName") == "GkeWorkloadCertificate":
        out.append({"name": "gke-workload-certificate",
                    "csi": {"driver": "workloadcertificates.security.cloud.google.com"}})
    else:
        out.append({"name": "workload-certs"})
    if ANN + "bootstrapOverride" in ctx.annotations:
        out.append({"name": "custom-bootstrap-volume",
                    "configMap": {"name": ctx.annotations[ANN + "bootstrapOverride"]}})
    out += [{"emptyDir": {"medium": "Memory"}, "name": "istio-envoy"},
            {"name": "istio-data", "emptyDir": {}},
            {"name": "istio-podinfo", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]}},
            {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {
                "path": "istio-token", "expirationSeconds": 43200,
                "audience": s.text("global.sds.token.aud")}}]}}]
    bundle = s.text("global.trustBundleName")
    if s.text("global.pilotCertProvider") == "istiod":
        if go_string((s.value("pilot.env") or {}).get("ENABLE_CLUSTER_TRUST_BUNDLE_API")) \
                == "true":
            out.append({"name": "istiod-ca-cert", "projected": {"sources": [{
                "clusterTrustBundle": {"name": f"istio.io:istiod-ca:{bundle or 'root-cert'}",
                                       "path": "root-cert.pem"}}]}})
        else:
            out.append({"name": "istiod-ca-cert",
                        "configMap": {"name": bundle or "istio-ca-root-cert"}})
    out.append({"name": "istio-ca-crl", "configMap": {
        "name": s.text("pilot.crlConfigMapName") or "istio-ca-crl", "optional": True}})
    if s.flag("global.mountMtlsCerts"):
        account = ctx.spec.get("serviceAccountName") or ""
        out.append({"name": "istio-certs", "secret": {
            "optional": True, "secretName": f"istio.{account}" if account else "istio.default"}})
    out += [{"name": name, **dict(fields)}
            for name, fields in _user_entries(ctx, ANN + "userVolume")]
    if s.text("global.proxy.tracer") == "lightstep" and \
            (ctx.proxy_config.get("tracing") or {}).get("tlsSettings"):
        out.append({"name": "lightstep-certs",
                    "secret": {"optional": True, "secretName": "lightstep.cacert"}})
    return out
