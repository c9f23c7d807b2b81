"""Plugin discovery and selection, profiles, and the typed facade core uses to call hooks.

Built-ins and third-party plugins are found the same way: entry points in the groups
below. A *profile* is a named plugin set, contributed as data through the entry-point
group ``pilotfish.profiles`` (``sidecar`` and ``grpc`` are built in; any installed
distribution may add one). The mesh config picks one or more profiles and may replace,
add or remove plugins by entry-point name; only the selected plugins are imported and
registered (the config file is an allowlist). One ``Plugins`` object per running app.

This module stays cheap to import (the command line loads it for every command): the
types the facade returns are imported only for type checking, and each method imports
what it checks against when it runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from pilotfish.core import hookspecs
from pilotfish.core.meshconfig import MeshConfig

if TYPE_CHECKING:
    from pilotfish.core.interceptor import Interceptor, InterceptorSettings
    from pilotfish.core.objects import ConfigObject, KindInfo
    from pilotfish.core.proxy import ProxyScope
    from pilotfish.core.proxy_backend import ProxyBackend
    from pilotfish.core.push_context import PushContext
    from pilotfish.core.security.provider import CertProvider, CertSettings
    from pilotfish.core.sniffing import Sniffer
    from pilotfish.core.sources import ConfigSource, SourceSettings
    from pilotfish.core.store import ConfigError
    from pilotfish.core.xds.generator import Generators

# Short group name → entry-point group.
GROUPS: Mapping[str, str] = {
    "xds": "pilotfish.xds",
    "sources": "pilotfish.sources",
    "proxies": "pilotfish.proxies",
    "interceptors": "pilotfish.interceptors",
    "sniffers": "pilotfish.sniffers",
    "certs": "pilotfish.certs",
}
PROFILE_GROUP = "pilotfish.profiles"


class PluginError(Exception):
    """A plugin choice cannot be honoured; the message lists what is installed."""


@attrs.frozen
class Profile:
    """A named plugin set: for each group, the entry-point names it activates, in order.

    Distributions contribute profiles as data: an entry point in ``pilotfish.profiles``
    whose name is the profile's and whose value names a ``Profile`` object, e.g.
    ``grpc = "pilotfish.plugins.profiles:GRPC"``.
    """

    description: str
    plugins: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)


@attrs.frozen
class InstalledPlugin:
    group: str  # short group name
    name: str
    value: str  # "module" or "module:attr"
    distribution: str
    version: str

    @property
    def label(self) -> str:
        return f"{self.group}:{self.name} (from {self.distribution} {self.version})"

    def load(self) -> Any:
        return metadata.EntryPoint(self.name, self.value, GROUPS[self.group]).load()


@attrs.frozen
class InstalledProfile:
    name: str
    value: str  # "module:ATTR"
    distribution: str
    version: str

    def load(self) -> Profile:
        try:
            profile = metadata.EntryPoint(self.name, self.value, PROFILE_GROUP).load()
        except (ImportError, AttributeError) as exc:
            raise PluginError(f"profile {self.name!r} (from {self.distribution} "
                              f"{self.version}): cannot load {self.value}: {exc}") from exc
        if not isinstance(profile, Profile):
            raise PluginError(f"profile {self.name!r} (from {self.distribution} "
                              f"{self.version}): {self.value} is not a "
                              "pilotfish.core.plugins.Profile")
        unknown = sorted(set(profile.plugins) - set(GROUPS))
        if unknown:
            raise PluginError(f"profile {self.name!r} (from {self.distribution} "
                              f"{self.version}): unknown plugin group {unknown[0]!r}; "
                              f"expected one of {', '.join(GROUPS)}")
        return profile


def _origin(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    if dist is None:
        return "?", "?"
    return dist.metadata["Name"], dist.version


def installed(group: str) -> dict[str, InstalledPlugin]:
    """Every plugin installed in a group, by name."""
    out: dict[str, InstalledPlugin] = {}
    for ep in metadata.entry_points(group=GROUPS[group]):
        distribution, version = _origin(ep)
        out[ep.name] = InstalledPlugin(group=group, name=ep.name, value=ep.value,
                                       distribution=distribution, version=version)
    return out


def installed_profiles() -> dict[str, InstalledProfile]:
    """Every profile installed, by name."""
    out: dict[str, InstalledProfile] = {}
    for ep in metadata.entry_points(group=PROFILE_GROUP):
        distribution, version = _origin(ep)
        out[ep.name] = InstalledProfile(ep.name, ep.value, distribution, version)
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


def profiles(config: MeshConfig) -> list[tuple[InstalledProfile, Profile]]:
    """The profiles the config names, loaded, in the config's order."""
    available = installed_profiles()
    out = []
    for name in config.profiles:
        if name not in available:
            listed = ", ".join(f"{p.name} (from {p.distribution} {p.version})"
                               for p in sorted(available.values(), key=lambda p: p.name))
            raise PluginError(f"{config.source}: profile: unknown profile {name!r}; "
                              f"installed in {PROFILE_GROUP}: {listed or 'none'}")
        out.append((available[name], available[name].load()))
    return out


def chosen_proxy(config: MeshConfig, flag: str | None = None,
                 field: str = "proxy") -> tuple[str, str]:
    """The proxy backend to run, and who chose it (for messages): ``--proxy`` when given,
    else the mesh config's ``field`` (``proxy``, default envoy: what agents run;
    ``ztunnel``, default ztunnel: what the local node runs as ambient mode's node proxy).
    A name no installed backend has is an error naming the flag, or the file, field and
    value."""
    if flag:
        name, where = flag, f"--proxy {flag}"
    else:
        name = str(getattr(config, field))
        where = f"{config.source}: {field}: {name!r}"
    available = installed("proxies")
    if name not in available:
        raise PluginError(f"{where}: no such proxy backend; " + _describe("proxies", available))
    return name, where


def active_proxy(config: MeshConfig, flag: str | None = None,
                 field: str = "proxy") -> ProxyBackend:
    """The backend ``chosen_proxy`` names, among those the config enables: installed is not
    enough (the config file is an allowlist). ``PluginError`` says who chose it."""
    name, where = chosen_proxy(config, flag, field)
    backend = Plugins.from_config(config, groups=["proxies"]).proxy_backends().get(name)
    if backend is None:
        raise PluginError(f"{where}: installed but not enabled by {config.source}; "
                          "add it under plugins.proxies")
    return backend


def select(config: MeshConfig, groups: Iterable[str] | None = None) -> list[InstalledPlugin]:
    """The active plugins for the config's profiles and choices, in a stable order."""
    chosen = profiles(config)
    for group in config.plugins:
        if group not in GROUPS:
            raise PluginError(
                f"{config.source}: plugins.{group}: unknown plugin group; "
                f"expected one of {', '.join(GROUPS)}"
            )
    active: list[InstalledPlugin] = []
    for group in groups or GROUPS:
        available = installed(group)
        choice = config.plugins.get(group)
        names = list(dict.fromkeys(
            name for _, profile in chosen for name in profile.plugins.get(group, ())))
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
    """The plugin manager of one app and the typed calls core makes through it.

    Every method calls one hook and checks what each plugin returned against the contract
    core relies on, so a broken plugin fails at start-up with its name, not later on a
    missing attribute.
    """

    def __init__(self, active: Sequence[InstalledPlugin] = (), extra: Iterable[Any] = ()):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.active = list(active)
        self._labels: dict[str, str] = {}
        for plugin in self.active:
            name = f"{plugin.group}:{plugin.name}"
            self.pm.register(plugin.load(), name=name)
            self._labels[name] = plugin.label
        for index, obj in enumerate(extra):
            name = f"extra:{index}:{getattr(obj, '__name__', type(obj).__name__)}"
            self.pm.register(obj, name=name)
            self._labels[name] = f"plugin {name}"
        self.pm.check_pending()

    @classmethod
    def from_config(
        cls, config: MeshConfig, groups: Iterable[str] | None = None, extra: Iterable[Any] = ()
    ) -> Plugins:
        return cls(select(config, groups), extra)

    def _results(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Each implementation's result with the label of its plugin, in registration
        order (the mesh config's order); ``None`` results are left out."""
        out = []
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            result = impl.function(*(kwargs[name] for name in impl.argnames))
            if result is not None:
                out.append((self._labels.get(impl.plugin_name, impl.plugin_name), result))
        return out

    @staticmethod
    def _check(label: str, hook: str, obj: object, contract: type, what: str) -> None:
        try:
            kept = isinstance(obj, contract)
        except Exception as exc:  # a property of the plugin's object raised
            raise PluginError(f"{label}: {hook} returned {obj!r}, which fails when read "
                              f"({type(exc).__name__}: {exc})") from exc
        if not kept:
            raise PluginError(f"{label}: {hook} returned {obj!r}, which is not {what} "
                              f"(see {contract.__module__}.{contract.__qualname__})")

    # -- the facade: one method per hook ------------------------------------------------

    def config_kinds(self) -> list[KindInfo]:
        from pilotfish.core.objects import KindInfo

        kinds = []
        for label, result in self._results("pilotfish_config_kinds"):
            for kind in result:
                self._check(label, "pilotfish_config_kinds", kind, KindInfo, "a KindInfo")
                kinds.append(kind)
        return kinds

    def validate_config(self, obj: ConfigObject) -> list[ConfigError]:
        return [err for result in self.pm.hook.pilotfish_validate_config(obj=obj)
                for err in result]

    def config_sources(self, settings: SourceSettings) -> list[ConfigSource]:
        return [source for _, source in self._results("pilotfish_config_source",
                                                      settings=settings)]

    def sniffers(self) -> list[Sniffer]:
        """Active sniffers in mesh-config order."""
        from pilotfish.core.sniffing import Sniffer

        out = []
        for label, sniffer in self._results("pilotfish_sniffer"):
            self._check(label, "pilotfish_sniffer", sniffer, Sniffer, "a Sniffer")
            out.append(sniffer)
        return out

    def xds_generators(self) -> Generators:
        """Every active generator, by the proxy kinds and type URL each serves."""
        from pilotfish.core.xds.generator import Generator, GeneratorConflict, Generators

        entries = []
        sniffers = self.sniffers()
        for label, result in self._results("pilotfish_xds_generator", sniffers=sniffers):
            for generator in result if isinstance(result, (list, tuple)) else (result,):
                self._check(label, "pilotfish_xds_generator", generator, Generator,
                            "a generator with type_url, proxy_kinds, depends_on and "
                            "generate()")
                entries.append((label, generator))
        # Patches that follow config objects move the generators they patch.
        patched_by = {url: kinds for url in sorted({g.type_url for _, g in entries})
                      if (kinds := self.patch_depends_on(url))}
        try:
            return Generators(entries, patched_by)
        except GeneratorConflict as exc:
            raise PluginError(str(exc)) from None

    def patch_resources(self, type_url: str, scope: ProxyScope, push: PushContext,
                        resources: list[Any]) -> None:
        self.pm.hook.pilotfish_patch_resources(
            type_url=type_url, scope=scope, push=push, resources=resources
        )

    @property
    def has_patches(self) -> bool:
        return bool(self.pm.hook.pilotfish_patch_resources.get_hookimpls())

    def patch_depends_on(self, type_url: str) -> frozenset[str]:
        """The config kinds whose changes can alter some plugin's patches of a type."""
        kinds: set[str] = set()
        for label, result in self._results("pilotfish_patch_depends_on", type_url=type_url):
            if isinstance(result, str) or not all(isinstance(k, str) for k in result):
                raise PluginError(f"{label}: pilotfish_patch_depends_on returned {result!r}, "
                                  "which is not a list of kind names")
            kinds.update(result)
        return frozenset(kinds)

    def patches_apply(self, type_url: str, scope: ProxyScope, push: PushContext) -> bool:
        """Whether some plugin may patch this type for this scope: one that says so, or one
        that patches without saying where (no ``pilotfish_patch_applies``)."""
        answering = {impl.plugin_name
                     for impl in self.pm.hook.pilotfish_patch_applies.get_hookimpls()}
        for impl in self.pm.hook.pilotfish_patch_resources.get_hookimpls():
            if impl.plugin_name not in answering:
                return True
        return any(self.pm.hook.pilotfish_patch_applies(
            type_url=type_url, scope=scope, push=push))

    def proxy_backends(self) -> dict[str, ProxyBackend]:
        from pilotfish.core.proxy_backend import ProxyBackend

        out = {}
        for label, backend in self._results("pilotfish_proxy_backend"):
            self._check(label, "pilotfish_proxy_backend", backend, ProxyBackend,
                        "a proxy backend")
            out[backend.name] = backend
        return out

    def interceptors(self, settings: InterceptorSettings) -> list[Interceptor]:
        """Active interceptors in profile order (a pod goes to the first that captures it)."""
        from pilotfish.core.interceptor import Interceptor

        out = []
        for label, interceptor in self._results("pilotfish_interceptor", settings=settings):
            self._check(label, "pilotfish_interceptor", interceptor, Interceptor,
                        "an interceptor")
            out.append(interceptor)
        return out

    def cert_provider(self, settings: CertSettings) -> CertProvider | None:
        """The one active cert provider, or ``None`` when no plugin offers one."""
        from pilotfish.core.security.provider import CertProvider

        providers = []
        for label, provider in self._results("pilotfish_cert_provider", settings=settings):
            self._check(label, "pilotfish_cert_provider", provider, CertProvider,
                        "a cert provider")
            providers.append(provider)
        if len(providers) > 1:
            raise PluginError(
                f"{len(providers)} cert providers are active "
                f"({', '.join(sorted(p.name for p in providers))}); keep one with "
                "plugins.certs.use in the mesh config")
        return providers[0] if providers else None
