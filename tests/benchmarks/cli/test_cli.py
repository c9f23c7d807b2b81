"""Benchmark: how fast the command line answers (``pilotfish --help``, ``pilotfish status``).

Every command's module is imported only when that command runs (``cli/main.py``), so the
commands a user types most often cost little more than starting Python. Measured as wall
time of the whole process, median of 10, beside the interpreter's own start-up
(``python -c pass``) in the same run. ``status`` reads a recorded node state with eight pods
(no node needs to run). Target (issue #8): ≤ 0.3 s each.

The regular suite checks the property behind the numbers instead of timing it: ``--help``,
``status``, ``exec`` and ``proxy-status`` import neither the control plane, nor Envoy's
protobufs, nor gRPC, nor anyio.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pilotfish.node.state import NodeState, PodState
from pilotfish.testing.processes import pilotfish

ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("pilotfish.discovery", "pilotfish.translators", "pilotfish.core.xds.server",
         "envoy.", "grpc", "cryptography", "celpy", "anyio")


def node_state(folder: Path) -> Path:
    state = NodeState(state_dir=folder, up_pid=1, bridge="pf0", subnet="10.250.0.0/24",
                      xds_address="10.250.0.1:15010", debug_address="127.0.0.1:15014")
    for index in range(8):
        pod = PodState(name=f"pod-{index}", namespace="default", netns=f"pf-pod-{index}",
                       container_id=f"c{index}", ip=f"10.250.0.{index + 2}",
                       sidecar=index % 2 == 0, status="running")
        state.pods[pod.key] = pod
    state.save()
    return folder


def commands(state: Path) -> dict[str, list[str]]:
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "pilotfish --help": pilotfish("--help"),
        "pilotfish status": pilotfish("status", "--state-dir", str(state)),
    }


def imported(argv: list[str]) -> set[str]:
    done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True,
                          text=True)
    return {line.split("|")[-1].strip() for line in done.stderr.splitlines()
            if line.startswith("import time:")}


@pytest.mark.parametrize(("name", "args", "says"), [
    ("--help", [], "COMMAND"),
    ("status", ["status", "--state-dir", "STATE"], "pod-0"),
    ("exec", ["exec", "--state-dir", "STATE", "nosuch", "--", "true"], "no pod 'nosuch'"),
    ("proxy-status", ["proxy-status", "--discovery-address", "127.0.0.1:1"], "cannot reach"),
])
def test_quick_commands_import_only_what_they_use(tmp_path: Path, name: str, args: list[str],
                                                  says: str) -> None:
    state = str(node_state(tmp_path))
    argv = pilotfish(*(state if arg == "STATE" else arg for arg in args or ["--help"]))
    done = subprocess.run(argv, capture_output=True, text=True)
    assert says in done.stdout + done.stderr
    heavy = sorted(m for m in imported(argv) if m.startswith(HEAVY))
    assert heavy == [], f"pilotfish {name} imports {heavy[:10]}"


def wall(argv: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False)
        out.append(time.perf_counter() - started)
    return out


@pytest.mark.benchmark
def test_cli_benchmark(tmp_path: Path) -> None:
    state = node_state(tmp_path)
    for argv in commands(state).values():  # warm the page cache and .pyc files
        wall(argv, 2)
    result: dict[str, object] = {"machine": {"cpus": os.cpu_count()}, "runs": 10,
                                 "target_seconds": 0.3, "commands": {}}
    for name, argv in commands(state).items():
        times = wall(argv, 10)
        result["commands"][name] = {  # type: ignore[index]
            "median_seconds": round(statistics.median(times), 4),
            "min_seconds": round(min(times), 4), "max_seconds": round(max(times), 4)}
    out = ROOT / "results" / "cli.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    for name in ("pilotfish --help", "pilotfish status"):
        assert result["commands"][name]["median_seconds"] <= 0.3, result  # type: ignore[index]
