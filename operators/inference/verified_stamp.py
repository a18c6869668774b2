"""A record of package files already verified against their manifest sha256, so that a start-up does not
re-hash 690 MB: a file whose size, mtime, ctime and inode are those recorded when its hash last matched
is taken as verified; any change to one of them (a rewrite, a copy, ``touch``) means hashing it again.

ctime is in the key because a process cannot set it (``touch -r`` restores mtime, not ctime). The stamp
guards against corruption and accidental replacement, like the manifest check it shortcuts; it is not a
defence against someone who can write the cache folder. It lives in ``BIOMEDCLIP_CACHE_DIR`` (default
``$XDG_CACHE_HOME/biomedclip-map``, else ``~/.cache/biomedclip-map``), one JSON file per package folder,
written atomically; where that folder cannot be written every start hashes, as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from operators.atomic import write_atomically

CACHE_ENV = "BIOMEDCLIP_CACHE_DIR"

logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "biomedclip-map"


def file_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class VerifiedStamp:
    """The stamp of one package folder: ``{file: [size, mtime_ns, ctime_ns, inode, sha256]}``."""

    def __init__(self, package_root: Path) -> None:
        root = str(package_root.resolve())
        self.path = cache_dir() / "verified" / f"{hashlib.sha256(root.encode()).hexdigest()[:32]}.json"
        try:
            self.entries: dict[str, list] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False

    def is_verified(self, name: str, path: Path, sha256: str) -> bool:
        return self.entries.get(name) == [*file_key(path), sha256]

    def record(self, name: str, path: Path, sha256: str) -> None:
        self.entries[name] = [*file_key(path), sha256]
        self.changed = True

    def save(self, listed: Mapping[str, str]) -> None:
        """Keep only the files the manifest lists; a cache that cannot be written costs a re-hash next time."""
        if not self.changed:
            return
        entries = {name: value for name, value in self.entries.items() if name in listed}
        try:
            write_atomically(self.path, lambda f: f.write(json.dumps(entries).encode()))
        except OSError as exc:
            logger.debug("verified stamp not written (%s): the next start hashes the package again", exc.strerror)
