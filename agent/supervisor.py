"""Run one proxy process: relay signals to it, drain and stop it, report how it ended.

Shutdown follows pilot-agent. On SIGTERM or SIGINT the proxy is asked to drain
gracefully (the proxy admin's ``drain()``: inbound listeners for a sidecar, all of them
for a router), then the supervisor waits the termination drain duration (Istio's
``terminationDrainDuration``, 5s by default) so in-flight requests finish while new ones
go elsewhere, then stops the proxy. A second SIGTERM/SIGINT cuts the wait short.
Unlike pilot-agent, which SIGKILLs Envoy at that point, the proxy gets SIGTERM (Envoy
then exits cleanly and flushes its logs) and SIGKILL only if it ignores that.
SIGHUP and SIGUSR1 (Envoy: reopen access logs) are passed on unchanged.

The proxy never outlives the agent. It starts under ``setpriv --pdeathsig SIGTERM``, so the
kernel stops it when the agent dies however it dies (``kill -9`` included) and its ports
are free for the next agent. And its pid is recorded in the config dir (``proxy.pid``): an
agent starting where a crashed one left a proxy running stops that proxy first.

The status server asks for the same things over HTTP: ``request_stop()`` is what
``/quitquitquit`` calls (the same sequence as SIGTERM) and ``drain()`` what ``/drain``
calls (drain now, keep running). ``draining`` turns readiness off for both.

A backend may have no process to run (``ProxyBackend.command`` gives None: proxyless gRPC,
where the app's gRPC library is the proxy and the agent only serves it). The supervisor
then holds the agent until the first stop request or signal and returns 0: there are no
listeners to drain, so the termination drain is not waited.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from anyio.abc import Process

from pilotfish.core.proxy_backend import ProxyAdmin, ProxyBackend, ProxyError, ProxyOptions

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
RELAYED_SIGNALS = (signal.SIGHUP, signal.SIGUSR1)
KILL_AFTER = 10.0  # seconds a proxy gets to exit after SIGTERM before SIGKILL
PID_FILE = "proxy.pid"


def with_parent_death_signal(argv: list[str]) -> list[str]:
    """``argv`` run so that the kernel sends it SIGTERM when its parent (the agent) dies."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:  # util-linux is on every Debian; say so if it is not here
        log.warning("setpriv not found: the proxy would outlive a killed agent")
        return argv
    return [setpriv, "--pdeathsig", "SIGTERM", "--", *argv]


def stop_stale(config_dir: Path, bootstrap: Path) -> int | None:
    """Stop a proxy a crashed agent left running on this config dir; its pid, if it did.

    The pid file alone proves nothing (pids are reused): the process must still be running
    on this very bootstrap file.
    """
    pid_file = config_dir / PID_FILE
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        pid_file.unlink(missing_ok=True)
        return None
    if os.fsencode(str(bootstrap)) not in argv:
        pid_file.unlink(missing_ok=True)
        return None
    log.warning("stopping proxy %d, left running by an agent that did not stop it", pid)
    for sig, wait in ((signal.SIGTERM, KILL_AFTER), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists() or _zombie(pid):
                pid_file.unlink(missing_ok=True)
                return pid
            time.sleep(0.05)
    raise ProxyError(f"proxy {pid} (from {pid_file}) would not stop")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def exit_status(returncode: int, stop_requested: bool) -> int:
    """The agent's exit status for a proxy that ended with ``returncode`` (Popen style).

    The proxy's own status; 128+N (the shell's convention) if signal N killed it; 0 if
    the agent asked it to stop and it did, even by dying of that SIGTERM.
    """
    if stop_requested and returncode in (0, -signal.SIGTERM):
        return 0
    if returncode < 0:
        return 128 - returncode
    return returncode


class Supervisor:
    """Runs one proxy process, relays signals to it and stops it on request."""

    def __init__(self, backend: ProxyBackend, options: ProxyOptions, path: Path,
                 termination_drain: float, admin: ProxyAdmin | None = None) -> None:
        self.backend, self.options, self.path = backend, options, path
        self.admin = admin if admin is not None else backend.admin(options)
        self.termination_drain = termination_drain
        self.stop_requested = False
        self.draining = False
        self._stop_asked = anyio.Event()
        self._hurry = anyio.Event()

    def request_stop(self) -> None:
        """Drain, wait, stop the proxy (as on SIGTERM); a second request cuts the wait."""
        if self.stop_requested:
            self._hurry.set()
            return
        self.stop_requested = True
        self._stop_asked.set()

    async def drain(self) -> None:
        """Start a graceful drain now and keep running; ProxyError if the proxy refused."""
        self.draining = True
        await self.admin.drain()

    async def run(self) -> int:
        command = self.backend.command(self.options, self.path)
        if command is None:
            return await self._hold()
        await anyio.to_thread.run_sync(stop_stale, self.options.config_dir, self.path)
        argv = with_parent_death_signal(command)
        # Receive signals before the child exists: a SIGTERM in between must not kill
        # the agent and leave the proxy running.
        with anyio.open_signal_receiver(*STOP_SIGNALS, *RELAYED_SIGNALS) as signals:
            log.info("starting %s: %s", self.backend.name, shlex.join(argv))
            try:
                # Own session: a terminal's Ctrl-C reaches the agent only, which then
                # drains the proxy instead of the proxy dying mid-request.
                process = await anyio.open_process(
                    argv, stdin=subprocess.DEVNULL, stdout=None, stderr=None,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ProxyError(f"{argv[0]}: cannot start {self.backend.name}: "
                                 f"{exc.strerror}") from exc
            pid_file = self.options.config_dir / PID_FILE
            with contextlib.suppress(OSError):
                pid_file.write_text(f"{process.pid}\n")
            async with process:
                try:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._handle_signals, signals, process)
                        tg.start_soon(self._shutdown_when_asked, process)
                        returncode = await process.wait()
                        tg.cancel_scope.cancel()
                finally:
                    # Whatever ended the agent (an error, a cancel), the proxy goes too.
                    with anyio.CancelScope(shield=True):
                        await self._stop(process)
                    pid_file.unlink(missing_ok=True)
        if returncode != 0 and not self.stop_requested:
            log.error("%s exited with status %s", self.backend.name, returncode)
        return exit_status(returncode, self.stop_requested)

    async def _hold(self) -> int:
        """Nothing to run: wait for SIGTERM/SIGINT or ``request_stop()``, then exit 0."""
        with anyio.open_signal_receiver(*STOP_SIGNALS, *RELAYED_SIGNALS) as signals:
            log.info("%s runs no process; serving until stopped", self.backend.name)
            async with anyio.create_task_group() as tg:
                async def on_signals() -> None:
                    async for signum in signals:
                        if signum in STOP_SIGNALS:  # nothing to pass SIGHUP/SIGUSR1 to
                            self.request_stop()

                tg.start_soon(on_signals)
                await self._stop_asked.wait()
                self.draining = True
                tg.cancel_scope.cancel()
        log.info("stopped")
        return 0

    async def _handle_signals(self, signals: AsyncIterator[signal.Signals],
                              process: Process) -> None:
        async for signum in signals:
            if signum in RELAYED_SIGNALS:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)
            else:
                self.request_stop()

    async def _shutdown_when_asked(self, process: Process) -> None:
        await self._stop_asked.wait()
        log.info("draining %s for %ss", self.backend.name, self.termination_drain)
        try:
            if not self.draining:  # /drain may have started it already
                await self.drain()
        except ProxyError as exc:  # the wait below still lets open requests finish
            log.warning("could not drain %s: %s", self.backend.name, exc)
        with anyio.move_on_after(self.termination_drain):
            await self._hurry.wait()
        await self._stop(process)

    async def _stop(self, process: Process) -> None:
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        with anyio.move_on_after(KILL_AFTER):
            await process.wait()
            return
        log.warning("%s ignored SIGTERM for %ss; killing it", self.backend.name, KILL_AFTER)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
