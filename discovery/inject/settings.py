"""What injection reads besides the pod: Istio's injector values and mesh config.

Istio's injector renders its template with two inputs from the cluster: the *values* of the
``istio-sidecar-injector`` ConfigMap (Helm's ``global.proxy.image``, ``global.proxy.resources``,
``pilot.cni.enabled``...) and the *mesh config* (``defaultConfig`` is the ProxyConfig every
proxy starts from). pilotfish takes both in Istio's shape: the values from the mesh config
file's ``injection:`` section (and ``kube-inject --set``), the mesh config from its ``mesh:``
(and, in discovery, the ``istio`` ConfigMap). ``Settings`` holds them merged over the
defaults below, which are Istio's chart defaults except where pilotfish differs: the proxy
and init images are ``pilotfish`` (the image whose entrypoint is ``pilotfish``), from
``localhost`` (what a local build is called) at pilotfish's version.

The ProxyConfig a pod gets is ``mesh.defaultConfig`` with its ``proxy.istio.io/config``
annotation applied over it (``proxyMetadata`` merged key by key, as Istio merges it);
``PROXY_CONFIG`` carries only the fields that differ from Istio's defaults.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
from collections.abc import Mapping
from typing import Any

import attrs

from pilotfish.core.meshconfig import proxy_config


class InjectionError(ValueError):
    """The pod (or the settings) cannot be injected; the message names the annotation or
    field at fault."""


def _version() -> str:
    try:
        return importlib.metadata.version("pilotfish")
    except importlib.metadata.PackageNotFoundError:  # a source tree run without install
        return "latest"


IMAGE = "pilotfish"  # where Istio has proxyv2: the image runs `pilotfish` (agent, iptables)

DEFAULT_VALUES: Mapping[str, Any] = {
    "global": {
        "hub": "localhost",
        "tag": _version(),
        "imagePullPolicy": "",
        "imagePullSecrets": [],
        "istioNamespace": "istio-system",
        "logAsJson": False,
        "logging": {"level": "default:info"},
        "meshID": "",
        "mountMtlsCerts": False,
        "multiCluster": {"clusterName": ""},
        "network": "",
        "pilotCertProvider": "istiod",
        "caAddress": "",
        "caName": "",
        "trustDomain": "",
        "trustBundleName": "",
        "nativeNftables": False,
        # Istio's PLATFORM (its chart's global.platform): "openshift" takes the proxy's
        # uid and gid from the namespace's SCC ranges.
        "platform": "",
        # Istio's COMPLIANCE_POLICY (fips-140-3): told to the proxy.
        "compliancePolicy": "",
        # pilotfish: whether the proxy is a native sidecar (an init container with
        # restartPolicy: Always, Kubernetes 1.29+); Istio decides from the nodes' versions.
        "nativeSidecar": True,
        "sds": {"token": {"aud": "istio-ca"}},
        "sts": {"servicePort": 0},
        "proxy": {
            "image": IMAGE,
            "autoInject": "enabled",
            "clusterDomain": "cluster.local",
            "componentLogLevel": "misc:error",
            "logLevel": "warning",
            "excludeIPRanges": "",
            "excludeInboundPorts": "",
            "excludeOutboundPorts": "",
            "includeIPRanges": "*",
            "includeInboundPorts": "*",
            "includeOutboundPorts": "",
            "outlierLogPath": "",
            "privileged": False,
            "capNetBindService": False,
            "holdApplicationUntilProxyStarts": False,
            "readinessFailureThreshold": 4,
            "readinessInitialDelaySeconds": 0,
            "readinessPeriodSeconds": 15,
            "startupProbe": {"enabled": True, "failureThreshold": 600},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                          "limits": {"cpu": "2000m", "memory": "1024Mi"}},
            "statusPort": 15020,
            "tracer": "none",
            "lifecycle": {},
            "seccompProfile": {},
        },
        "proxy_init": {"image": IMAGE, "forceApplyIptables": False},
    },
    # The gateway template's pod security context (default: ports below 1024 allowed).
    "gateways": {"securityContext": {}},
    "pilot": {"cni": {"enabled": False, "provider": "default"}, "env": {},
              "crlConfigMapName": ""},
    "sidecarInjectorWebhook": {
        "neverInjectSelector": [],
        "alwaysInjectSelector": [],
        "injectedAnnotations": {},
        "rewriteAppHTTPProbe": True,
        "templates": {},
        "defaultTemplates": [],
        "enableNamespacesByDefault": False,
    },
    "revision": "",
}

# Istio's ProxyConfig defaults (mesh.DefaultProxyConfig): PROXY_CONFIG leaves these out.
PROXY_CONFIG_DEFAULTS: Mapping[str, Any] = {
    "configPath": "./etc/istio/proxy",
    "binaryPath": "/usr/local/bin/envoy",
    "serviceCluster": "istio-proxy",
    "drainDuration": "45s",
    "terminationDrainDuration": "5s",
    "discoveryAddress": "istiod.istio-system.svc:15012",
    "proxyAdminPort": 15000,
    "controlPlaneAuthPolicy": "MUTUAL_TLS",
    "statNameLength": 189,
    "statusPort": 15020,
    "interceptionMode": "REDIRECT",
    "proxyMetadata": {},
}
# ProxyConfig's fields in the proto's order, which Istio's JSON follows.
PROXY_CONFIG_ORDER = (
    "configPath", "binaryPath", "serviceCluster", "drainDuration", "parentShutdownDuration",
    "discoveryAddress", "zipkinAddress", "connectTimeout", "statsdUdpAddress",
    "proxyAdminPort", "availabilityZone", "controlPlaneAuthPolicy", "customConfigFile",
    "statNameLength", "concurrency", "proxyBootstrapTemplatePath", "interceptionMode",
    "tracing", "sds", "envoyAccessLogService", "envoyMetricsService", "proxyMetadata",
    "statusPort", "extraStatTags", "gatewayTopology", "terminationDrainDuration", "meshId",
    "readinessProbe", "proxyStatsMatcher", "holdApplicationUntilProxyStarts",
    "caCertificatesPem", "image", "privateKeyProvider", "proxyHeaders",
)
# The mesh config fields injection reads, with Istio's defaults.
MESH_DEFAULTS: Mapping[str, Any] = {
    "trustDomain": "cluster.local",
    "proxyListenPort": 15001,
    "proxyInboundListenPort": 15006,
    "enablePrometheusMerge": True,
    "inboundTrafficPolicy": {"mode": "PASSTHROUGH"},
    "defaultConfig": {},
}


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on ``base``, maps merged key by key (Helm's way with values); ``None`` in
    ``over`` removes the key, as ``--set key=null`` does."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_value(values: Mapping[str, Any], assignment: str) -> dict[str, Any]:
    """``global.proxy.image=proxyTest`` (istioctl's ``--set``, without ``values.``) applied
    to ``values``. The value is read as YAML (``true``, ``15020``, ``null``, a list)."""
    import yaml

    path, sep, text = assignment.partition("=")
    path = path.strip().removeprefix("values.")
    if not sep or not path:
        raise InjectionError(f"--set {assignment!r}: expected KEY=VALUE, as in "
                             "global.proxy.image=pilotfish")
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text
    nested: dict[str, Any] = {}
    for key in reversed(path.split(".")):
        nested = {key: value}
        value = nested
    return deep_merge(values, nested)


@attrs.frozen
class Settings:
    """Values and mesh config, merged over the defaults; ``revision`` is the control
    plane's (``""`` for the default one)."""

    values: Mapping[str, Any] = attrs.field(factory=lambda: copy.deepcopy(DEFAULT_VALUES))
    mesh: Mapping[str, Any] = attrs.field(factory=lambda: copy.deepcopy(MESH_DEFAULTS))

    @classmethod
    def create(cls, values: Mapping[str, Any] | None = None,
               mesh: Mapping[str, Any] | None = None) -> Settings:
        """``values`` (Istio's injector values) and ``mesh`` (Istio's MeshConfig) as
        written; what they leave out takes the defaults."""
        for name, given in (("values", values), ("mesh", mesh)):
            if given is not None and not isinstance(given, Mapping):
                raise InjectionError(f"injection {name}: expected a mapping, got "
                                     f"{type(given).__name__}")
        merged = deep_merge(DEFAULT_VALUES, values or {})
        mesh_merged = deep_merge(MESH_DEFAULTS, mesh or {})
        settings = cls(merged, mesh_merged)
        settings.check()
        return settings

    # -- reading values ----------------------------------------------------------------

    def value(self, path: str, default: Any = None) -> Any:
        node: Any = self.values
        for key in path.split("."):
            if not isinstance(node, Mapping) or key not in node:
                return default
            node = node[key]
        return node

    def text(self, path: str) -> str:
        """A value as Go's templates print it (``fmt.Sprint``): booleans in lower case,
        nothing for null."""
        return go_string(self.value(path))

    def number(self, path: str) -> int:
        value = self.value(path)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise InjectionError(f"injection values: {path}: expected a whole number, "
                                 f"got {value!r}") from None

    def flag(self, path: str) -> bool:
        value = self.value(path)
        if isinstance(value, str):
            return value.strip().lower() == "true"
        return bool(value)

    def check(self) -> None:
        """Fail early, naming the value, on what every injection would trip over."""
        for path in ("global.proxy.statusPort", "global.proxy.readinessFailureThreshold",
                     "global.proxy.readinessInitialDelaySeconds",
                     "global.proxy.readinessPeriodSeconds",
                     "global.proxy.startupProbe.failureThreshold"):
            self.number(path)
        for path in ("global.proxy.resources", "global.proxy.lifecycle",
                     "sidecarInjectorWebhook.templates", "gateways.securityContext",
                     "mesh.defaultConfig"):
            where = self.mesh.get("defaultConfig") if path == "mesh.defaultConfig" \
                else self.value(path)
            if where is not None and not isinstance(where, Mapping):
                raise InjectionError(f"injection: {path}: expected a mapping, got "
                                     f"{type(where).__name__}")
        secrets = self.value("global.imagePullSecrets")
        if secrets is not None and not isinstance(secrets, list):
            raise InjectionError("injection values: global.imagePullSecrets: expected a "
                                 "list of Secret names")

    # -- derived settings --------------------------------------------------------------

    @property
    def revision(self) -> str:
        return str(self.value("revision") or "")

    @property
    def openshift(self) -> bool:
        return self.text("global.platform").strip().lower() == "openshift"

    @property
    def cni(self) -> bool:
        return self.flag("pilot.cni.enabled")

    @property
    def status_port(self) -> int:
        return self.number("global.proxy.statusPort")

    def image(self, which: str, annotation: str = "") -> str:
        """The proxy (``proxy``) or init (``proxy_init``) image: the annotation or value
        when it names a repository (has a ``/``), else ``HUB/IMAGE:TAG``."""
        name = annotation or self.text(f"global.{which}.image")
        if "/" in name:
            return name
        name = self.text(f"global.{which}.image")
        if "/" in name:
            return name
        return f"{self.text('global.hub')}/{name}:{self.text('global.tag')}"

    def proxy_config(self, annotations: Mapping[str, str]) -> dict[str, Any]:
        """The pod's ProxyConfig: ``mesh.defaultConfig`` under the ``proxy.istio.io/config``
        annotation (``proxyMetadata`` merged key by key)."""
        base = dict(self.mesh.get("defaultConfig") or {})
        try:
            over = dict(proxy_config(annotations))
        except ValueError as exc:
            raise InjectionError(str(exc)) from None
        merged = {**base, **over}
        metadata = {**(base.get("proxyMetadata") or {}), **(over.get("proxyMetadata") or {})}
        if metadata:
            merged["proxyMetadata"] = {str(k): go_string(v) for k, v in metadata.items()}
        return merged

    def discovery_address(self, config: Mapping[str, Any]) -> str:
        """Where proxies reach discovery: the ProxyConfig's ``discoveryAddress``, else
        ``istiod[-REV].NAMESPACE.svc:15012``."""
        if config.get("discoveryAddress"):
            return str(config["discoveryAddress"])
        rev = f"-{self.revision}" if self.revision else ""
        return f"istiod{rev}.{self.text('global.istioNamespace')}.svc:15012"

    def ca_address(self) -> str:
        if self.text("global.caAddress"):
            return self.text("global.caAddress")
        rev = f"-{self.revision}" if self.revision else ""
        return f"istiod{rev}.{self.text('global.istioNamespace')}.svc:15012"

    def trust_domain(self) -> str:
        return go_string(self.mesh.get("trustDomain")) or self.text("global.trustDomain")


def clean_proxy_config(config: Mapping[str, Any]) -> str:
    """``PROXY_CONFIG``: the fields that differ from Istio's defaults, as compact JSON in
    the proto's field order."""
    kept = {k: v for k, v in config.items()
            if k not in PROXY_CONFIG_DEFAULTS or PROXY_CONFIG_DEFAULTS[k] != v}
    order = {name: index for index, name in enumerate(PROXY_CONFIG_ORDER)}
    ordered = dict(sorted(kept.items(), key=lambda kv: order.get(kv[0], len(order))))
    return json.dumps(ordered, separators=(",", ":"))


def go_string(value: Any) -> str:
    """How Go's ``fmt.Sprint`` prints a value a template interpolates."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
