"""Config objects as Kubernetes holds them: kind, identity, body, and where they came from.

Every object that enters pilotfish (from files or a Kubernetes API server) becomes a
`ConfigObject`. The body is kept as the user wrote it, in the form the API server
receives it (`as_json`: plain dicts, lists and scalars, string keys); the model layer
(`registry`, `push_context`) reads typed views out of it. The source position and a
field-path → line map travel with the object so that every error can name the file,
the line and the field.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import attrs

# Path of a field inside an object body: ("spec", "http", 0, "route").
FieldPath = tuple[str | int, ...]


def format_path(path: FieldPath) -> str:
    """Render a field path the way Kubernetes does: ``spec.http[0].route``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@attrs.frozen
class GroupKind:
    group: str  # "" for the core API group
    kind: str

    def __str__(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


@attrs.frozen
class KindInfo:
    """A kind pilotfish understands: its group, served versions and scope."""

    group: str
    kind: str
    versions: tuple[str, ...]
    namespaced: bool = True

    @property
    def group_kind(self) -> GroupKind:
        return GroupKind(self.group, self.kind)

    def api_versions(self) -> tuple[str, ...]:
        return tuple(f"{self.group}/{v}" if self.group else v for v in self.versions)


NETWORKING = "networking.istio.io"
SECURITY = "security.istio.io"
_NET_VERSIONS = ("v1", "v1beta1", "v1alpha3")
_SEC_VERSIONS = ("v1", "v1beta1")

# The kinds the core model reads. Plugins may add more through `pilotfish_config_kinds`.
BUILTIN_KINDS: tuple[KindInfo, ...] = (
    KindInfo("", "Service", ("v1",)),
    KindInfo("", "Pod", ("v1",)),
    KindInfo("", "Namespace", ("v1",), namespaced=False),
    KindInfo("", "Endpoints", ("v1",)),
    KindInfo("discovery.k8s.io", "EndpointSlice", ("v1",)),
    KindInfo(NETWORKING, "VirtualService", _NET_VERSIONS),
    KindInfo(NETWORKING, "DestinationRule", _NET_VERSIONS),
    KindInfo(NETWORKING, "Gateway", _NET_VERSIONS),
    KindInfo(NETWORKING, "ServiceEntry", _NET_VERSIONS),
    KindInfo(NETWORKING, "WorkloadEntry", _NET_VERSIONS),
    KindInfo(NETWORKING, "Sidecar", _NET_VERSIONS),
    KindInfo(SECURITY, "PeerAuthentication", _SEC_VERSIONS),
    KindInfo(SECURITY, "AuthorizationPolicy", _SEC_VERSIONS),
    KindInfo(SECURITY, "RequestAuthentication", _SEC_VERSIONS),
)


def as_json(value: Any) -> Any:
    """The value as the API server receives it: YAML's non-string keys (``8080:``,
    ``true:``) become strings and timestamps stay text, as kubectl sends them."""
    if isinstance(value, Mapping):
        return {_json_key(key): as_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(item) for item in value]
    if isinstance(value, datetime.date | datetime.datetime):
        return value.isoformat()
    return value


def _json_key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return key if isinstance(key, str) else str(as_json(key))


def split_api_version(api_version: str) -> tuple[str, str]:
    """``networking.istio.io/v1`` → (group, version); ``v1`` → ("", "v1")."""
    if "/" in api_version:
        group, _, version = api_version.partition("/")
        return group, version
    return "", api_version


@attrs.frozen
class ConfigKey:
    """Identity of an object: kind, namespace and name (the API version is not part of it)."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else (
            f"{self.kind}/{self.name}"
        )


@attrs.frozen
class Source:
    """Where an object came from: a file and the line its document starts on (1-based)."""

    file: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@attrs.frozen(eq=False)
class ConfigObject:
    """One object: what the user wrote, plus identity and source position."""

    api_version: str
    kind: str
    name: str
    namespace: str  # "" for cluster-scoped kinds
    body: Mapping[str, Any]
    source: Source = Source("<memory>")
    # Field path → 1-based line number, for error messages. Empty when unknown.
    lines: Mapping[FieldPath, int] = attrs.field(factory=dict, repr=False)

    @property
    def key(self) -> ConfigKey:
        return ConfigKey(self.kind, self.namespace, self.name)

    @property
    def group(self) -> str:
        return split_api_version(self.api_version)[0]

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self.body.get("metadata") or {}

    @property
    def labels(self) -> Mapping[str, str]:
        return self.metadata.get("labels") or {}

    @property
    def annotations(self) -> Mapping[str, str]:
        return self.metadata.get("annotations") or {}

    @property
    def spec(self) -> Mapping[str, Any]:
        spec = self.body.get("spec")
        return spec if isinstance(spec, Mapping) else {}

    @property
    def creation(self) -> str:
        """creationTimestamp if given; used where Istio lets the oldest object win."""
        return str(self.metadata.get("creationTimestamp") or "")

    def line_of(self, path: FieldPath) -> int:
        """Best line for a field: the field itself, else its nearest parent, else the document."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line:
                return line
        return self.source.line

    def same_content(self, other: ConfigObject) -> bool:
        return self.api_version == other.api_version and self.body == other.body

    def __str__(self) -> str:
        return str(self.key)
