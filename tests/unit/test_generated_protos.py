"""The generated modules shipped beside each proto set match their protos
(scripts/gen_protos.py: the CA's API, ztunnel's Workload Discovery types and ZDS, ztunnel's
slim delta xDS messages)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("folder", ["core/security", "core/ambient", "core/ztunnel"])
def test_generated_modules_are_current(folder: str) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"),
                             "--check", folder], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_covers_zds() -> None:
    import runpy

    sets = runpy.run_path(str(ROOT / "scripts" / "gen_protos.py"))["SETS"]
    outputs = {f"{s.folder}/{name}" for s in sets for name in s.outputs}
    assert {"core/ambient/zds_pb2.py", "core/ambient/zds_pb2.pyi"} <= outputs


@pytest.mark.corpus
def test_zds_proto_is_ztunnels_unchanged(corpus: Path) -> None:
    shipped = (ROOT / "core" / "ambient" / "zds.proto").read_bytes()
    assert shipped == (corpus / "ambient" / "proto" / "zds.proto").read_bytes()
