"""Retention: what the listener keeps for inspection (quarantined studies in ``SPOOL/failed/``, each
arrival's results in ``OUTPUT/<id>/``) is removed once ``retention_days`` old, so PHI at rest does
not accumulate for ever. Age is the folder's last modification; folders in use are kept."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Container
from pathlib import Path

logger = logging.getLogger(__name__)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def purge_older_than(parent: Path, max_age_s: float, keep: Container[str] = ()) -> tuple[int, int]:
    """Remove the sub-folders of ``parent`` unmodified for ``max_age_s``, except those named in ``keep``
    and hidden ones (a job's staging folder); returns (folders removed, bytes freed)."""
    if not parent.is_dir():
        return 0, 0
    cutoff, removed, freed = time.time() - max_age_s, 0, 0
    for folder in sorted(parent.iterdir()):
        if not folder.is_dir() or folder.name.startswith(".") or folder.name in keep:
            continue
        newest = max((p.stat().st_mtime for p in folder.rglob("*")), default=folder.stat().st_mtime)
        if max(newest, folder.stat().st_mtime) < cutoff:
            freed += folder_bytes(folder)
            shutil.rmtree(folder)
            removed += 1
    if removed:
        logger.info("Retention: removed %d folder(s) older than %.0f day(s) from %s", removed, max_age_s / 86400, parent)
    return removed, freed
