"""The generated modules shipped beside each proto set match their protos
(scripts/gen_protos.py: the CA's API, ztunnel's Workload Discovery types)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("folder", ["core/security", "core/ambient"])
def test_generated_modules_are_current(folder: str) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"),
                             "--check", folder], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
