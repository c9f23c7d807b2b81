"""Before and after for the native router's CPU per request: two native routers side by
side, one on the worktree's code and one on an earlier commit's, alternating rounds.

Run it from the worktree: ``.venv/bin/python tests/benchmarks/dataplane/native_before_after.py
--before COMMIT``. The earlier commit is exported (``git archive``) into a temporary folder
laid out as the installed package (``pilotfish/core`` ... as in ``pyproject.toml``'s
package-dir), and that router's agent starts with ``PYTHONPATH`` pointing at it, so it and
the native proxy it starts run the old code; discovery, the backend and wrk are shared.
Set up as the data-plane benchmark (``test_dataplane.py``): the backend (Envoy, 1 KiB
direct response) and wrk (one thread, 32 keep-alive connections) on CPU 0, the routers on
CPU 1. Each round runs wrk as fast as the router answers, or paced with ``--rate`` (about
a fixed number of requests a round, the steadier figure on a shared machine), and reads
each router's process tree's CPU (utime + stime from /proc) before and after: microseconds
of CPU per request, the figure compared. A machine others share moves both sides'
figures by as much as a fifth from one minute to the next; the rounds alternate so that
both see the same spells.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path[:0] = [str(HERE.parent), str(HERE)]

import process_use  # noqa: E402
import wrk_runs  # noqa: E402
from test_dataplane import BACKEND_IP, backend_config, bench_config  # noqa: E402

from pilotfish.plugins.envoy.backend import envoy_binary  # noqa: E402
from pilotfish.testing.mesh import LocalMesh  # noqa: E402
from pilotfish.testing.processes import Process, free_port, http, wait_until  # noqa: E402


def export(commit: str, into: Path) -> Path:
    """``commit``'s tree as an importable ``pilotfish`` package under ``into``."""
    source = into / "source"
    source.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    package = into / "path" / "pilotfish"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    config = tomllib.loads((source / "pyproject.toml").read_text())
    for name, folder in config["tool"]["setuptools"]["package-dir"].items():
        (package / name.split(".", 1)[1]).symlink_to(source / folder)
    return into / "path"


def measure(before: Path, seconds: int, rounds: int, rate: int, tmp: Path) -> dict[str, Any]:
    backend_port, backend_admin = free_port(), free_port()
    (tmp / "backend.json").write_text(json.dumps(backend_config(backend_port, backend_admin)))
    backend = Process("backend", [str(envoy_binary()), "-c", str(tmp / "backend.json"),
                                  "--concurrency", "1", "--disable-hot-restart",
                                  "-l", "error"], tmp / "backend.log").start()
    ports = {"before": free_port(), "after": free_port()}
    rounds_by_side: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    hot_paths: dict[str, Any] = {}
    try:
        wait_until(lambda: http(f"http://{BACKEND_IP}:{backend_port}/").status == 200, 30,
                   what="the backend")
        assert backend.popen is not None
        process_use.pin(process_use.tree(backend.popen.pid), "0")
        with LocalMesh(tmp / "mesh") as mesh:
            mesh.write("bench.yaml", bench_config(backend_port, ports))
            mesh.start_discovery()
            pids = {}
            for side, port in ports.items():
                saved = os.environ.get("PYTHONPATH")
                if side == "before":
                    os.environ["PYTHONPATH"] = str(before)
                try:
                    router = mesh.start_proxy(f"gw-{side}", "default", labels={"router": side},
                                              extra=["--proxy", "native", "--concurrency", "1"])
                finally:
                    os.environ.pop("PYTHONPATH", None)
                    if saved is not None:
                        os.environ["PYTHONPATH"] = saved
                wait_until(lambda p=port: http(f"http://127.0.0.1:{p}/").status == 200, 30,
                           what=f"the {side} router")
                assert router.process.popen is not None
                pids[side] = router.process.popen.pid
                # whether it runs compiled (mypyc) or as Python: absent on older commits
                hot_paths[side] = http(f"{router.admin}/server_info").json().get("hot_path")
                print(side, "hot path:", hot_paths[side], flush=True)
                process_use.pin(process_use.tree(pids[side]), "1")
                wrk_runs.run(f"http://127.0.0.1:{port}/", 1)  # warm up
            for _ in range(rounds):
                for side, port in ports.items():
                    tree = process_use.tree(pids[side])
                    start = process_use.cpu_seconds(tree)
                    run = wrk_runs.run(f"http://127.0.0.1:{port}/", seconds, rate)
                    used = process_use.cpu_seconds(tree) - start
                    run["cpu_us_per_request"] = round(used / max(run["requests"], 1) * 1e6, 1)
                    rounds_by_side[side].append(run)
                    print(side, run["requests"], "requests,", run["cpu_us_per_request"],
                          "µs of CPU each", flush=True)
                    time.sleep(0.3)
    finally:
        backend.stop()

    def median(side: str) -> float:
        values = sorted(r["cpu_us_per_request"] for r in rounds_by_side[side])
        return values[len(values) // 2]

    return {"rounds": rounds_by_side, "seconds_per_run": seconds, "rate": rate,
            "hot_path": hot_paths,
            "median_cpu_us_per_request": {side: median(side) for side in rounds_by_side},
            "after_over_before": round(median("after") / median("before"), 3),
            "machine": {"cpus": os.cpu_count(), "load_average": process_use.load_average()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the earlier commit")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--rate", type=int, default=0, help="paced to this many req/s")
    parser.add_argument("--out", type=Path, help="the results as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="native-before-after-") as folder:
        tmp = Path(folder)
        before = export(args.before, tmp)
        result = measure(before, args.seconds, args.rounds, args.rate, tmp)
    result["before"] = args.before
    print(json.dumps(result["median_cpu_us_per_request"]), result["after_over_before"])
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
