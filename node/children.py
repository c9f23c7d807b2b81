"""Child processes owned by a task group: started, watched, and stopped on cancellation.

``run_child`` is meant for ``task_group.start``: it returns once the process exists, keeps
running until the process exits (an unexpected exit raises ``ChildExited``), and when the
surrounding scope is cancelled it sends SIGTERM, waits, then SIGKILLs — all shielded, so
nothing outlives its owner.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread

from pilotfish.core.proxy_backend import ProxyAdmin, ProxyError
from pilotfish.node.netns import NodeError

STOP_GRACE = 10.0


class ChildExited(RuntimeError):
    def __init__(self, name: str, returncode: int, log_path: Path | None) -> None:
        tail = ""
        if log_path is not None and log_path.exists():
            lines = log_path.read_text(errors="replace").splitlines()[-15:]
            tail = "\n  " + "\n  ".join(lines) if lines else ""
        super().__init__(f"{name} exited with status {returncode}{tail}")
        self.name = name
        self.returncode = returncode


async def run_child(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    cwd: Path | None = None,
    task_status: anyio.abc.TaskStatus[anyio.abc.Process] = anyio.TASK_STATUS_IGNORED,
) -> None:
    log_file = log_path.open("ab") if log_path is not None else subprocess.DEVNULL
    try:
        process = await anyio.open_process(
            list(argv), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
        )
    finally:
        if log_path is not None and not isinstance(log_file, int):
            log_file.close()
    task_status.started(process)
    try:
        returncode = await process.wait()
    finally:
        with anyio.CancelScope(shield=True):
            await stop(process)
    raise ChildExited(name, returncode, log_path)


async def stop(process: anyio.abc.Process, grace: float = STOP_GRACE) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        with anyio.move_on_after(grace):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever the child started goes too


async def wait_http(url: str, timeout: float, what: str) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except Exception:
            return False

    while not await anyio.to_thread.run_sync(probe):
        if time.monotonic() > deadline:
            raise NodeError(f"timed out after {timeout:.0f}s waiting for {what} ({url})")
        await anyio.sleep(0.1)


async def wait_ready(admin: ProxyAdmin, timeout: float, what: str) -> None:
    """Until a proxy's backend says it serves with a full configuration; NodeError with its
    last answer once ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = await admin.status(full=True)
            why = status.serving or status.config
        except ProxyError as exc:
            why = str(exc)
        if not why:
            return
        if time.monotonic() > deadline:
            raise NodeError(f"timed out after {timeout:.0f}s waiting for {what}: {why}")
        await anyio.sleep(0.1)
