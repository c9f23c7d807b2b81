"""Suite-wide settings: where the shared corpus lives, and deselecting it when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "istio"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if CORPUS.is_dir():
        return
    kept = [item for item in items if item.get_closest_marker("corpus") is None]
    dropped = len(items) - len(kept)
    if dropped:
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept
        print(f"\nnote: {CORPUS} is absent: {dropped} corpus tests deselected")


@pytest.fixture(scope="session")
def corpus() -> Path:
    return CORPUS
