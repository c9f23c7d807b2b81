"""What discovery exposes, checked on a running process (docs/security.md's threat model):
TCP listeners on exactly its three addresses, and behind the TLS front of 15012 a unix
socket no other local user can open."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

from pilotfish.testing.mesh import LocalMesh


def listeners(pid: int, flags: str) -> list[str]:
    out = subprocess.run(["ss", "-H", flags + "p"], capture_output=True, text=True,
                         check=True).stdout
    return [line for line in out.splitlines() if f"pid={pid}," in line]


def test_discovery_listens_only_where_documented(tmp_path: Path) -> None:
    with LocalMesh(tmp_path) as mesh:
        process = mesh.start_discovery()
        assert process.popen is not None
        pid = process.popen.pid
        # grpc binds 127.0.0.1 as an IPv4-mapped IPv6 socket: the same address.
        tcp = {re.sub(r"^\[::ffff:([\d.]+)\]", r"\1", line.split()[3])
               for line in listeners(pid, "-ltn")}
        assert tcp == {f"127.0.0.1:{mesh.xds_port}", f"127.0.0.1:{mesh.secure_port}",
                       f"127.0.0.1:{mesh.debug_port}"}
        sockets = [line.split()[4] for line in listeners(pid, "-lx")]
        (path,) = [Path(s) for s in sockets if re.search(r"pilotfish-15012-.*/grpc\.sock$", s)]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert path.stat().st_uid == os.geteuid()
        # Another user cannot even reach the socket to try.
        probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                "python3", "-c", "import socket; s = socket.socket("
                                f"socket.AF_UNIX); s.connect({str(path)!r})"],
                               capture_output=True, text=True)
        assert probe.returncode != 0 and "Permission denied" in probe.stderr
    assert not path.parent.exists()  # removed when discovery stops
