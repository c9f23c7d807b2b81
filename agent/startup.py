"""Start an app only once its sidecar is ready: Istio's holdApplicationUntilProxyStarts.

Istio does this with a ``postStart`` hook on the proxy container running
``pilot-agent wait``, which polls the readiness endpoint (15021) until it answers 200;
the kubelet starts the next container only after the hook returns. pilotfish's node
does the same with ``pilotfish agent wait`` (or ``wait_ready`` in-process), and
``hold_application`` tells it whether a pod asks for it.

``pilotfish agent wait`` polls ``http://HOST:HEALTH_PORT/healthz/ready`` every
``--period`` (500 ms, as pilot-agent), each request bounded by ``--request-timeout``,
and gives up after ``--timeout`` (60 s). Exit status: 0 ready, 1 not ready in time (the
message carries the last answer, which names the reason), 2 bad flags.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

from pilotfish.core import meshconfig
from pilotfish.core.meshconfig import PROXY_CONFIG_ANNOTATION, proxy_config


def hold_application(mesh: meshconfig.MeshSettings, annotations: Mapping[str, str]) -> bool:
    """Whether the app waits for the proxy: the pod's annotation, else the mesh default
    (``mesh.defaultConfig.holdApplicationUntilProxyStarts``). ValueError names a bad
    annotation."""
    value = proxy_config(annotations).get("holdApplicationUntilProxyStarts")
    if value is None:
        return mesh.hold_application_until_proxy_starts
    if not isinstance(value, bool):
        raise ValueError(f"annotation {PROXY_CONFIG_ANNOTATION}: "
                         f"holdApplicationUntilProxyStarts: expected true or false, got {value!r}")
    return value


def probe(url: str, timeout: float) -> tuple[bool, str]:
    """One readiness request → (ready, what happened, in words)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", "replace").strip()
        return False, f"HTTP {exc.code}: {body}" if body else f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ConnectionRefusedError):
            return False, "connection refused (is the agent running, with this --health-port?)"
        return False, str(reason)


def wait_ready(url: str, timeout: float, period: float = 0.5, request_timeout: float = 1.0,
               *, check: Callable[[str, float], tuple[bool, str]] = probe,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> tuple[bool, str]:
    """Poll until ready or ``timeout`` passes → (ready, the last answer)."""
    deadline = clock() + timeout
    while True:
        ready, answer = check(url, request_timeout)
        if ready or clock() + period > deadline:
            return ready, answer
        sleep(period)


def add_wait_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--health-port", type=int, default=15021,
        help="the agent's health port (default: 15021)")
    add("--host", default="127.0.0.1", help="where the agent is (default: 127.0.0.1)")
    add("--url", help="poll this URL instead of http://HOST:HEALTH_PORT/healthz/ready")
    add("--timeout", default="60s", help="give up after this long (default: 60s)")
    add("--period", default="500ms", help="time between requests (default: 500ms)")
    add("--request-timeout", default="1s", help="bound on each request (default: 1s)")


def wait_main(args: argparse.Namespace) -> int:
    try:
        timeout = meshconfig.parse_duration(args.timeout, "--timeout")
        period = meshconfig.parse_duration(args.period, "--period")
        request_timeout = meshconfig.parse_duration(args.request_timeout, "--request-timeout")
    except ValueError as exc:
        print(f"pilotfish agent wait: error: {exc}", file=sys.stderr)
        return 2
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = args.url or f"http://{host}:{args.health_port}/healthz/ready"
    ready, answer = wait_ready(url, timeout, period, request_timeout)
    if ready:
        print(f"the proxy is ready ({url})")
        return 0
    print(f"pilotfish agent wait: error: the proxy was not ready within {timeout:g}s; "
          f"last answer from {url}: {answer}", file=sys.stderr)
    return 1
