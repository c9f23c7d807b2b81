"""``pilotfish agent request [--debug-port PORT] METHOD PATH [BODY]``: one HTTP request to
the local proxy or agent, as ``pilot-agent request`` makes it.

The injected sidecar's ``preStop`` hook runs ``pilotfish agent request --debug-port=15020
POST drain``: the agent's status port answers ``POST /drain`` by draining the proxy while
the apps finish (``status_server``). Without ``--debug-port`` the request goes to the
proxy's admin port, 15000, as pilot-agent's does. The answer's body is printed; exit
status 0 for a 2xx answer, 1 otherwise or when nothing answers, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

TIMEOUT = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--debug-port", type=int, default=15000,
        help="port on 127.0.0.1 (default: 15000, the proxy's admin; the agent's /drain and "
             "/quitquitquit are on its status port, 15020)")
    add("method", help="HTTP method, as in POST")
    add("path", help="path, with or without the leading slash, as in drain")
    add("body", nargs="?", default="", help="request body (default: none)")


def main(args: argparse.Namespace) -> int:
    if not 0 < args.debug_port < 65536:
        print(f"pilotfish agent request: error: --debug-port {args.debug_port}: expected a "
              "port from 1 to 65535", file=sys.stderr)
        return 2
    url = f"http://127.0.0.1:{args.debug_port}/{args.path.lstrip('/')}"
    request = urllib.request.Request(url, data=args.body.encode() or None,
                                     method=args.method.upper())
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            sys.stdout.write(response.read().decode("utf-8", "replace"))
            return 0
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", "replace").strip()
        print(f"pilotfish agent request: {args.method.upper()} {url}: HTTP {exc.code}"
              f"{': ' + body if body else ''}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        print(f"pilotfish agent request: {args.method.upper()} {url}: "
              f"{getattr(exc, 'reason', exc)}", file=sys.stderr)
    return 1
