"""The documented commands work as written: every shell command of the README's tour, of
docs/tutorial.md, and of the tour ``pilotfish up`` prints, run with bash against the
bundled demo node brought up with its defaults (as ``./dev mesh`` does), from the checkout;
then, with the node gone, the README's pieces run by hand (discovery and an agent left
running, the one-shot commands beside them).

Commands that set the machine up (``./dev``, ``git clone``) are left out: the suite runs
after them. ``pilotfish down`` is run last, and must leave nothing. Each other command must
exit 0 and print something (a summary on stderr counts); a pipeline counts by its last
command, as bash does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotfish.node.state import DEFAULT_STATE_DIR
from pilotfish.testing.processes import Process, http, wait_until

pytestmark = [pytest.mark.envoy, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
SETUP = re.compile(r"^(\./dev\b|git clone\b|cd pilotfish\b)")
DOWN = "pilotfish down"


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M)


def commands(block: str) -> list[str]:
    """One command per line, with backslash continuations joined."""
    out: list[str] = []
    pending = ""
    for line in block.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line and not line.startswith("#"):
            out.append(line)
    return out


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def documented() -> list[tuple[str, str]]:
    """(where, command) for every tour and tutorial command, in reading order."""
    readme = section((ROOT / "README.md").read_text(), "A short tour")
    tutorial = (ROOT / "docs" / "tutorial.md").read_text()
    found = [("README.md", c) for b in sh_blocks(readme) for c in commands(b)]
    found += [("docs/tutorial.md", c) for b in sh_blocks(tutorial) for c in commands(b)]
    return [(where, c) for where, c in found if not SETUP.match(c)]


def printed_tour(log: str) -> list[str]:
    """The commands ``up`` prints under "Try, ..." and "and from a pod ..."."""
    lines = log.split("The node is up", 1)[1].splitlines()
    return [line.split("   #")[0].split("       #")[0].strip() for line in lines
            if re.match(r"^  (curl|for|pilotfish) ", line)]


def run(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True,
                          timeout=90, env={**os.environ, "PATH": os.environ["PATH"]})


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    assert os.geteuid() == 0, "the e2e tests run as root (CI does)"
    assert shutil.which("pilotfish"), (
        "pilotfish is not on the PATH: ./dev setup links it into /usr/local/bin")
    existing = subprocess.run(["pilotfish", "status", "-o", "json"], capture_output=True,
                              text=True)
    if existing.returncode == 0 and json.loads(existing.stdout).get("up"):
        pytest.fail(f"a node is already up in {DEFAULT_STATE_DIR}: the documented commands "
                    "need the demo node with its defaults; stop it with pilotfish down")
    log = tmp_path_factory.mktemp("docs") / "up.log"
    # As ./dev mesh runs it: the bundled demo, every default.
    up = Process("up", ["pilotfish", "up"], log).start()

    def ready() -> bool:
        up.check_running()
        status = subprocess.run(["pilotfish", "status", "-o", "json"], capture_output=True,
                                text=True)
        phase = json.loads(status.stdout).get("phase") if status.returncode == 0 else None
        assert phase != "not-ready", status.stdout
        return phase == "ready"

    try:
        wait_until(ready, 120, interval=0.3, what="the demo node to be ready")
        yield up
    finally:
        up.stop()
        run(DOWN)


def test_the_documented_commands_work_as_written(demo: Process) -> None:
    tour = printed_tour(demo.log(lines=200))
    assert len(tour) >= 4, demo.log(lines=200)
    todo = [*documented(), *(("pilotfish up's tour", c) for c in tour)]
    assert any(c.startswith(DOWN) for _, c in todo)
    failures = []
    for where, command in todo:
        if command.startswith(DOWN):
            continue  # last, below
        result = run(command)
        if result.returncode != 0 or not (result.stdout + result.stderr).strip():
            failures.append(f"{where}: {command}\n  exit {result.returncode}; stdout "
                            f"{result.stdout[-300:]!r}; stderr {result.stderr[-500:]!r}")
    assert not failures, "\n".join(failures)


def test_zz_down_as_written_removes_the_node(demo: Process) -> None:
    demo.stop()  # Ctrl-C's job; down must still work (and clean up after a crash too)
    result = run(DOWN)
    assert result.returncode == 0, result.stderr
    assert not DEFAULT_STATE_DIR.joinpath("state.json").exists()
    assert "pf0" not in subprocess.run(["ip", "-o", "link"], capture_output=True,
                                       text=True).stdout


def test_commands_are_found_in_the_docs() -> None:
    found = documented()
    assert {w for w, _ in found} == {"README.md", "docs/tutorial.md"}
    assert ("docs/tutorial.md", "pilotfish status") in found
    assert all(not SETUP.match(c) for _, c in found)


def test_zzz_the_pieces_run_by_hand(tmp_path: Path) -> None:
    (block,) = sh_blocks(section((ROOT / "README.md").read_text(), "The pieces, run by hand"))
    daemons, once = [], []
    for command in commands(block):
        (daemons if re.match(r"pilotfish (discovery|agent) ", command) else once).append(
            command)
    assert len(daemons) == 2 and once
    running = [Process(command.split()[1], ["bash", "-c", f"exec {command}"],
                       tmp_path / f"{command.split()[1]}.log").start(cwd=ROOT)
               for command in daemons]
    try:
        for process, url in zip(running, ("http://127.0.0.1:15014/ready",
                                          "http://127.0.0.1:15021/healthz/ready"),
                                strict=True):
            def answers(process: Process = process, url: str = url) -> bool:
                process.check_running()
                return http(url, timeout=1).status == 200
            wait_until(answers, 60, interval=0.2, what=f"{process.name} ({url})")
        for command in once:
            result = run(command)
            assert result.returncode == 0 and (result.stdout + result.stderr).strip(), (
                command, result.stderr)
    finally:
        for process in reversed(running):
            process.stop()
