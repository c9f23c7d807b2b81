"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotfish.testing.mesh import LocalMesh


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    """A local mesh in the test's own folder, stopped after the test (a module may keep
    one for all its tests with a ``mesh`` fixture of its own)."""
    local = LocalMesh(tmp_path)
    try:
        yield local
    finally:
        local.stop()
