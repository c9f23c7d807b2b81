"""The mesh config file (``pilotfish.yaml``): profile, plugin choices, mesh settings.

Example::

    profile: sidecar            # the plugin set(s) to start from: a name or a list
    proxy: envoy                # the proxy backend agents run (``--proxy`` overrides it)
    ztunnel: ztunnel            # the proxy backend the local node runs as ambient's ztunnel
    plugins:                    # per entry-point group: use / add / remove by name
      xds:
        add: [add-response-header]
    mesh:                       # Istio MeshConfig fields pilotfish honours
      rootNamespace: istio-system
      trustDomain: cluster.local
      connectTimeout: 10s
      outboundTrafficPolicy: {mode: ALLOW_ANY}
      accessLogFile: /dev/stdout  # proxies' text access log; Istio's default: none
      accessLogEncoding: JSON   # TEXT (default) or JSON; accessLogFormat: the line
    discovery:
      debounceAfter: 100ms
      debounceMax: 10s
      workloadCertTtl: 24h      # istio-ca: lifetime when a CSR asks for none
      maxWorkloadCertTtl: 2160h # istio-ca: longer requests are refused (90 days)
      autoAllowWaypointPolicy: false  # istiod's PILOT_AUTO_ALLOW_WAYPOINT_POLICY (ambient)
      configLimits:             # what one config file may hold (yamlload.LoadLimits)
        maxFileSize: 16Mi
    injection:                  # sidecar injection: Istio's injector values, as Helm has them
      global:
        hub: registry.example.com/mesh
        proxy: {resources: {requests: {cpu: 50m}}}
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from pilotfish.core.model import DEFAULT_DOMAIN
from pilotfish.core.xds.limits import DEFAULT_LIMITS as DEFAULT_XDS_LIMITS
from pilotfish.core.xds.limits import DURATIONS as XDS_DURATIONS
from pilotfish.core.xds.limits import LIMIT_FIELDS as XDS_LIMIT_FIELDS
from pilotfish.core.xds.limits import Limits as XdsLimits
from pilotfish.core.yamlload import DEFAULT_LIMITS, LIMIT_FIELDS, LoadLimits


class MeshConfigError(ValueError):
    """The mesh config file is wrong; the message names the file and field."""


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)\Z")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | int | float, field: str = "duration") -> float:
    """``100ms``, ``1.5s``, ``2m``, ``1h`` → seconds. Plain numbers are seconds."""
    if isinstance(value, bool):
        raise MeshConfigError(f"{field}: expected a duration such as 100ms or 10s, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    total = 0.0
    pos = 0
    # Go-style compound durations ("1m30s") are accepted too.
    for match in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise MeshConfigError(f"{field}: expected a duration such as 100ms or 10s, got {value!r}")
    return total


@attrs.frozen
class GroupChoice:
    """Plugin choices for one entry-point group."""

    use: tuple[str, ...] | None = None  # replace the profile's set
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()


@attrs.frozen
class ExtAuthzProvider:
    """One ``extensionProviders`` entry of kind ``envoyExtAuthzHttp`` or ``envoyExtAuthzGrpc``:
    the service AuthorizationPolicies with action CUSTOM delegate to."""

    name: str
    grpc: bool
    service: str  # a host (``ext-authz.foo.svc.cluster.local``), or ``NS/HOST``
    port: int
    timeout: float = 0.6  # Istio's default
    fail_open: bool = False
    status_on_error: int = 403
    path_prefix: str = ""
    include_request_headers: tuple[str, ...] = ()
    include_additional_headers: Mapping[str, str] = attrs.field(factory=dict)
    headers_to_upstream_on_allow: tuple[str, ...] = ()
    headers_to_downstream_on_deny: tuple[str, ...] = ()
    headers_to_downstream_on_allow: tuple[str, ...] = ()


_EXT_AUTHZ_FIELDS = {
    "service", "port", "timeout", "failOpen", "statusOnError", "pathPrefix",
    "includeRequestHeadersInCheck", "includeAdditionalHeadersInCheck",
    "headersToUpstreamOnAllow", "headersToDownstreamOnDeny", "headersToDownstreamOnAllow",
    "includeRequestBodyInCheck", "includeHeadersInCheck",
}


def _providers(raw: Any, where: str) -> tuple[ExtAuthzProvider, ...]:
    """``mesh.extensionProviders``: the ext_authz ones (other kinds are accepted and left to
    the features that read them)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise MeshConfigError(f"{where}: expected a list of providers")
    out = []
    for index, entry in enumerate(raw):
        at = f"{where}[{index}]"
        entry = _mapping(entry, at)
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise MeshConfigError(f"{at}.name: required")
        kind = next((k for k in ("envoyExtAuthzHttp", "envoyExtAuthzGrpc") if k in entry), None)
        if kind is None:
            continue
        spec = _mapping(entry[kind], f"{at}.{kind}")
        _only(spec, _EXT_AUTHZ_FIELDS, f"{at}.{kind}")
        service, port = spec.get("service"), spec.get("port")
        if not isinstance(service, str) or not service:
            raise MeshConfigError(f"{at}.{kind}.service: required (the ext_authz service host)")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise MeshConfigError(f"{at}.{kind}.port: expected a port number, got {port!r}")

        def names(field: str, spec: Mapping[str, Any] = spec, at: str = f"{at}.{kind}"
                  ) -> tuple[str, ...]:
            return _names(spec.get(field), f"{at}.{field}")

        out.append(ExtAuthzProvider(
            name=name, grpc=kind == "envoyExtAuthzGrpc", service=service, port=port,
            timeout=parse_duration(spec.get("timeout", "600ms"), f"{at}.{kind}.timeout"),
            fail_open=bool(spec.get("failOpen", False)),
            status_on_error=int(spec.get("statusOnError") or 403),
            path_prefix=str(spec.get("pathPrefix") or ""),
            include_request_headers=names("includeRequestHeadersInCheck") or names(
                "includeHeadersInCheck"),
            include_additional_headers={str(k): str(v) for k, v in _mapping(
                spec.get("includeAdditionalHeadersInCheck"),
                f"{at}.{kind}.includeAdditionalHeadersInCheck").items()},
            headers_to_upstream_on_allow=names("headersToUpstreamOnAllow"),
            headers_to_downstream_on_deny=names("headersToDownstreamOnDeny"),
            headers_to_downstream_on_allow=names("headersToDownstreamOnAllow"),
        ))
    return tuple(out)


@attrs.frozen
class MeshSettings:
    """The part of Istio's MeshConfig that pilotfish reads."""

    root_namespace: str = "istio-system"
    trust_domain: str = "cluster.local"
    domain: str = DEFAULT_DOMAIN
    connect_timeout: float = 10.0
    outbound_traffic_policy: str = "ALLOW_ANY"  # or REGISTRY_ONLY
    enable_auto_mtls: bool = True
    protocol_detection_timeout: float = 0.0
    hold_application_until_proxy_starts: bool = False
    default_http_retry_policy: Mapping[str, Any] | None = None
    inbound_traffic_policy: str = "PASSTHROUGH"  # or LOCALHOST
    # The mesh-wide localityLbSetting; a DestinationRule's own replaces it. Istio's
    # default: enabled (it applies where a DestinationRule sets outlier detection).
    locality_lb_setting: Mapping[str, Any] = attrs.field(factory=lambda: {"enabled": True})
    # extensionProviders of kind ext_authz, for AuthorizationPolicy action CUSTOM.
    extension_providers: tuple[ExtAuthzProvider, ...] = ()
    # Istio's accessLogFile: where every proxy writes its text access log, "" for none
    # (Istio's default profile; its demo profile sets /dev/stdout). A Telemetry's access
    # logging still turns the log on or off for the workloads it selects.
    access_log_file: str = ""
    # Istio's accessLogEncoding (TEXT or JSON) and accessLogFormat: the line's shape, for
    # that log and for the envoy provider a Telemetry turns on. An empty format is the
    # encoding's default (pilotfish's text line; Istio's JSON keys).
    access_log_encoding: str = "TEXT"
    access_log_format: str = ""
    # Not MeshConfig but istiod's PILOT_AUTO_ALLOW_WAYPOINT_POLICY, written under
    # ``discovery:``; kept here because the translators read the push's settings. On, every
    # workload behind a waypoint lets that waypoint in (and, lacking other ALLOW policies,
    # only it): see translators/ambient/waypoint_allow.py.
    auto_allow_waypoint_policy: bool = False

    def provider(self, name: str) -> ExtAuthzProvider | None:
        return next((p for p in self.extension_providers if p.name == name), None)


# Proxies pushed at once, as istiod's PILOT_PUSH_THROTTLE: more pushes in flight let gRPC
# complete more writes per turn of the event loop (at 2,000 proxies, 25 took ~10 % longer).
PUSH_CONCURRENCY = 100


@attrs.frozen
class DiscoverySettings:
    debounce_after: float = 0.1
    debounce_max: float = 10.0
    push_concurrency: int = PUSH_CONCURRENCY
    # Istio's DEFAULT_WORKLOAD_CERT_TTL and MAX_WORKLOAD_CERT_TTL (istio-ca signing).
    workload_cert_ttl: float = 86400.0
    max_workload_cert_ttl: float = 90 * 86400.0
    config_limits: LoadLimits = DEFAULT_LIMITS  # what one config file may hold
    # Unknown fields in objects: "Strict" refuses the object (kubectl's default), "Warn"
    # reports them and accepts it.
    field_validation: str = "Strict"
    xds_limits: XdsLimits = DEFAULT_XDS_LIMITS  # what one xDS client may hold


# Istio's mesh config as a cluster holds it: ConfigMap ``istio`` (key ``mesh``) in the root
# namespace; a source that holds one overrides ``mesh:`` with it (`overlay`).
MESH_CONFIGMAP = "istio"
# The MeshConfig fields pilotfish honours (``mesh:``; the ``istio`` ConfigMap's ``mesh``).
MESH_FIELDS = frozenset({
    "rootNamespace", "trustDomain", "domain", "connectTimeout", "outboundTrafficPolicy",
    "enableAutoMtls", "protocolDetectionTimeout", "defaultConfig", "defaultHttpRetryPolicy",
    "inboundTrafficPolicy", "localityLbSetting", "extensionProviders", "accessLogFile",
    "accessLogEncoding", "accessLogFormat",
    # read by sidecar injection
    "proxyListenPort", "proxyInboundListenPort", "enablePrometheusMerge",
})


@attrs.frozen
class MeshConfig:
    # The plugin sets to start from, combined in order (``profile: [sidecar, grpc]``).
    profiles: tuple[str, ...] = ("sidecar",)
    plugins: Mapping[str, GroupChoice] = attrs.field(factory=dict)
    # The proxy backend (entry-point name in pilotfish.proxies) agents run when their
    # ``--proxy`` does not say; whether one has it is checked where it is chosen
    # (`plugins.chosen_proxy`), since the entry points are the plugin manager's business.
    proxy: str = "envoy"
    # The proxy backend the local node runs as ambient mode's node proxy (checked where it
    # is chosen, as ``proxy``): another ztunnel is a backend of another name.
    ztunnel: str = "ztunnel"
    mesh: MeshSettings = MeshSettings()
    discovery: DiscoverySettings = DiscoverySettings()
    source: str = "<defaults>"
    mesh_fields: Mapping[str, Any] = attrs.field(factory=dict)  # ``mesh:`` as written
    # ``injection:`` as written: Istio's injector values (global.proxy.image, ...), which
    # the injector checks where it reads them.
    injection: Mapping[str, Any] = attrs.field(factory=dict)


def _names(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise MeshConfigError(f"{where}: expected a list of plugin names, got {value!r}")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MeshConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _only(data: Mapping[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise MeshConfigError(
            f"{where}: unknown field {unknown[0]!r}; expected one of {', '.join(sorted(allowed))}"
        )


def from_dict(data: Mapping[str, Any], source: str = "<memory>") -> MeshConfig:
    where = source
    data = _mapping(data, where)
    _only(data, {"profile", "proxy", "ztunnel", "plugins", "mesh", "discovery", "injection"},
          where)
    proxy = data.get("proxy", "envoy")
    if not isinstance(proxy, str) or not proxy:
        raise MeshConfigError(f"{where}: proxy: expected a proxy backend's name, as in native, "
                              f"got {proxy!r}")
    ztunnel = data.get("ztunnel", "ztunnel")
    if not isinstance(ztunnel, str) or not ztunnel:
        raise MeshConfigError(f"{where}: ztunnel: expected a proxy backend's name, as in "
                              f"ztunnel, got {ztunnel!r}")
    raw_profile = data.get("profile", "sidecar")
    if isinstance(raw_profile, str):
        raw_profile = [raw_profile]
    if not (isinstance(raw_profile, list) and raw_profile
            and all(isinstance(p, str) and p for p in raw_profile)):
        raise MeshConfigError(f"{where}: profile: expected a profile name or a list of them, "
                              f"got {raw_profile!r}")
    profiles = tuple(dict.fromkeys(raw_profile))

    plugins: dict[str, GroupChoice] = {}
    for group, raw in _mapping(data.get("plugins"), f"{where}: plugins").items():
        at = f"{where}: plugins.{group}"
        if isinstance(raw, list):  # shorthand: a list means "use exactly these"
            plugins[group] = GroupChoice(use=_names(raw, at))
            continue
        raw = _mapping(raw, at)
        _only(raw, {"use", "add", "remove"}, at)
        plugins[group] = GroupChoice(
            use=_names(raw["use"], f"{at}.use") if "use" in raw else None,
            add=_names(raw.get("add"), f"{at}.add"),
            remove=_names(raw.get("remove"), f"{at}.remove"),
        )

    mesh_raw = _mapping(data.get("mesh"), f"{where}: mesh")
    _only(mesh_raw, MESH_FIELDS, f"{where}: mesh")
    mesh = _mesh_settings(mesh_raw, f"{where}: mesh")

    disc_raw = _mapping(data.get("discovery"), f"{where}: discovery")
    _only(disc_raw, {"debounceAfter", "debounceMax", "pushConcurrency", "workloadCertTtl",
                     "maxWorkloadCertTtl", "configLimits", "fieldValidation", "xdsLimits",
                     "autoAllowWaypointPolicy"},
          f"{where}: discovery")
    allow_waypoint = disc_raw.get("autoAllowWaypointPolicy", False)
    if not isinstance(allow_waypoint, bool):
        raise MeshConfigError(f"{where}: discovery.autoAllowWaypointPolicy: expected true or "
                              f"false, got {allow_waypoint!r}")
    mesh = attrs.evolve(mesh, auto_allow_waypoint_policy=allow_waypoint)
    field_validation = disc_raw.get("fieldValidation", "Strict")
    if field_validation not in ("Strict", "Warn"):
        raise MeshConfigError(f"{where}: discovery.fieldValidation: Unsupported value "
                              f"{field_validation!r}; expected Strict or Warn")
    concurrency = disc_raw.get("pushConcurrency", PUSH_CONCURRENCY)
    if not isinstance(concurrency, int) or concurrency < 1:
        raise MeshConfigError(
            f"{where}: discovery.pushConcurrency: expected a positive integer, got {concurrency!r}"
        )
    discovery = DiscoverySettings(
        debounce_after=parse_duration(
            disc_raw.get("debounceAfter", "100ms"), f"{where}: discovery.debounceAfter"
        ),
        debounce_max=parse_duration(
            disc_raw.get("debounceMax", "10s"), f"{where}: discovery.debounceMax"
        ),
        push_concurrency=concurrency,
        workload_cert_ttl=parse_duration(
            disc_raw.get("workloadCertTtl", "24h"), f"{where}: discovery.workloadCertTtl"
        ),
        max_workload_cert_ttl=parse_duration(
            disc_raw.get("maxWorkloadCertTtl", "2160h"), f"{where}: discovery.maxWorkloadCertTtl"
        ),
        config_limits=_config_limits(disc_raw.get("configLimits"),
                                     f"{where}: discovery.configLimits"),
        field_validation=field_validation,
        xds_limits=_xds_limits(disc_raw.get("xdsLimits"), f"{where}: discovery.xdsLimits"),
    )
    if not 0 < discovery.workload_cert_ttl <= discovery.max_workload_cert_ttl:
        raise MeshConfigError(
            f"{where}: discovery.workloadCertTtl: expected a positive duration no longer than "
            f"maxWorkloadCertTtl ({discovery.max_workload_cert_ttl:g}s)"
        )
    return MeshConfig(profiles=profiles, plugins=plugins, proxy=proxy, ztunnel=ztunnel,
                      mesh=mesh, discovery=discovery, source=source, mesh_fields=mesh_raw,
                      injection=_mapping(data.get("injection"), f"{where}: injection"))


def _policy_mode(mesh_raw: Mapping[str, Any], field: str, modes: tuple[str, str],
                 where: str) -> str:
    """``outboundTrafficPolicy.mode`` and the like: one of ``modes``, the first by default."""
    policy = _mapping(mesh_raw.get(field), f"{where}.{field}")
    mode = str(policy.get("mode", modes[0]))
    if mode not in modes:
        raise MeshConfigError(f"{where}.{field}.mode: Unsupported value {mode!r}; expected "
                              f"{' or '.join(modes)}")
    return mode


def _mesh_settings(mesh_raw: Mapping[str, Any], where: str) -> MeshSettings:
    otp_mode = _policy_mode(mesh_raw, "outboundTrafficPolicy", ("ALLOW_ANY", "REGISTRY_ONLY"),
                            where)
    itp_mode = _policy_mode(mesh_raw, "inboundTrafficPolicy", ("PASSTHROUGH", "LOCALHOST"),
                            where)
    default_config = _mapping(mesh_raw.get("defaultConfig"), f"{where}.defaultConfig")
    return MeshSettings(
        root_namespace=str(mesh_raw.get("rootNamespace", "istio-system")),
        trust_domain=str(mesh_raw.get("trustDomain", "cluster.local")),
        domain=str(mesh_raw.get("domain", DEFAULT_DOMAIN)),
        connect_timeout=parse_duration(
            mesh_raw.get("connectTimeout", "10s"), f"{where}.connectTimeout"
        ),
        outbound_traffic_policy=otp_mode,
        inbound_traffic_policy=itp_mode,
        enable_auto_mtls=bool(mesh_raw.get("enableAutoMtls", True)),
        protocol_detection_timeout=parse_duration(
            mesh_raw.get("protocolDetectionTimeout", "0s"),
            f"{where}.protocolDetectionTimeout",
        ),
        hold_application_until_proxy_starts=bool(
            default_config.get("holdApplicationUntilProxyStarts", False)
        ),
        default_http_retry_policy=_mapping(
            mesh_raw.get("defaultHttpRetryPolicy"), f"{where}.defaultHttpRetryPolicy"
        ) or None,
        locality_lb_setting=_mapping(
            mesh_raw.get("localityLbSetting"), f"{where}.localityLbSetting"
        ) or {"enabled": True},
        extension_providers=_providers(mesh_raw.get("extensionProviders"),
                                       f"{where}.extensionProviders"),
        access_log_file=_access_log_file(mesh_raw.get("accessLogFile", ""),
                                         f"{where}.accessLogFile"),
        access_log_encoding=_access_log_encoding(mesh_raw, where),
        access_log_format=_access_log_format(mesh_raw, where),
    )


ACCESS_LOG_FILES = ("", "/dev/stdout")  # what both proxies can write to


def _access_log_file(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or value not in ACCESS_LOG_FILES:
        raise MeshConfigError(f"{where}: {value!r}: pilotfish's proxies write their access "
                              f"log to /dev/stdout (their log) or nowhere (\"\")")
    return value


ACCESS_LOG_ENCODINGS = ("TEXT", "JSON")


def _access_log_encoding(mesh_raw: Mapping[str, Any], where: str) -> str:
    encoding = mesh_raw.get("accessLogEncoding") or "TEXT"
    if not isinstance(encoding, str) or encoding.upper() not in ACCESS_LOG_ENCODINGS:
        raise MeshConfigError(f"{where}.accessLogEncoding: {encoding!r}: expected TEXT or JSON")
    return encoding.upper()


def _access_log_format(mesh_raw: Mapping[str, Any], where: str) -> str:
    """accessLogFormat, checked: with JSON encoding it must be a JSON object whose values
    are format strings, numbers, booleans or such objects (Envoy's format dictionary),
    where Istio would log the mistake and fall back to its default."""
    encoding = _access_log_encoding(mesh_raw, where)
    text = mesh_raw.get("accessLogFormat") or ""
    if not isinstance(text, str):
        raise MeshConfigError(f"{where}.accessLogFormat: expected a string, got {text!r}")
    if encoding == "JSON" and text:
        try:
            shape = json.loads(text)
        except ValueError as exc:
            raise MeshConfigError(f"{where}.accessLogFormat: not JSON ({exc}); with "
                                  "accessLogEncoding JSON it is a JSON object of format "
                                  "strings") from None
        problem = _json_format_problem(shape, "")
        if problem:
            raise MeshConfigError(f"{where}.accessLogFormat{problem}")
    return text


def _json_format_problem(value: Any, at: str) -> str:
    if not isinstance(value, dict):
        return f"{at}: expected a JSON object, got {value!r}"
    for key, item in value.items():
        if isinstance(item, dict):
            problem = _json_format_problem(item, f"{at}.{key}")
            if problem:
                return problem
        elif not isinstance(item, str | int | float | bool):
            return (f"{at}.{key}: {item!r}: a value is a format string, a number, a boolean "
                    "or an object of those")
    return ""


def overlay(config: MeshConfig, text: str, where: str) -> tuple[MeshSettings, list[str]]:
    """Mesh settings from Istio's mesh config text (the ``istio`` ConfigMap's ``mesh``) over
    those of ``config``'s ``mesh:``, field by field; and the fields of it pilotfish does not
    honour (Istio has many more: they are left out, not refused). Raises MeshConfigError
    naming ``where`` and the field."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise MeshConfigError(f"{where}: invalid YAML: {exc}") from exc
    data = _mapping(data, where)
    honoured = {field: value for field, value in data.items() if field in MESH_FIELDS}
    settings = attrs.evolve(_mesh_settings({**config.mesh_fields, **honoured}, where),
                            auto_allow_waypoint_policy=config.mesh.auto_allow_waypoint_policy)
    return (settings, sorted(str(field) for field in set(data) - MESH_FIELDS))


# A pod's ProxyConfig overrides (Istio's annotation), read by the injector, the agent and
# the local node alike.
PROXY_CONFIG_ANNOTATION = "proxy.istio.io/config"


def proxy_config(annotations: Mapping[str, str]) -> Mapping[str, Any]:
    """The pod's ProxyConfig overrides (annotation ``proxy.istio.io/config``, YAML).
    ValueError names the annotation when it is not a mapping."""
    text = annotations.get(PROXY_CONFIG_ANNOTATION)
    if not text:
        return {}
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"annotation {PROXY_CONFIG_ANNOTATION}: not YAML: {exc}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"annotation {PROXY_CONFIG_ANNOTATION}: expected a mapping of "
                         f"ProxyConfig fields, got {type(value).__name__}")
    return value


_QUANTITY = re.compile(r"^(\d+)(Ki|Mi|Gi)?\Z")
_BYTE_UNITS = {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def _count(value: Any, where: str, sizes: bool) -> int:
    """A positive count; sizes may carry Kubernetes' binary suffixes (``16Mi``)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _QUANTITY.match(str(value)) if sizes and isinstance(value, str) else None
    if match and int(match[1]) > 0:
        return int(match[1]) * _BYTE_UNITS[match[2]]
    raise MeshConfigError(f"{where}: expected a positive whole number"
                          + (" of bytes, as in 16Mi" if sizes else "") + f", got {value!r}")


def _config_limits(raw: Any, where: str) -> LoadLimits:
    data = _mapping(raw, where)
    _only(data, set(LIMIT_FIELDS), where)
    return attrs.evolve(DEFAULT_LIMITS, **{
        LIMIT_FIELDS[field]: _count(value, f"{where}.{field}", field.endswith("Size"))
        for field, value in data.items()})


def _xds_limits(raw: Any, where: str) -> XdsLimits:
    data = _mapping(raw, where)
    _only(data, set(XDS_LIMIT_FIELDS), where)
    values: dict[str, Any] = {}
    for field, value in data.items():
        at = f"{where}.{field}"
        if field in XDS_DURATIONS:
            values[XDS_LIMIT_FIELDS[field]] = parse_duration(value, at)
            if values[XDS_LIMIT_FIELDS[field]] <= 0:
                raise MeshConfigError(f"{at}: expected a positive duration, got {value!r}")
        else:
            values[XDS_LIMIT_FIELDS[field]] = _count(value, at, sizes=False)
    return attrs.evolve(DEFAULT_XDS_LIMITS, **values)


def load(path: str | Path | None) -> MeshConfig:
    """Read a mesh config file; ``None`` gives the defaults."""
    if path is None:
        return MeshConfig()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise MeshConfigError(f"{path}: cannot read mesh config: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise MeshConfigError(f"{path}{line}: invalid YAML: {exc}") from exc
    return from_dict(data, str(path))
