"""Files written whole or not at all: `dermalens predict --csv/--json` and the evaluation report replace an
earlier file only once the new one is complete, so Ctrl-C or a full disk midway leaves the earlier one as it was."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replaced_whole(path: str | Path, encoding: str | None = None):
    """A text file (opened with newline="", as the csv module needs) that replaces `path` only once written in
    full: written beside it, then renamed over it, through a symlink (the link stays) and with the replaced file's
    permissions. `encoding`: the locale's unless given; a name the file system gave as undecodable bytes
    (surrogates) is written back as those bytes."""
    target = Path(path).resolve()  # through a symlink, so the link stays
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding=encoding, newline="", errors="surrogateescape") as f:
            yield f
        if target.exists():
            shutil.copymode(target, tmp)  # the replaced file's permissions, not the temporary file's
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
