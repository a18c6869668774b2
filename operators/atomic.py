"""Atomic, durable file output: a reader sees either no file or the whole file, never a partial one,
and once ``write_atomically`` returns the file survives a crash or power loss (the file and then its
folder are fsync'd, so both its content and its name are on disk)."""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_folder(folder: Path) -> None:
    """Make the entries of ``folder`` (files created, renamed or removed in it) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.cache
def file_mode() -> int:
    """0666 less the process's umask, as ``open`` would create the file (read once: the umask can only be
    read by setting it). The listener sets umask 077, so what it and its jobs write is 0600."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write through ``write`` to a temporary file beside ``path``, fsync it, rename it into place,
    then fsync the folder."""
    path = Path(path)
    if not path.parent.is_dir():  # mkdir of an existing folder still locks its parent (concurrent writers wait)
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())  # mkstemp makes it 0600 whatever the umask
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    fsync_folder(path.parent)
    return path
