"""Local state holds secrets (the rotated refresh token): private from the first write."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("magqb")


def private_dir(path: Path) -> Path:
    """`path` (and missing parents) as a directory only its owner can enter: 0700. A directory
    left readable by an earlier version is tightened, and the log says so."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, 0o700)
        log.warning("%s was readable by others (mode %o): now 0700", path, mode)
    return path


def private_file(path: Path) -> Path:
    """`path` as a file only its owner can read: made 0600 before anything writes a byte to it (SQLite's -wal and
    -shm files take its mode), and tightened if an earlier version left it open."""
    private_dir(path.parent)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)
    return path


def private_umask() -> None:
    """Files this process creates from now on are 0600 and directories 0700 (Faust's table data too)."""
    os.umask(0o077)
