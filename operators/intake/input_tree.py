"""Walk of an input folder: every entry under it, in sorted order, following symbolic links safely.

Symbolic links are followed (input folders are often links into an archive), and each folder is
walked at most once: a link back to a folder already walked (a loop) is reported, not followed.
Entries that cannot be image files (FIFOs, sockets, devices) are reported without being opened,
since opening a FIFO would block.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TreeEntry:
    path: Path
    relative: str  # relative to the input folder; folders end with "/"
    #: None for a regular file to classify; else why the entry is not read.
    problem: str | None = None
    #: the entry might have held an image that is now lost to the run (unreadable, broken link)
    refused: bool = False


def walk_input(root: Path) -> Iterator[TreeEntry]:
    """Every entry under ``root``: regular files to classify, and the entries that are not read, with why."""
    root = Path(root)
    yield from _walk(root, root, set())


def _walk(folder: Path, root: Path, visited: set[tuple[int, int]]) -> Iterator[TreeEntry]:
    info = folder.stat()
    visited.add((info.st_dev, info.st_ino))
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        yield TreeEntry(folder, _relative(folder, root) + "/", f"unreadable folder ({_strerror(exc)})", refused=True)
        return
    for entry in entries:
        path = Path(entry.path)
        relative = _relative(path, root)
        try:
            info = os.stat(path)  # follows symbolic links
        except OSError as exc:
            yield TreeEntry(path, relative, *_stat_problem(exc, entry.is_symlink()))
            continue
        if stat.S_ISDIR(info.st_mode):
            if (info.st_dev, info.st_ino) in visited:
                yield TreeEntry(path, relative + "/", "symbolic link loop: links to a folder already scanned (not followed)")
            else:
                yield from _walk(path, root, visited)
        elif stat.S_ISREG(info.st_mode):
            yield TreeEntry(path, relative)
        else:
            yield TreeEntry(path, relative, "not a regular file (FIFO, socket or device; not opened)")


def _stat_problem(exc: OSError, is_link: bool) -> tuple[str, bool]:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (not followed)", False
    if is_link and exc.errno == errno.ENOENT:
        return "broken symbolic link (its target does not exist)", True
    return f"unreadable ({_strerror(exc)})", True


def _strerror(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
