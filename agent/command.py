"""``pilotfish agent``: pilot-agent's job for one proxy.

Turns flags into ``ProxyOptions``, picks the proxy backend named by ``--proxy`` (else by the
mesh config's ``proxy``, else envoy) among the plugins the mesh config enables, writes the
bootstrap, has the proxy check it, starts the status server (``status_server``: readiness,
merged metrics, /quitquitquit) and then hands the proxy to ``supervisor.Supervisor``, which
runs it, drains it on SIGTERM and returns its exit status (see there for the shutdown sequence;
a backend with nothing to run, ``grpc``, is held until stopped instead).

``pilotfish agent wait`` is pilot-agent's ``wait``: see ``startup``.

Exit status: the proxy's (``supervisor.exit_status``); 2 for bad flags or config; 1 when
the proxy cannot be set up (not installed, bootstrap rejected, directory not writable, a
status port or socket taken).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import stat
import sys
import tempfile
from pathlib import Path

import anyio
import attrs

from pilotfish.agent import identity as agent_identity
from pilotfish.agent import request as agent_request
from pilotfish.agent import startup, status_server
from pilotfish.agent.sds_server import SdsServer
from pilotfish.agent.status_server import StatusServer, StatusServerError
from pilotfish.agent.supervisor import Supervisor
from pilotfish.core import meshconfig
from pilotfish.core import plugins as registry
from pilotfish.core.model import is_ip
from pilotfish.core.proxy_backend import (
    INTERCEPTION_MODES,
    PROXY_TYPES,
    XDS_MODES,
    PodPort,
    ProxyBackend,
    ProxyError,
    ProxyOptions,
    split_host_port,
)

LOG_LEVELS = ("trace", "debug", "info", "warning", "error", "critical", "off")
REQUIRED = ("discovery", "name", "ip")  # checked in main(): `agent wait` needs none of them

# Kubernetes label syntax: optional DNS-subdomain prefix, then a 63-char name.
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?\Z")


class AgentError(Exception):
    """A flag is wrong; the message names it."""


def parse_labels(text: str) -> dict[str, str]:
    """``app=web,version=v1`` → dict; an error names the bad item."""
    labels: dict[str, str] = {}
    for index, raw in enumerate(text.split(","), 1):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        _, _, name = key.rpartition("/")
        if not sep or not name or not _LABEL_NAME.match(name) or not _LABEL_NAME.match(value):
            raise AgentError(
                f"--labels: item {index}, {item!r}: expected KEY=VALUE with Kubernetes label "
                "syntax (letters, digits, '-', '_', '.'), as in app=web,version=v1"
            )
        if key in labels:
            raise AgentError(f"--labels: item {index}, {item!r}: label {key!r} given twice")
        labels[key] = value
    return labels


def parse_pod_ports(text: str) -> tuple[PodPort, ...]:
    """``http:8080,grpc:9090/TCP,7070`` → container ports (``[NAME:]PORT[/PROTOCOL]``)."""
    ports = []
    for index, raw in enumerate(text.split(","), 1):
        item = raw.strip()
        if not item:
            continue
        rest, _, protocol = item.partition("/")
        name, _, port = rest.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise AgentError(
                f"--pod-ports: item {index}, {item!r}: expected [NAME:]PORT[/PROTOCOL] "
                "with a port from 1 to 65535, as in http:8080"
            )
        ports.append(PodPort(int(port), name, (protocol or "TCP").upper()))
    return tuple(ports)


def parse_meta(items: list[str]) -> dict[str, str]:
    """Repeated ``--meta KEY=VALUE`` → extra node metadata (Istio's ISTIO_META_*)."""
    meta = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AgentError(f"--meta {item!r}: expected KEY=VALUE, as in WORKLOAD_NAME=web")
        meta[key] = value
    return meta


def default_config_dir(name: str, namespace: str) -> Path:
    """Per-proxy, so several agents on one host do not share a bootstrap or socket."""
    leaf = f"{name}.{namespace}"
    if os.environ.get("TMPDIR"):
        return Path(os.environ["TMPDIR"]) / "pilotfish" / leaf
    if os.geteuid() == 0:
        return Path("/var/run/pilotfish") / leaf
    return private_folder(Path(tempfile.gettempdir()) / f"pilotfish-{os.getuid()}") / leaf


def private_folder(path: Path) -> Path:
    """``path`` as a folder only this user can enter. In a shared /tmp another user could
    have made it first (to see or swap the bootstrap and sockets): that is refused."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()
    if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid()
            or stat.S_IMODE(info.st_mode) & 0o077):
        raise ValueError(
            f"{path} is not a private folder of this user (a link, another owner, or open to "
            "others); pass --config-dir, or set TMPDIR to a folder of your own")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--type", dest="proxy_type", choices=PROXY_TYPES, default="sidecar",
        help="proxy role (default: sidecar)")
    add("--proxy", help="proxy backend, by entry-point name (default: the mesh config's "
        "proxy, else envoy)")
    add("--discovery", metavar="HOST:PORT", help="xDS address of discovery (required)")
    add("--name", help="pod or instance name (required)")
    add("--namespace", default="default", help="namespace (default: default)")
    add("--ip", help="the workload's IP address (required)")
    add("--labels", default="", metavar="K=V,...", help="workload labels")
    add("--service-account", default="default", help="service account (default: default)")
    add("--locality", default="", metavar="REGION[/ZONE[/SUBZONE]]",
        help="where the proxy runs, for locality-aware load balancing (default: from the "
             "topology labels in --labels)")
    add("--admin-port", type=int, default=15000, help="proxy admin port (default: 15000)")
    add("--xds-mode", choices=XDS_MODES, default="delta",
        help="ADS flavour: delta (Istio's default since 1.22) or sotw")
    add("--interception-mode", choices=INTERCEPTION_MODES, default="REDIRECT",
        help="how traffic reaches the proxy, told to discovery (default: REDIRECT)")
    add("--pod-ports", default="", metavar="[NAME:]PORT[/PROTO],...",
        help="container ports, so named target ports resolve")
    add("--meta", action="append", default=[], metavar="KEY=VALUE",
        help="extra node metadata (repeatable)")
    add("--config-dir", type=Path, help="where the bootstrap is written (default: "
        "$TMPDIR/pilotfish/NAME.NS; as root /var/run/pilotfish/NAME.NS; "
        "else /tmp/pilotfish-UID/NAME.NS)")
    add("--mesh-config", type=Path, help="pilotfish.yaml: profile and plugin choices")
    add("--concurrency", type=int, default=None,
        help="proxy workers, 0 for one per CPU (default: Envoy's 2 worker threads, as "
        "Istio's sidecars; one native process)")
    # Not --log-level: `pilotfish --log-level` already sets the agent's own logging.
    add("--proxy-log-level", choices=LOG_LEVELS, default="warning",
        help="the proxy's log level (default: warning)")
    add("--drain-duration", default="45s",
        help="how long the proxy spreads a drain over (Envoy --drain-time-s; default: 45s)")
    add("--termination-drain-duration", default="5s",
        help="how long to drain on SIGTERM before stopping the proxy (default: 5s)")
    add("--prometheus-port", type=int,
        help="port where the proxy serves its own /stats/prometheus (default: 15090 for "
             "sidecars, 0 = off for routers, several of which may share a host)")
    status_server.add_arguments(parser)
    agent_identity.add_arguments(parser)
    sub = parser.add_subparsers(dest="agent_command", metavar="[wait|request]")
    wait = sub.add_parser("wait", help="exit 0 once the proxy is ready "
                          "(holdApplicationUntilProxyStarts)",
                          description="Poll the agent's readiness endpoint until it answers "
                          "200 (pilot-agent wait).")
    startup.add_wait_arguments(wait)
    request = sub.add_parser("request", help="one HTTP request to the local proxy or agent "
                             "(pilot-agent request; the sidecar's preStop: POST drain)",
                             description="Send one HTTP request to 127.0.0.1:DEBUG_PORT, as "
                             "pilot-agent request does.")
    agent_request.add_arguments(request)


def options_from_args(args: argparse.Namespace, config: meshconfig.MeshConfig) -> ProxyOptions:
    missing = [f"--{name}" for name in REQUIRED if not getattr(args, name)]
    if missing:
        raise AgentError(f"the following arguments are required: {', '.join(missing)}")
    prometheus_port = args.prometheus_port
    if prometheus_port is None:  # Istio's sidecars serve 15090; routers here default off
        prometheus_port = 15090 if args.proxy_type == "sidecar" else 0
    try:
        split_host_port(args.discovery, "--discovery")
    except ValueError as exc:
        raise AgentError(str(exc)) from None
    if not is_ip(args.ip):
        raise AgentError(f"--ip {args.ip!r}: not an IP address")
    try:
        drain = meshconfig.parse_duration(args.drain_duration, "--drain-duration")
        return ProxyOptions(
            proxy_type=args.proxy_type, name=args.name, namespace=args.namespace,
            ip=args.ip, labels=parse_labels(args.labels),
            service_account=args.service_account, discovery_address=args.discovery,
            xds_mode=args.xds_mode, interception_mode=args.interception_mode,
            domain=config.mesh.domain, admin_port=args.admin_port,
            config_dir=args.config_dir or default_config_dir(args.name, args.namespace),
            concurrency=args.concurrency, drain_seconds=math.ceil(drain),
            log_level=args.proxy_log_level, metadata=parse_meta(args.meta),
            pod_ports=parse_pod_ports(args.pod_ports),
            prometheus_port=prometheus_port, locality=args.locality,
            output_certs=args.output_certs,
        )
    except ValueError as exc:  # ProxyOptions validators and durations name the field
        raise AgentError(str(exc)) from None


def select_backend(config: meshconfig.MeshConfig, flag: str | None = None) -> ProxyBackend:
    """The active backend ``--proxy`` names, else the mesh config's ``proxy``; the error
    says which of the two chose it and lists what could be chosen."""
    try:
        return registry.active_proxy(config, flag)
    except registry.PluginError as exc:
        raise AgentError(str(exc)) from None


async def run(supervisor: Supervisor, status: StatusServer | None, sds: SdsServer,
              identity: agent_identity.AgentIdentity | None = None) -> int:
    """Serve status and SDS (certificate files always; the workload certificate with an
    identity) while the supervisor runs the proxy; errors leave as themselves."""
    failure: ProxyError | StatusServerError | None = None
    code = 1
    async with anyio.create_task_group() as tg:
        try:
            if status is not None:
                await status.start(tg)  # before the proxy: a taken port stops us early
            # What the proxy needs served beside it (Envoy: its access-log sink).
            await tg.start(supervisor.admin.serve)
            try:
                await tg.start(sds.serve)  # before the proxy, so it never dials nothing
            except OSError as exc:
                raise ProxyError(f"{sds.path}: cannot serve SDS there: "
                                 f"{exc.strerror or exc}") from exc
            if identity is not None:
                try:
                    await identity.start(tg)
                except OSError as exc:
                    raise ProxyError(str(exc)) from exc
            code = await supervisor.run()
        except (ProxyError, StatusServerError) as exc:
            failure = exc
        tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return code


def main(args: argparse.Namespace) -> int:
    if getattr(args, "agent_command", None) == "wait":
        return startup.wait_main(args)
    if getattr(args, "agent_command", None) == "request":
        return agent_request.main(args)
    try:
        config = meshconfig.load(args.mesh_config)
        try:
            status_server.check_args(args)
        except ValueError as exc:
            raise AgentError(str(exc)) from None
        options = options_from_args(args, config)
        identity_settings = agent_identity.settings_from_args(args, config.mesh.trust_domain)
        if identity_settings is not None:
            options = attrs.evolve(options, xds_tls=identity_settings.xds_tls)
        agent_identity.check_socket_paths(options)
        termination_drain = meshconfig.parse_duration(
            args.termination_drain_duration, "--termination-drain-duration"
        )
        backend = select_backend(config, args.proxy)
        # A proxy that speaks plaintext xDS to the agent (proxyless gRPC) reads its
        # certificate from files: they go to the config dir unless --output-certs says.
        relay_tls = bool(getattr(backend, "plaintext_xds", False))
        if relay_tls and identity_settings is not None and options.output_certs is None:
            options = attrs.evolve(options, output_certs=options.config_dir)
    except (AgentError, agent_identity.IdentityError, meshconfig.MeshConfigError,
            registry.PluginError) as exc:
        print(f"pilotfish agent: error: {exc}", file=sys.stderr)
        return 2
    try:
        try:
            path = backend.write_bootstrap(options)
        except OSError as exc:
            raise ProxyError(f"{options.config_dir}: cannot write the bootstrap: "
                             f"{exc.strerror}; choose another --config-dir") from exc
        backend.check(path)
        admin = backend.admin(options)
        supervisor = Supervisor(backend, options, path, termination_drain, admin)
        # With xDS over mTLS the bootstrap always asks for the workload certificate, so
        # readiness can (and must) wait for it: before it, mesh mTLS would fail.
        secrets = ("default", "ROOTCA") if options.xds_tls else ()
        status = status_server.from_args(args, options, supervisor, admin, secrets)
        sds = SdsServer(options.sds_socket)
        identity = (agent_identity.AgentIdentity(identity_settings, options, sds,
                                                 relay_tls=relay_tls)
                    if identity_settings is not None else None)
        return anyio.run(run, supervisor, status, sds, identity)
    except (ProxyError, StatusServerError) as exc:
        print(f"pilotfish agent: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # until `pilotfish agent` is wired: python -m pilotfish.agent.command
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    _parser = argparse.ArgumentParser(
        prog="pilotfish agent", description="Bootstrap and run a proxy (pilot-agent's job)."
    )
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
