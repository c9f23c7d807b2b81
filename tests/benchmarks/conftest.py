"""The benchmarks share their load and process helpers as plain modules of this folder
(``wrk_runs``, ``process_use``), as the e2e tests share theirs (``pythonpath`` in
pyproject.toml); under ``--import-mode=importlib`` the folder has to be on the path."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
