"""15012's socket folders left by a discovery killed with SIGKILL are removed at the next
start; a live process's folder is kept."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pilotfish.discovery.secure_xds import SOCKET_FOLDER_PREFIX, remove_stale_socket_folders


def test_stale_folders_go_live_ones_stay():
    base = Path(tempfile.gettempdir())
    dead = Path(tempfile.mkdtemp(prefix=f"{SOCKET_FOLDER_PREFIX}999999999-", dir=base))
    live = Path(tempfile.mkdtemp(prefix=f"{SOCKET_FOLDER_PREFIX}{os.getpid()}-", dir=base))
    (dead / "grpc.sock").write_text("")
    # what another local user could plant: a dangling link, a link to a folder, a file
    planted = [base / f"{SOCKET_FOLDER_PREFIX}1-dangling", base / f"{SOCKET_FOLDER_PREFIX}2-dir",
               base / f"{SOCKET_FOLDER_PREFIX}3-file"]
    planted[0].symlink_to(base / "nowhere-pilotfish")
    planted[1].symlink_to(live)
    planted[2].write_text("")
    try:
        remove_stale_socket_folders()
        assert not dead.exists()
        assert live.exists()
        assert all(p.is_symlink() or p.exists() for p in planted)  # left alone
    finally:
        for path in planted:
            path.unlink(missing_ok=True)
        for folder in (dead, live):
            if folder.exists():
                (folder / "grpc.sock").unlink(missing_ok=True)
                folder.rmdir()
