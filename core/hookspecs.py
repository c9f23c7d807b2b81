"""Every pilotfish hook, grouped by the phase in which it fires.

Hooks register and configure; they never sit on the data path. A hook returns objects
(generators, sources, proxy backends) that core then calls directly. Each docstring here
is the hook's reference documentation (docs/hooks.md is generated from it).

Implement a hook in a plugin module with ``@pilotfish.core.hookspecs.hookimpl`` and expose
the module through an entry point in one of the groups listed in ``docs/plugins.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

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
    from pilotfish.core.xds.generator import Generator

PROJECT = "pilotfish"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------------------------------
# Config: kinds, validation, sources
# ---------------------------------------------------------------------------------------


@hookspec
def pilotfish_config_kinds() -> Sequence[KindInfo]:
    """Declare config kinds this plugin reads, beyond the built-in ones.

    Fires once when a config store is created. Return ``KindInfo`` entries (group, kind,
    served versions, namespaced or not). Objects of kinds nobody declares are reported as
    unknown and ignored. All results are combined.
    """


@hookspec
def pilotfish_validate_config(obj: ConfigObject) -> Sequence[ConfigError]:
    """Check one config object beyond its OpenAPI schema (Galley's semantic checks).

    Fires for every object before the store accepts it, after schema validation passed.
    ``obj`` is the object as written, with its source file and line map. Return the
    problems found (``ConfigError`` with the field path and message; use
    ``severity="warning"`` for problems that should not reject the object). All results
    are combined; any error rejects the object and the last good version stays in force.
    """


@hookspec
def pilotfish_config_source(settings: SourceSettings) -> ConfigSource | None:
    """Provide a config source (group ``pilotfish.sources``).

    Fires once when discovery starts. ``settings`` carries the command-line choices
    (config directory, Kubernetes address, ...). Return an object with an async
    ``run(store, *, task_status)`` that feeds the store until cancelled, or ``None`` when
    the settings do not ask for this source. All non-None results run side by side.
    """


# ---------------------------------------------------------------------------------------
# xDS: generation and patching
# ---------------------------------------------------------------------------------------


@hookspec
def pilotfish_xds_generator(sniffers: Sequence[Sniffer]) -> Generator | Sequence[Generator]:
    """Provide generators of xDS resources (group ``pilotfish.xds``).

    Fires once when discovery starts. ``sniffers`` are the active sniffers, in priority
    order (see ``pilotfish_sniffer``); a listener generator emits only the inspectors they
    name, and implementations that do not care may leave the argument out. Return one
    generator or a list of them, each an object with ``type_url``, ``proxy_kinds`` (the
    ``Proxy.kind`` values it serves: ``sidecar``, ``router``, ``grpc``, or a kind of the
    plugin's own, which proxies ask for with ``GENERATOR`` in their node metadata),
    ``depends_on`` (the config kinds whose changes can alter its output, or ``None`` for
    all) and ``generate(push, proxy, memo)`` returning protobuf messages of ``type_url``
    (``pilotfish.core.xds.generator.Generator``). Several generators may serve one type URL,
    but no two may serve it to the same proxy kind: discovery refuses to start and names
    both plugins.
    """


@hookspec
def pilotfish_patch_resources(
    type_url: str, scope: ProxyScope, push: PushContext, resources: list[Any]
) -> None:
    """Modify generated resources of one xDS type for a proxy scope (as EnvoyFilter does).

    Fires after a generator produced ``resources`` (a mutable list of protobuf messages of
    ``type_url``) and before they are serialized. Edit messages in place, or add and remove
    list items. Output is cached per ``scope`` (proxy type and kind, namespace, labels, DNS
    domain, named pod ports, Istio version), so decide only from those fields and from
    ``push``. Every implementation is called. A resource the proxy rejects is NACKed and
    shows as ERROR in ``proxy-status``. Patches that follow config objects name their kinds
    with ``pilotfish_patch_depends_on``; ``pilotfish_patch_applies`` lets a plugin say
    where it changes nothing.
    """


@hookspec
def pilotfish_patch_depends_on(type_url: str) -> Iterable[str]:
    """Name the config kinds whose changes can alter this plugin's patches of ``type_url``.

    Optional companion of ``pilotfish_patch_resources``. Fires once per type URL when
    discovery starts. A change to an object of one of these kinds moves the epoch of every
    generator of that type, as if the generator itself depended on the kind, so cached
    output is generated and patched anew and reaches connected proxies. Without it, patches
    are assumed to follow only what the generators' own inputs move (a patch fixed when the
    plugin loads). All results are combined.
    """


@hookspec
def pilotfish_patch_applies(type_url: str, scope: ProxyScope, push: PushContext) -> bool:
    """Say whether this plugin's ``pilotfish_patch_resources`` may change the resources of
    ``type_url`` for ``scope`` in ``push``.

    Optional companion of ``pilotfish_patch_resources``. Fires before the patch hook each
    time a type is generated for a scope. When every patching plugin answers ``False`` the
    generated messages are served as generated: shared between scopes without private
    copies, and endpoint-only changes brought up to date incrementally. A plugin that does
    not implement it is taken to patch everything. Decide from ``scope`` and from the
    objects of the kinds named by ``pilotfish_patch_depends_on`` only.
    """


# ---------------------------------------------------------------------------------------
# Data plane: protocol detection
# ---------------------------------------------------------------------------------------


@hookspec
def pilotfish_sniffer() -> Sniffer:
    """Provide a protocol sniffer (group ``pilotfish.sniffers``: ``tls``, ``http1``, ...).

    Fires once when discovery (or a native proxy) starts. Return an object with ``name``,
    ``protocols`` (what it can report), ``listener_filter`` (the Envoy listener filter
    doing the same job, ``""`` if none), ``max_prefix`` and a sans-IO
    ``sniff(prefix) -> Sniff`` that answers detected / need more / unknown from the first
    bytes of a connection (``pilotfish.core.sniffing``). Every active sniffer is used; the
    first that detects wins, in the order the mesh config lists them (profile, then
    ``add``). Removing a sniffer from the mesh config removes its listener filter from
    the generated listeners: ports it would have told apart are treated as TCP.
    """


# ---------------------------------------------------------------------------------------
# Agent: proxy backends
# ---------------------------------------------------------------------------------------


@hookspec
def pilotfish_proxy_backend() -> ProxyBackend:
    """Provide a proxy backend the agent can launch (group ``pilotfish.proxies``).

    Fires once when the agent starts. Return an object with ``name`` and the methods of
    ``pilotfish.core.proxy_backend.ProxyBackend``: write a bootstrap, check it, give the
    command line that runs the proxy, and ``admin(options)``, the ``ProxyAdmin`` through
    which the agent asks the running proxy everything that depends on which proxy it is
    (status for readiness, Prometheus text with Istio's metrics, config dump, drain, and
    what to serve beside it). The agent picks the backend named by ``--proxy``; the local
    node runs the one the mesh config's ``ztunnel`` names as ambient mode's node proxy
    (``ProxyOptions`` of proxy type ``ztunnel``, with ``ProxyOptions.ztunnel``).
    """


# ---------------------------------------------------------------------------------------
# Interceptors: putting a pod's traffic into its proxy
# ---------------------------------------------------------------------------------------


@hookspec
def pilotfish_interceptor(settings: InterceptorSettings) -> Interceptor:
    """Provide a traffic interceptor (group ``pilotfish.interceptors``: ``iptables``, ...).

    Fires each time ``pilotfish-cni`` (or another runtime) handles a pod, and when the
    local node starts. ``settings`` says who installs the capture (``runtime``: ``"cni"``
    or ``"init"``, whose defaults differ as Istio's do) and carries that process's
    environment. Return an object with ``name`` and the methods of
    ``pilotfish.core.interceptor.Interceptor``: ``plan(pod)`` says what would be installed
    for a ``PodFacts`` (``None``: this interceptor leaves the pod alone, e.g. it has no
    sidecar; ``skip_reason(pod)`` says why); async ``apply(pod, netns)`` installs it inside
    the pod's network namespace and may be repeated without changing anything; async
    ``remove(pod, netns)`` takes it out again; async ``check(pod, netns)`` lists what
    differs from the plan. Failures raise ``InterceptorError`` naming the network
    namespace and the step. A pod goes to the first active interceptor, in profile order,
    whose plan is not ``None``. ``pilotfish.testing.interceptors.check_interceptor``
    checks the contract.
    """


# ---------------------------------------------------------------------------------------
# Identity: certificate authorities
# ---------------------------------------------------------------------------------------


@hookspec
def pilotfish_cert_provider(settings: CertSettings) -> CertProvider | None:
    """Provide the cert provider discovery signs workload certificates with (group
    ``pilotfish.certs``: ``istio-ca``, ``file``).

    Fires once when discovery starts with secure xDS (15012) enabled. ``settings`` carries
    the state directory, the ``--ca-dir`` of plugged-in CA files, the trust domain and the
    default and maximum workload certificate lifetimes. Return an object with ``name`` and
    the methods of ``pilotfish.core.security.provider.CertProvider``: ``trust_bundle()``
    (PEM roots), ``sign(request, now)`` (a ``SigningRequest`` whose CSR core has already
    checked and whose ``spiffe_id`` is the authenticated caller's; return the chain leaf
    first, root last, or raise ``CertError``) and ``serving_certificate(dns_names,
    ip_addresses, now)`` (discovery's own TLS certificate). Return ``None`` to stay out;
    raise ``CaSetupError`` for unusable files. Exactly one provider may be active.
    ``pilotfish.testing.certs.check_cert_provider`` checks the contract.
    """
