"""Plugin discovery and selection, and the typed facade core uses to call hooks.

Built-ins and third-party plugins are found the same way: entry points in the groups
below. The mesh config picks a profile (a named plugin set) and may replace, add or remove
plugins by entry-point name; only the selected plugins are imported and registered (the
config file is an allowlist). One ``Plugins`` object per running app.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from typing import Any

import attrs
import pluggy

from pilotfish.core import hookspecs
from pilotfish.core.meshconfig import MeshConfig

# Short group name → entry-point group.
GROUPS: Mapping[str, str] = {
    "xds": "pilotfish.xds",
    "sources": "pilotfish.sources",
    "proxies": "pilotfish.proxies",
    "interceptors": "pilotfish.interceptors",
    "sniffers": "pilotfish.sniffers",
    "certs": "pilotfish.certs",
}

# Profiles: the plugin set each group starts from.
PROFILES: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "sidecar": {
        "xds": ("cds", "eds", "lds", "rds"),
        "sources": ("files",),
        "proxies": ("envoy",),
        "interceptors": (),
        "sniffers": ("tls", "http1", "http2"),
        "certs": ("istio-ca",),
    },
}


class PluginError(Exception):
    """A plugin choice cannot be honoured; the message lists what is installed."""


@attrs.frozen
class InstalledPlugin:
    group: str  # short group name
    name: str
    value: str  # "module" or "module:attr"
    distribution: str
    version: str

    def load(self) -> Any:
        return metadata.EntryPoint(self.name, self.value, GROUPS[self.group]).load()


def installed(group: str) -> dict[str, InstalledPlugin]:
    """Every plugin installed in a group, by name."""
    out: dict[str, InstalledPlugin] = {}
    for ep in metadata.entry_points(group=GROUPS[group]):
        dist = ep.dist
        out[ep.name] = InstalledPlugin(
            group=group,
            name=ep.name,
            value=ep.value,
            distribution=dist.metadata["Name"] if dist is not None else "?",
            version=dist.version if dist is not None else "?",
        )
    return out


def _describe(group: str, plugins: Mapping[str, InstalledPlugin]) -> str:
    if not plugins:
        return f"no plugins are installed in group {GROUPS[group]}"
    listed = ", ".join(
        f"{p.name} (from {p.distribution} {p.version})" for p in sorted(
            plugins.values(), key=lambda p: p.name
        )
    )
    return f"installed in {GROUPS[group]}: {listed}"


def select(config: MeshConfig, groups: Iterable[str] | None = None) -> list[InstalledPlugin]:
    """The active plugins for the config's profile and choices, in a stable order."""
    if config.profile not in PROFILES:
        raise PluginError(
            f"{config.source}: profile: unknown profile {config.profile!r}; "
            f"expected one of {', '.join(sorted(PROFILES))}"
        )
    for group in config.plugins:
        if group not in GROUPS:
            raise PluginError(
                f"{config.source}: plugins.{group}: unknown plugin group; "
                f"expected one of {', '.join(GROUPS)}"
            )
    profile = PROFILES[config.profile]
    active: list[InstalledPlugin] = []
    for group in groups or GROUPS:
        available = installed(group)
        choice = config.plugins.get(group)
        names = list(profile.get(group, ()))
        if choice is not None:
            if choice.use is not None:
                names = list(choice.use)
            names += [n for n in choice.add if n not in names]
            for name in choice.remove:
                if name not in names and name not in available:
                    raise PluginError(
                        f"{config.source}: plugins.{group}.remove: unknown plugin {name!r}; "
                        + _describe(group, available)
                    )
            names = [n for n in names if n not in choice.remove]
        for name in names:
            if name not in available:
                raise PluginError(
                    f"{config.source}: plugins.{group}: unknown plugin {name!r}; "
                    + _describe(group, available)
                )
            active.append(available[name])
    return active


class Plugins:
    """The plugin manager of one app and the typed calls core makes through it."""

    def __init__(self, active: Sequence[InstalledPlugin] = (), extra: Iterable[Any] = ()):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.active = list(active)
        for plugin in self.active:
            self.pm.register(plugin.load(), name=f"{plugin.group}:{plugin.name}")
        for index, obj in enumerate(extra):
            self.pm.register(obj, name=f"extra:{index}:{getattr(obj, '__name__', type(obj))}")
        self.pm.check_pending()

    @classmethod
    def from_config(
        cls, config: MeshConfig, groups: Iterable[str] | None = None, extra: Iterable[Any] = ()
    ) -> Plugins:
        return cls(select(config, groups), extra)

    @property
    def hook(self) -> Any:
        return self.pm.hook

    # -- the facade: one method per hook ------------------------------------------------

    def config_kinds(self) -> list[Any]:
        return [kind for result in self.hook.pilotfish_config_kinds() for kind in result]

    def validate_config(self, obj: Any) -> list[Any]:
        return [err for result in self.hook.pilotfish_validate_config(obj=obj) for err in result]

    def config_sources(self, settings: Any) -> list[Any]:
        return [s for s in self.hook.pilotfish_config_source(settings=settings) if s is not None]

    def sniffers(self) -> list[Any]:
        """Active sniffers in mesh-config order (pluggy calls the last registered first)."""
        return list(reversed(self.hook.pilotfish_sniffer()))

    def xds_generators(self) -> dict[str, Any]:
        generators: dict[str, Any] = {}
        for generator in self.hook.pilotfish_xds_generator(sniffers=self.sniffers()):
            if generator.type_url in generators:
                raise PluginError(f"two plugins generate {generator.type_url}")
            generators[generator.type_url] = generator
        return generators

    def patch_resources(self, type_url: str, scope: Any, push: Any, resources: list[Any]) -> None:
        self.hook.pilotfish_patch_resources(
            type_url=type_url, scope=scope, push=push, resources=resources
        )

    @property
    def has_patches(self) -> bool:
        return bool(self.hook.pilotfish_patch_resources.get_hookimpls())

    def proxy_backends(self) -> dict[str, Any]:
        return {backend.name: backend for backend in self.hook.pilotfish_proxy_backend()}

    def interceptors(self) -> dict[str, Any]:
        return {i.name: i for i in self.hook.pilotfish_interceptor()}

    def cert_provider(self, settings: Any) -> Any | None:
        """The one active cert provider, or ``None`` when no plugin offers one."""
        providers = [p for p in self.hook.pilotfish_cert_provider(settings=settings)
                     if p is not None]
        if len(providers) > 1:
            raise PluginError(
                f"{len(providers)} cert providers are active "
                f"({', '.join(sorted(p.name for p in providers))}); keep one with "
                "plugins.certs.use in the mesh config")
        return providers[0] if providers else None
