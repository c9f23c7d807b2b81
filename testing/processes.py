"""Run pilotfish's own processes from tests: discovery, agents, demo apps.

Real processes, real ports: what a user runs is what the tests run. Each process logs to a
file; when something fails the log tail is in the error message.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs

T = TypeVar("T")


_HANDED_OUT: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, never the same twice in one test run (the kernel may
    hand a just-released ephemeral port out again, and tests take several at once)."""
    for _ in range(1000):
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port found")


def wait_until(check: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05,
               what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; its last exception explains a miss."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f": {last_error}" if last_error else ""
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


@attrs.frozen
class HttpResult:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def http(url: str, headers: Mapping[str, str] | None = None, method: str = "GET",
         data: bytes | None = None, timeout: float = 10.0) -> HttpResult:
    """One HTTP request; HTTP error statuses are results, not exceptions. Redirects are not
    followed (tests look at them)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return HttpResult(response.status, response.read(),
                              {k.lower(): v for k, v in response.headers.items()})
    except urllib.error.HTTPError as exc:
        return HttpResult(exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()})


@attrs.define
class Process:
    name: str
    argv: Sequence[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Process:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            list(self.argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
        )
        log.close()
        return self

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def rss_bytes(self) -> int:
        """The process' resident memory now (Linux)."""
        assert self.popen is not None
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"{self.name}: no VmRSS in /proc/{self.popen.pid}/status")

    def log(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_running(self) -> None:
        if not self.running:
            code = self.popen.returncode if self.popen else None
            raise RuntimeError(f"{self.name} exited ({code}); log tail:\n{self.log()}")

    def signal(self, sig: int) -> None:
        if self.running and self.popen is not None:
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL the whole process group if it lingers."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        with contextlib.suppress(ProcessLookupError):
            # Children that outlived their parent (e.g. a proxy) go too.
            os.killpg(self.popen.pid, signal.SIGKILL)
        return self.popen.returncode


def pilotfish(*args: str) -> list[str]:
    """argv for the pilotfish CLI in this interpreter."""
    return [sys.executable, "-m", "pilotfish.cli", *args]
