"""Temporary files and folders for atomic writes (write, then ``os.replace``) that get the permissions
``open()`` and ``mkdir()`` would give: 0o666 / 0o777 less the umask (0644 / 0755 by default).

``tempfile.mkstemp`` and ``mkdtemp`` create 0600 / 0700, and the rename keeps that mode, so a stage cache
shared by a team, or written by Ray workers running as another user, could not be read. Here the kernel
applies the umask (and a folder's default ACL) at creation, as for any other file: no process-global
``os.umask`` call, which would race with other threads.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

_FLAGS = (os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
          | getattr(os, "O_CLOEXEC", 0))
_ATTEMPTS = 100


def _create(make, dir: str | Path, prefix: str, suffix: str):
    for _ in range(_ATTEMPTS):
        name = os.path.abspath(os.path.join(dir, f"{prefix}{secrets.token_hex(6)}{suffix}"))
        try:
            return make(name), name
        except FileExistsError:
            continue
    raise FileExistsError(f"{dir}: no free temporary name {prefix}*{suffix} after {_ATTEMPTS} attempts")


def mkstemp(dir: str | Path, prefix: str = ".tmp-", suffix: str = "") -> tuple[int, str]:
    """Like ``tempfile.mkstemp(dir=..., prefix=..., suffix=...)`` (an open fd and the absolute path), but
    created with mode 0o666 & ~umask."""
    return _create(lambda name: os.open(name, _FLAGS, 0o666), dir, prefix, suffix)


def mkdtemp(dir: str | Path, prefix: str = ".tmp-", suffix: str = "") -> str:
    """Like ``tempfile.mkdtemp(dir=..., prefix=..., suffix=...)`` but created with mode 0o777 & ~umask."""
    return _create(lambda name: os.mkdir(name, 0o777), dir, prefix, suffix)[1]


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``: readers see the old
    file or the new one, never half of it."""
    path = Path(path)
    fd, tmp = mkstemp(path.parent, suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_leftovers(folder: str | Path) -> None:
    """Delete the temporary files of writes that a kill interrupted (before resuming work in ``folder``)."""
    for stale in Path(folder).glob(".tmp-*"):
        if stale.is_file():
            stale.unlink(missing_ok=True)
