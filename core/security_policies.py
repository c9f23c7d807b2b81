"""Which security policies apply to a workload: PeerAuthentication, AuthorizationPolicy,
RequestAuthentication.

All three kinds select workloads the same way. A policy in the workload's namespace applies
when it has no selector or its selector matches the workload's labels. A policy in the root
namespace applies mesh-wide when it has no selector, and to matching workloads of every
namespace when it has one.

PeerAuthentication then composes by level, each level overriding the one above unless it
says UNSET: PERMISSIVE by default, then the mesh policy (root namespace, no selector), the
namespace policy (no selector), the workload policy (a selector), and last the workload
policy's ``portLevelMtls`` for single ports. Where a level holds several policies the
oldest wins, so a stray duplicate cannot flip a namespace's mode.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from pilotfish.core.model import labels_match
from pilotfish.core.objects import ConfigObject

DRY_RUN_ANNOTATION = "istio.io/dry-run"
Labels = Mapping[str, str]


class MtlsMode(enum.Enum):
    """PeerAuthentication modes (UNSET only ever appears in a policy, never as a result)."""

    UNSET = "UNSET"
    DISABLE = "DISABLE"
    PERMISSIVE = "PERMISSIVE"
    STRICT = "STRICT"

    @classmethod
    def parse(cls, value: Any) -> MtlsMode:
        try:
            return cls(str(value or "UNSET").upper())
        except ValueError:
            return cls.UNSET  # validation rejects unknown modes; inherit rather than guess


@attrs.frozen
class MtlsPolicy:
    """The effective mTLS mode of one workload: one mode, plus per-port exceptions."""

    mode: MtlsMode = MtlsMode.PERMISSIVE
    ports: Mapping[int, MtlsMode] = attrs.field(factory=dict)

    def for_port(self, port: int) -> MtlsMode:
        return self.ports.get(port, self.mode)


@attrs.frozen
class AuthzPolicy:
    """One AuthorizationPolicy as the RBAC translator reads it."""

    name: str
    namespace: str
    action: str  # ALLOW | DENY | AUDIT | CUSTOM
    rules: tuple[Mapping[str, Any], ...]
    dry_run: bool = False
    provider: str = ""  # CUSTOM: the extensionProviders entry that decides

    def rule_key(self, index: int) -> str:
        """The RBAC policy name Istio gives the rule: it shows in Envoy's stats and logs."""
        return f"ns[{self.namespace}]-policy[{self.name}]-rule[{index}]"


_PERMISSIVE = MtlsPolicy()


def _selector(obj: ConfigObject) -> Labels | None:
    """The policy's matchLabels, or None for a policy without one (an empty one counts so)."""
    labels = (obj.spec.get("selector") or {}).get("matchLabels")
    return dict(labels) if labels else None


def _targets_something(obj: ConfigObject) -> bool:
    return bool(obj.spec.get("targetRef") or obj.spec.get("targetRefs"))


@attrs.frozen
class SecurityPolicies:
    """The security policies of one push, indexed for per-workload lookups."""

    root_namespace: str
    peer_authentications: tuple[ConfigObject, ...] = ()  # oldest first, as the store sorts
    authorization_policies: tuple[ConfigObject, ...] = ()
    request_authentications: tuple[ConfigObject, ...] = ()
    # Lookups repeat for every endpoint of every service: remember them for this push.
    _memo: dict[Any, Any] = attrs.field(factory=dict, eq=False, repr=False)

    def _for_workload(
        self, objects: Iterable[ConfigObject], namespace: str, labels: Labels
    ) -> list[ConfigObject]:
        out = []
        for obj in objects:
            if obj.namespace not in (namespace, self.root_namespace):
                continue
            selector = _selector(obj)
            if selector is None:
                # Policies aimed at gateways or waypoints by targetRef do not select
                # sidecars by namespace (waypoints select theirs by targetRefs).
                if not _targets_something(obj):
                    out.append(obj)
            elif labels_match(selector, labels):
                out.append(obj)
        return out

    # -- PeerAuthentication ----------------------------------------------------------

    def mtls(self, namespace: str, labels: Labels) -> MtlsPolicy:
        """The composed PeerAuthentication of a workload (see the module docstring)."""
        if not self.peer_authentications:
            return _PERMISSIVE  # the common case, asked once per endpoint: skip the memo
        key = ("mtls", namespace, frozenset(labels.items()))
        cached = self._memo.get(key)
        if cached is None:
            cached = self._memo[key] = self._compose(namespace, labels)
        return cached

    def _levels(self, namespace: str, labels: Labels
                ) -> tuple[ConfigObject | None, ConfigObject | None, ConfigObject | None]:
        """The PeerAuthentication at each level that applies: (mesh, namespace, workload);
        the oldest wins at each level, as in Istio."""
        mesh = ns_level = workload = None
        for obj in self._for_workload(self.peer_authentications, namespace, labels):
            if _selector(obj) is not None:
                workload = workload or obj
            elif obj.namespace == namespace and namespace != self.root_namespace:
                ns_level = ns_level or obj
            else:
                mesh = mesh or obj
        return mesh, ns_level, workload

    def peer_authentications_for(self, namespace: str, labels: Labels) -> list[ConfigObject]:
        """The PeerAuthentications a workload's mode is composed of, mesh level first."""
        return [obj for obj in self._levels(namespace, labels) if obj is not None]

    def _compose(self, namespace: str, labels: Labels) -> MtlsPolicy:
        mesh, ns_level, workload = self._levels(namespace, labels)
        mode = MtlsMode.PERMISSIVE
        for level in (mesh, ns_level, workload):
            if level is not None:
                mode = _inherit(_mode_of(level.spec.get("mtls")), mode)
        ports: dict[int, MtlsMode] = {}
        if workload is not None:
            # Only workload policies may name ports: a port means nothing namespace-wide.
            for port, setting in (workload.spec.get("portLevelMtls") or {}).items():
                if str(port).isdigit():
                    ports[int(port)] = _inherit(_mode_of(setting), mode)
        return MtlsPolicy(mode, ports)

    def namespace_mtls(self, namespace: str) -> MtlsMode:
        """What a client may assume of a service's workloads: the mesh and namespace levels
        only. A client cannot know which workload policy each endpoint has; those are
        honoured endpoint by endpoint instead (EDS metadata)."""
        mode = MtlsMode.PERMISSIVE
        for level_ns in dict.fromkeys((self.root_namespace, namespace)):
            for obj in self.peer_authentications:
                if obj.namespace == level_ns and _selector(obj) is None:
                    mode = _inherit(_mode_of(obj.spec.get("mtls")), mode)
                    break
        return mode

    # -- authorization and request authentication ----------------------------------------

    def authorization(self, namespace: str, labels: Labels) -> list[AuthzPolicy]:
        key = ("authz", namespace, frozenset(labels.items()))
        cached = self._memo.get(key)
        if cached is None:
            cached = self._memo[key] = [
                authz_policy(obj)
                for obj in self._for_workload(self.authorization_policies, namespace, labels)
            ]
        return list(cached)

    def request_authentication(self, namespace: str, labels: Labels) -> list[ConfigObject]:
        return self._for_workload(self.request_authentications, namespace, labels)


def authz_policy(obj: ConfigObject) -> AuthzPolicy:
    """An AuthorizationPolicy object as the RBAC translator reads it (sidecars select theirs
    by `SecurityPolicies.authorization`, waypoints by ``targetRefs``)."""
    return AuthzPolicy(
        name=obj.name,
        namespace=obj.namespace,
        action=str(obj.spec.get("action") or "ALLOW").upper(),
        rules=tuple(obj.spec.get("rules") or ()),
        dry_run=str(obj.annotations.get(DRY_RUN_ANNOTATION, "")).lower() == "true",
        provider=str((obj.spec.get("provider") or {}).get("name") or ""),
    )


def _mode_of(setting: Any) -> MtlsMode:
    return MtlsMode.parse((setting or {}).get("mode") if isinstance(setting, Mapping) else None)


def _inherit(mode: MtlsMode, parent: MtlsMode) -> MtlsMode:
    return parent if mode is MtlsMode.UNSET else mode


def build(by_kind: Mapping[str, Iterable[ConfigObject]], root_namespace: str) -> SecurityPolicies:
    return SecurityPolicies(
        root_namespace=root_namespace,
        peer_authentications=tuple(by_kind.get("PeerAuthentication", ())),
        authorization_policies=tuple(by_kind.get("AuthorizationPolicy", ())),
        request_authentications=tuple(by_kind.get("RequestAuthentication", ())),
    )


def path_template_error(path: str) -> str:
    """Why an AuthorizationPolicy path template cannot be served ("" if it can).

    ``{*}`` stands for one whole segment and ``{**}`` for any number of them; nothing may
    be templated after a ``{**}``. That last rule is Envoy's URI template grammar, and
    Envoy 1.40 aborts on a template that breaks it rather than rejecting the config.
    """
    if "{" not in path and "}" not in path:
        return ""
    after_rest = False
    for segment in path.split("/"):
        if "{" not in segment and "}" not in segment:
            continue
        if segment not in ("{*}", "{**}"):
            return "{*} and {**} must each be a whole path segment"
        if after_rest:
            return "no {*} or {**} may follow {**}"
        after_rest = segment == "{**}"
    return ""
