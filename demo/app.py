"""The demo mesh's workloads: one small HTTP app that plays any bookinfo service.

Every response is JSON saying who answered (service, version, pod) and what arrived
(method, path, headers), which is what routing tests and curious users want to see.
A few paths make the app misbehave on purpose:

* ``.../status/CODE`` answers with that status;
* ``.../delay/SECONDS`` waits before answering;
* ``.../flaky/KEY`` fails with 503 the first time KEY is seen, then succeeds (retries);
* ``/_requests`` lists the requests this app received (mirroring shows up here).

A service may also call others (``--calls reviews=http://reviews:9080``): the product page
gathers details and reviews, reviews gathers ratings, as in Istio's bookinfo.

Run: ``python -m pilotfish.demo.app --serve reviews:v1@127.0.10.3:9080 [--serve ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request
from collections import deque
from typing import Any

import anyio
import attrs

from pilotfish.core.http import HttpServer, Request, Response

# Headers a service passes on when it calls the next one (Istio's trace/user propagation).
PROPAGATED = ("x-request-id", "end-user", "x-b3-traceid", "x-b3-spanid", "traceparent",
              "user-agent")


@attrs.define
class App:
    service: str
    version: str
    pod: str
    calls: dict[str, str] = attrs.field(factory=dict)
    seen: deque[dict[str, Any]] = attrs.field(factory=lambda: deque(maxlen=1000))
    flaky: set[str] = attrs.field(factory=set)

    def describe(self, request: Request) -> dict[str, Any]:
        return {
            "service": self.service,
            "version": self.version,
            "pod": self.pod,
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "host": request.headers.get("host", ""),
            "peer": request.peer_host,  # 127.0.0.6: it came through a sidecar
            "headers": dict(request.headers),
        }

    async def handle(self, request: Request) -> Response:
        info = self.describe(request)
        if request.path != "/_requests":
            self.seen.append({"path": request.path, "host": info["host"],
                              "method": request.method})
        parts = request.path.strip("/").split("/")
        if parts[0] == "_requests":
            return Response.json(list(self.seen))
        if request.path == "/metrics":  # Prometheus text, for merged-metrics demos
            return Response(200, (
                "# TYPE demo_requests_total counter\n"
                f'demo_requests_total{{service="{self.service}",version="{self.version}"}} '
                f"{len(self.seen)}\n").encode(), "text/plain; version=0.0.4")
        # The behaviour words may come anywhere in the path (/details/flaky/abc), so that
        # routes with a prefix reach them too.
        arg = {word: parts[i + 1] for i, word in enumerate(parts[:-1])
               if word in ("status", "delay", "flaky")}
        if arg.get("delay"):
            await anyio.sleep(min(float(arg["delay"]), 30.0))
        if arg.get("flaky") and arg["flaky"] not in self.flaky:
            self.flaky.add(arg["flaky"])
            return Response.json({**info, "error": "failing once on purpose"}, 503)
        if arg.get("status", "").isdigit():
            return Response.json(info, int(arg["status"]))
        if self.calls:
            info["calls"] = {name: await self._call(url, request)
                             for name, url in self.calls.items()}
        return Response.json(info)

    async def _call(self, url: str, request: Request) -> Any:
        headers = {k: v for k, v in request.headers.items() if k in PROPAGATED}

        def fetch() -> Any:
            req = urllib.request.Request(url, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=5) as response:
                    return json.loads(response.read())
            except Exception as exc:  # a failing dependency is part of the answer
                return {"error": str(exc)}

        return await anyio.to_thread.run_sync(fetch)


def first_call(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return f"ok {response.status}"
    except Exception as exc:
        return f"failed {exc}"


def parse_serve(text: str) -> tuple[str, str, str, int]:
    """``name:version@host:port`` → parts, with a clear error."""
    try:
        who, _, where = text.partition("@")
        name, _, version = who.partition(":")
        host, _, port = where.rpartition(":")
        if not name or not host or not port.isdigit():
            raise ValueError
        return name, version or "v1", host, int(port)
    except ValueError:
        raise SystemExit(f"--serve {text!r}: expected NAME:VERSION@HOST:PORT") from None


async def serve(apps: list[tuple[App, str]]) -> None:
    async with anyio.create_task_group() as tg:
        for app, address in apps:
            await tg.start(HttpServer({}, fallback=app.handle).serve, address)
        print("serving " + ", ".join(f"{a.service}:{a.version}@{addr}" for a, addr in apps),
              flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pilotfish.demo.app", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="append", required=True,
                        metavar="NAME:VERSION@HOST:PORT", help="an app instance (repeatable)")
    parser.add_argument("--calls", action="append", default=[], metavar="NAME=URL",
                        help="a service this app calls on every request (repeatable)")
    parser.add_argument("--pod", default=os.environ.get("POD_NAME", ""))
    parser.add_argument("--first-call", metavar="URL",
                        help="request URL once at start-up and print the outcome (shows "
                             "whether the mesh was ready when the app started)")
    args = parser.parse_args(argv)
    calls = dict(c.split("=", 1) for c in args.calls)
    apps = []
    for spec in args.serve:
        name, version, host, port = parse_serve(spec)
        pod = args.pod or f"{name}-{version}"
        apps.append((App(name, version, pod, calls), f"{host}:{port}"))
    if args.first_call:
        print(f"first call: {first_call(args.first_call)}", flush=True)
    try:
        anyio.run(serve, apps)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"demo app: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
