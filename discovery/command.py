"""``pilotfish discovery``: flags → ``DiscoveryOptions``, then run until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import contextlib
import resource
import signal
import sys
from pathlib import Path
from typing import Any

import anyio

from pilotfish.core import meshconfig, plugins
from pilotfish.core.output import CommandError
from pilotfish.core.security.provider import CaSetupError, CertSettings
from pilotfish.core.sources import SourceSettings
from pilotfish.discovery.app import Discovery, DiscoveryOptions, tune_gc
from pilotfish.discovery.inject.settings import InjectionError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Serve xDS to proxies from Istio config in a directory, or in a "
                     "Kubernetes cluster.")
    p.add_argument("--config-dir", help="directory of Istio/Kubernetes YAML (read recursively, "
                   "watched for changes)")
    p.add_argument("--kubeconfig", help="read config from the Kubernetes cluster this "
                   "kubeconfig names (listed, then watched). In a pod, without --config-dir "
                   "or --kubeconfig: the pod's own cluster, as its service account")
    p.add_argument("--context", help="the kubeconfig's context to use (default: its "
                   "current-context)")
    p.add_argument("--mesh-config", help="pilotfish.yaml: profile, plugins, mesh settings")
    p.add_argument("--xds-address", default="127.0.0.1:15010",
                   help="gRPC ADS address (default %(default)s)")
    p.add_argument("--debug-address", default="127.0.0.1:15014",
                   help="debug HTTP address, empty to disable (default %(default)s)")
    p.add_argument("--secure-xds-address", default="127.0.0.1:15012",
                   help="TLS address for ADS (callers must authenticate) and the CA, empty "
                   "to disable (default %(default)s)")
    p.add_argument("--webhook-address", default="",
                   help="serve the sidecar injection (/inject) and config validation "
                   "(/validate) webhooks over TLS here, istiod's :15017, with a certificate "
                   "from discovery's CA; needs --secure-xds-address (default: off)")
    p.add_argument("--lease-duration", type=float, default=30.0, metavar="SECONDS",
                   help="on a cluster: how long a replica's Lease (Gateway API status "
                   "write-back, the root ConfigMaps) holds without renewal; renewed within "
                   "half of it, tried every quarter (default %(default)gs, as Istio)")
    p.add_argument("--state-dir", help="where the CA keeps its root and writes root-cert.pem "
                   "(default /var/lib/pilotfish/discovery as root, else "
                   "~/.local/state/pilotfish/discovery)")
    p.add_argument("--ca-dir", help="plugged-in CA files (ca-cert.pem, ca-key.pem, "
                   "root-cert.pem, cert-chain.pem) for istio-ca; the mounted root (and "
                   "discovery's cert) for the file provider")
    p.add_argument("--token-key", help="the node's PEM public key: verifies pod tokens "
                   "(authorization: Bearer) on 15012")
    p.add_argument("--workload-cert-ttl", help="lifetime of a workload certificate when the "
                   "CSR asks for none (default: mesh config, else 24h)")
    p.add_argument("--max-workload-cert-ttl", help="longer requests are refused (default: "
                   "mesh config, else 2160h = 90 days)")


def raise_open_files_limit() -> None:
    """Every connected proxy holds a socket: take the hard limit on open files (often 1,024
    soft against a much higher hard one), as servers of many connections do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(args: argparse.Namespace) -> int:
    raise_open_files_limit()
    config = meshconfig.load(args.mesh_config)
    active = plugins.Plugins.from_config(config)
    options = DiscoveryOptions(
        xds_address=args.xds_address,
        debug_address=args.debug_address or None,
        sources=SourceSettings(config_dir=Path(args.config_dir) if args.config_dir else None,
                               limits=config.discovery.config_limits,
                               root_namespace=config.mesh.root_namespace,
                               **kube_settings(args)),
        secure_xds_address=args.secure_xds_address or None,
        certs=cert_settings(args, config),
        token_key=Path(args.token_key) if args.token_key else None,
        webhook_address=args.webhook_address or None,
        lease_duration=args.lease_duration,
    )
    if not args.lease_duration > 0:
        raise CommandError(f"--lease-duration {args.lease_duration:g}: must be positive")
    if options.webhook_address and not options.secure_xds_address:
        raise CommandError("--webhook-address needs --secure-xds-address: the webhooks' "
                           "certificate comes from discovery's CA")
    if options.sources.config_dir is not None and not options.sources.config_dir.is_dir():
        raise CommandError(f"--config-dir {args.config_dir}: not a directory")
    try:
        discovery = Discovery(config, active, options)
    except CaSetupError as exc:
        raise CommandError(str(exc)) from exc
    except InjectionError as exc:
        raise CommandError(f"{config.source}: {exc}") from exc

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_on_signal, tg.cancel_scope)
            await tg.start(discovery.run)
            tune_gc()
            for error in discovery.store.errors():
                print(error, file=sys.stderr)

    anyio.run(main)
    return 0


def kube_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Which Kubernetes cluster to read, if any; a kubeconfig that cannot be used is the
    command's error, before anything starts."""
    from pilotfish.plugins.kube import client

    kubeconfig = Path(args.kubeconfig) if args.kubeconfig else None
    if args.context and kubeconfig is None:
        raise CommandError("--context needs --kubeconfig")
    if kubeconfig is not None and not kubeconfig.is_file():
        raise CommandError(f"--kubeconfig {args.kubeconfig}: no such file")
    in_cluster = kubeconfig is None and not args.config_dir and client.in_cluster()
    if kubeconfig is not None or in_cluster:
        try:
            client.load(kubeconfig, args.context).close()
        except client.ConfigError as exc:
            raise CommandError(str(exc)) from exc
    return {"kubeconfig": kubeconfig, "kube_context": args.context, "in_cluster": in_cluster}


def cert_settings(args: argparse.Namespace, config: meshconfig.MeshConfig) -> CertSettings:
    from pilotfish.core.security.files import default_state_dir

    ttl = config.discovery.workload_cert_ttl
    max_ttl = config.discovery.max_workload_cert_ttl
    if args.workload_cert_ttl:
        ttl = meshconfig.parse_duration(args.workload_cert_ttl, "--workload-cert-ttl")
    if args.max_workload_cert_ttl:
        max_ttl = meshconfig.parse_duration(args.max_workload_cert_ttl, "--max-workload-cert-ttl")
    if not 0 < ttl <= max_ttl:
        raise CommandError(f"workload certificate TTL {ttl:g}s must be positive and at most "
                           f"the maximum {max_ttl:g}s")
    if args.ca_dir and not Path(args.ca_dir).is_dir():
        raise CommandError(f"--ca-dir {args.ca_dir}: not a directory")
    return CertSettings(
        state_dir=Path(args.state_dir) if args.state_dir else default_state_dir(),
        ca_dir=Path(args.ca_dir) if args.ca_dir else None,
        trust_domain=config.mesh.trust_domain, workload_ttl=ttl, max_workload_ttl=max_ttl)


async def stop_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return
