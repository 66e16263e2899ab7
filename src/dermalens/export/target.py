"""Where `dermalens export` may write, checked before any work: a new or empty folder, or, with `force`,
a bundle that it replaces whole (no file of the old bundle is left beside the new one)."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

from ..paths import cannot_write_in, file_in_the_way, nearest_existing

_VERSION = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")


def parse_version(text: str) -> tuple[int, int, int]:
    """'3.0.0' -> (3, 0, 0); anything but MAJOR.MINOR.PATCH is a ValueError (versions are compared)."""
    m = _VERSION.fullmatch(str(text).strip())
    if not m:
        raise ValueError(f"a bundle version is MAJOR.MINOR.PATCH such as 3.1.0, got {text!r}")
    return tuple(int(g) for g in m.groups())


def check_target(out: Path, version: str, force: bool) -> None:
    """Refuse an `out` that export would harm: a file, a folder of other files (always), a bundle (unless
    `force`), and say when `version` would not be newer than the bundle it replaces."""
    new = parse_version(version)
    out = Path(out)
    blocker = file_in_the_way(out)
    if blocker:
        raise FileExistsError(f"--out {out} is a file, not a bundle folder" if blocker == out else
                              f"--out {out} lies inside a file, not a folder")
    # the bundle is built in a hidden folder beside `out`: that folder must be writable, said before any work
    where = nearest_existing(out.absolute().parent)
    why = cannot_write_in(where)
    if why:
        raise PermissionError(f"--out {out} cannot be written ({where}: {why}); choose a folder you can write")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / "card.json").is_file():
        # export replaces the folder whole: files it did not write would be deleted, so nothing unlocks this
        raise FileExistsError(f"--out {out} holds files but no bundle (no card.json); give a new or empty folder")
    if force:
        return
    try:
        old = json.loads((out / "card.json").read_text())
        what, old_version = f"{old['name']} {old['version']}", old["version"]
    except (OSError, ValueError, TypeError, KeyError):
        what, old_version = "a bundle with an unreadable card.json", None
    older = ""
    try:
        if old_version is not None and new <= parse_version(old_version):
            older = f", and --version {version} is not newer than the {old_version} it would replace"
    except ValueError:
        pass  # an old card's free-form version cannot be compared; --force is asked for anyway
    raise FileExistsError(f"--out {out} already holds a bundle ({what}){older}. Export replaces a bundle whole "
                          "(its networks, image-type check, report/): give another --out, or pass --force to replace it")


def swap_in(staging: Path, final: Path) -> None:
    """Make the finished bundle in `staging` the folder `final`, removing the bundle that was there."""
    if not final.exists():
        os.replace(staging, final)
        return
    old = final.parent / f".{final.name}.export-old"
    shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(final, old)
    except OSError as e:
        if e.errno not in (errno.EBUSY, errno.EXDEV, errno.EPERM, errno.EACCES):
            raise
        _replace_contents(staging, final)  # a mount point (a container's volume) cannot be renamed
        return
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def _replace_contents(staging: Path, final: Path) -> None:
    """Copy the new bundle into a hidden folder inside `final` first (the step that may fail: a full disk leaves
    the old bundle as it was), then remove the old files, card.json first, and rename the new ones in, card.json
    last: renames within one folder cannot fail half-way through a file."""
    incoming = final / ".export-incoming"
    shutil.rmtree(incoming, ignore_errors=True)
    try:
        shutil.copytree(staging, incoming)
    except OSError:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    old = sorted((f for f in final.iterdir() if f != incoming), key=lambda f: f.name != "card.json")
    for f in old:
        shutil.rmtree(f) if f.is_dir() and not f.is_symlink() else f.unlink()
    for f in sorted(incoming.iterdir(), key=lambda f: f.name == "card.json"):
        os.replace(f, final / f.name)
    incoming.rmdir()
