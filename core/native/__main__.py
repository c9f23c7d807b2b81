"""``python -m pilotfish.core.native -c BOOTSTRAP``: run the native proxy in the
foreground (the agent's ``native`` backend runs it so). SIGTERM or ``/quitquitquit`` stop
it; ``--check`` only loads the bootstrap, as Envoy's ``--mode validate``."""

from __future__ import annotations

import argparse
import logging
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

import anyio
from google.protobuf import json_format

from pilotfish.core import meshconfig, plugins
from pilotfish.core.istio_metrics import Workload
from pilotfish.core.native import bootstrap, compiled, loop
from pilotfish.core.native.admin import Admin
from pilotfish.core.native.client_session import (
    WILDCARD,
    AdsSession,
    DeltaClientSession,
    SecretSession,
    SotwClientSession,
)
from pilotfish.core.native.config import ConfigState, Rejected
from pilotfish.core.native.grpc_client import client_tls
from pilotfish.core.native.proxy import NativeProxy
from pilotfish.core.native.workers import Workers, run_worker
from pilotfish.core.native.xds_client import DELTA_METHOD, SDS_METHOD, SOTW_METHOD, XdsClient

LOG_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO,
              "warning": logging.WARNING, "error": logging.ERROR,
              "critical": logging.CRITICAL, "off": logging.CRITICAL}


def workload(boot: bootstrap.Bootstrap) -> Workload:
    """This proxy's side of Istio's metrics, from the node metadata the agent wrote."""
    metadata = json_format.MessageToDict(boot.node.metadata)
    labels = metadata.get("LABELS") or {}
    return Workload.from_labels(str(metadata.get("NAME") or boot.node.id),
                                str(metadata.get("NAMESPACE") or "default"),
                                {str(k): str(v) for k, v in labels.items()},
                                str(metadata.get("CLUSTER_ID") or "Kubernetes"))


async def serve(boot: bootstrap.Bootstrap, concurrency: int = 1,
                log_level: str = "warning") -> None:
    state = ConfigState()
    # ADS as the bootstrap asks (pilotfish agent --xds-mode); SDS to the agent is delta.
    session: AdsSession
    if boot.api_type == "GRPC":
        session, method = SotwClientSession(boot.node, state), SOTW_METHOD
    else:
        session, method = DeltaClientSession(boot.node, state), DELTA_METHOD
    xds_secrets = frozenset({boot.xds_tls.certificate, boot.xds_tls.trust}) \
        if boot.xds_tls else frozenset()
    secrets = SecretSession(boot.node, state, always=xds_secrets)
    sniffers = _sniffers()
    proxy = NativeProxy(state, sniffers=sniffers, reuse_port=concurrency > 1)
    pool = Workers(concurrency, state, log_level) if concurrency > 1 else None
    if pool is not None:
        await pool.start()
    sds = XdsClient(boot.sds_target, secrets, proxy.reconcile, SDS_METHOD)

    async def changed() -> None:
        # Listeners name certificates: subscribe to them before binding (warming).
        sds.send(secrets.want(state.secret_names(over_ads=False)))
        await proxy.reconcile()

    secrets_changed = anyio.Event()

    async def secrets_arrived() -> None:
        nonlocal secrets_changed
        secrets_changed.set()
        secrets_changed = anyio.Event()
        await proxy.reconcile()

    sds.on_change = secrets_arrived

    async def credentials() -> tuple[ssl.SSLContext, str]:
        """The workload certificate and mesh root, once SDS has them."""
        assert boot.xds_tls is not None
        while True:
            certificate = state.secrets.get(boot.xds_tls.certificate)
            trust = state.secrets.get(boot.xds_tls.trust)
            if certificate is not None and trust is not None:
                return client_tls(trust.ca, certificate.chain, certificate.key), \
                    boot.xds_tls.server_name
            await secrets_changed.wait()

    client = XdsClient(boot.xds_target, session, changed, method,
                       credentials=credentials if boot.xds_tls else None)
    sds.send(secrets.want(set()))
    if not boot.xds_target:  # a static bootstrap: its resources are the whole config
        for type_url, items in boot.static:
            state.apply(type_url, items, ())
        session.answered.update(WILDCARD)
    admin = Admin(proxy, session, boot.node.id, workload(boot), secrets, pool, boot.path)
    async with anyio.create_task_group() as tg:
        await tg.start(admin.server.serve, f"{boot.admin_host}:{boot.admin_port}")
        if boot.xds_target:
            tg.start_soon(client.run)
        else:
            await proxy.reconcile()
        if boot.sds_target:
            tg.start_soon(sds.run)

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    admin.quit.set()
                    return

        tg.start_soon(stop_on_signal)

        async def flush_logs() -> None:
            while True:
                await anyio.sleep(1)
                proxy.flush_logs()

        tg.start_soon(flush_logs)
        await admin.quit.wait()
        if pool is not None:
            await pool.stop()
        proxy.flush_logs()
        tg.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pilotfish-native",
                                     description="pilotfish's native proxy")
    parser.add_argument("-c", "--config-path", type=Path,
                        help="the bootstrap (Envoy's JSON, as the agent writes it)")
    parser.add_argument("--check", action="store_true",
                        help="load the bootstrap and exit (as Envoy's --mode validate)")
    parser.add_argument("-l", "--log-level", choices=sorted(LOG_LEVELS), default="warning")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="processes serving the listeners (SO_REUSEPORT), one "
                        "configuration (default %(default)s)")
    parser.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)  # see workers.py
    parser.add_argument("--worker-index", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error(f"--concurrency {args.concurrency}: at least 1")
    logging.basicConfig(level=LOG_LEVELS[args.log_level],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.worker_fd is not None:
        loop.run(run_worker(args.worker_fd, args.worker_index, _sniffers()))
        return 0
    if args.config_path is None:
        parser.error("the bootstrap is required: -c PATH")
    try:
        boot = bootstrap.load(args.config_path)
    except bootstrap.BootstrapError as exc:
        print(f"pilotfish-native: {exc}", file=sys.stderr)
        return 1
    if args.check and not boot.static:
        return 0
    if args.check:  # a static bootstrap's resources are checked as an update would be
        try:
            for type_url, items in boot.static:
                ConfigState().apply(type_url, items, ())
        except Rejected as exc:
            print(f"pilotfish-native: {args.config_path}: {exc}", file=sys.stderr)
            return 1
        return 0
    # Which build serves (the benchmarks record it); one left unused is worth a warning.
    hot_path = compiled.report()
    logging.getLogger("pilotfish.native").log(
        logging.WARNING if compiled.BUILD.unused else logging.INFO, "hot path %s: %s",
        "compiled" if hot_path["compiled"] else "pure Python", hot_path["build"])
    try:
        loop.run(serve(boot, args.concurrency, args.log_level))
    except Rejected as exc:
        print(f"pilotfish-native: {args.config_path}: {exc}", file=sys.stderr)
        return 1
    return 0


def _sniffers() -> list[Any]:
    return list(plugins.Plugins.from_config(meshconfig.load(None),
                                            groups=["sniffers"]).sniffers())


if __name__ == "__main__":
    raise SystemExit(main())
