"""Key material on disk: atomic writes with the right modes, a lock for first start.

Keys are created 0600 before a byte is written (never chmod-ed afterwards), files are
replaced by rename so a reader sees the old or the new content, and the create-or-load of
a CA runs under a lock so replicas sharing a state directory converge on one root, as
istiod replicas converge on one ``istio-ca-secret``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from pilotfish.core.security.provider import CaSetupError

KEY_MODE = 0o600
PUBLIC_MODE = 0o644
SYSTEM_STATE_DIR = Path("/var/lib/pilotfish/discovery")


def default_state_dir() -> Path:
    """/var/lib for root (the node runs discovery as root); a user's own state folder
    otherwise, so ``pilotfish discovery`` works without privileges."""
    if os.geteuid() == 0:
        return SYSTEM_STATE_DIR
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "pilotfish" / "discovery"


def ensure_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o755)
    except OSError as exc:
        raise CaSetupError(f"{path}: cannot create the state directory ({exc.strerror}); "
                           "choose another with --state-dir") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise CaSetupError(f"{path}: state directory is not writable by uid {os.getuid()}; "
                           "choose another with --state-dir")
    return path


def write_atomic(path: Path, data: str | bytes, mode: int) -> None:
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)  # O_CREAT's mode is filtered by the umask
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise CaSetupError(f"{path}: cannot write ({exc.strerror})") from exc


def write_if_changed(path: Path, data: str, mode: int) -> bool:
    """Write unless the file already holds exactly ``data`` (restarts keep mtimes)."""
    try:
        if path.read_text() == data:
            return False
    except OSError:
        pass
    write_atomic(path, data, mode)
    return True


def read_text(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except FileNotFoundError as exc:
        raise CaSetupError(f"{path}: missing ({what})") from exc
    except OSError as exc:
        raise CaSetupError(f"{path}: cannot read {what} ({exc.strerror})") from exc


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory/.ca.lock`` (released when the process dies)."""
    lock = directory / ".ca.lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, KEY_MODE)
    except OSError as exc:
        raise CaSetupError(f"{lock}: cannot open the CA lock ({exc.strerror})") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
