"""Reading a file someone else controls the path of, so that no file can hurt the reader.

Only regular files are read — opening a FIFO would block until a writer comes, a device
may never end — and never more than a given number of bytes. The open does not wait (a
FIFO opens at once and is then refused) and does not follow a final symlink, so the
caller's own checks on the path still hold when the bytes are read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class ReadError(Exception):
    """A file that is not read: the message names it and says why."""


class TooLarge(ReadError):
    """The file holds more than the bytes allowed (the caller says which limit that is)."""


def read_regular(path: Path | str, max_bytes: int, *, follow: bool = False) -> bytes:
    """The bytes of the regular file at ``path``, at most ``max_bytes`` of them.

    ``FileNotFoundError`` when it does not exist (callers often treat that as "deleted");
    ``ReadError`` for anything else that stops the read, ``TooLarge`` past ``max_bytes``.
    ``follow`` lets a final symlink be followed (the caller vetted where it leads).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    if not follow:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise
        if exc.errno == errno.ELOOP:
            raise ReadError(f"{path}: a symlink; not read") from exc
        raise ReadError(f"{path}: cannot open: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = ("a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device"
                    if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else
                    "a socket" if stat.S_ISSOCK(info.st_mode) else
                    "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file")
            raise ReadError(f"{path}: {kind}, not a regular file; not read")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ReadError(f"{path}: cannot read: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if size > max_bytes:
        raise TooLarge(f"{path}: larger than {max_bytes:,} bytes; not read")
    return b"".join(chunks)
