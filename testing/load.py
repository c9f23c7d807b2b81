"""Steady traffic for tests that must see zero failures (rotation, drain): one request at a
time, a new connection each, for a fixed time; prints a JSON summary when done.

    python -m pilotfish.testing.load --url http://server.ns:9080/x --seconds 300 --gap 0.05

Run it inside a pod (``pilotfish exec``) so it goes through that pod's sidecar. A request
fails when it raises or answers anything but 200; the first failures are kept with the time
they happened, so a test can say when and how things went wrong.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
import urllib.parse

KEPT_FAILURES = 20


def one(url: urllib.parse.SplitResult, timeout: float) -> str:
    """An empty string on success, else what went wrong."""
    connection = http.client.HTTPConnection(url.hostname or "", url.port or 80, timeout=timeout)
    try:
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        connection.request("GET", target)
        response = connection.getresponse()
        response.read()
        return "" if response.status == 200 else f"status {response.status}"
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()


def run(url: str, seconds: float, gap: float, timeout: float) -> dict[str, object]:
    target = urllib.parse.urlsplit(url)
    start = time.monotonic()
    requests = 0
    failures: list[str] = []
    failed = 0
    while time.monotonic() - start < seconds:
        problem = one(target, timeout)
        requests += 1
        if problem:
            failed += 1
            if len(failures) < KEPT_FAILURES:
                failures.append(f"{time.monotonic() - start:.1f}s: {problem}")
        time.sleep(gap)
    return {"requests": requests, "failed": failed, "failures": failures,
            "seconds": round(time.monotonic() - start, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--gap", type=float, default=0.05, help="pause between requests")
    parser.add_argument("--timeout", type=float, default=5.0, help="per request")
    args = parser.parse_args()
    print(json.dumps(run(args.url, args.seconds, args.gap, args.timeout)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
