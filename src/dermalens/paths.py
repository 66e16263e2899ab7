"""The check every command makes of a folder a user names, before any work: is a file in the way?"""
from __future__ import annotations

from pathlib import Path


def file_in_the_way(path: str | Path) -> Path | None:
    """The file that keeps `path` from being (or becoming) a folder: `path` itself, or the first of its parents
    that is a file; None when there is none."""
    path = Path(path)
    return next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
