"""The checks every command makes of a folder a user names, before any work: is a file in the way, can it be
written? And the one every benchmark makes of the image it is given."""
from __future__ import annotations

import tempfile
from pathlib import Path


def broken_link(path: Path) -> bool:
    """A link whose target does not exist: listed by a folder's reader so it is reported as skipped, not dropped."""
    return path.is_symlink() and not path.exists()


def file_in_the_way(path: str | Path) -> Path | None:
    """The file that keeps `path` from being (or becoming) a folder: `path` itself, or the first of its parents
    that is a file; None when there is none."""
    path = Path(path)
    return next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)


def nearest_existing(path: str | Path) -> Path:
    """`path` or the nearest of its parents that exists: where making the folder would start."""
    path = Path(path)
    return next(p for p in (path, *path.absolute().parents) if p.exists())


def cannot_write_in(folder: str | Path) -> str | None:
    """Why no file can be written in the existing `folder`, or None. A real write, not os.access: root passes
    access checks yet still cannot write a read-only mount."""
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        return e.strerror or str(e)
    return None


def image_argument(path: str | Path, flag: str = "--image") -> tuple[int, int]:
    """The (width, height) of the image file a benchmark is given with `flag`, read from its header before any
    server starts or any timing begins: SystemExit with one message per mistake (missing, a folder, no image)."""
    from .preprocess import ImageError, open_image
    p = Path(path)
    if not p.exists():
        raise SystemExit(f"error: {flag} {path}: not found")
    if p.is_dir():
        raise SystemExit(f"error: {flag} {path}: is a folder; give an image file")
    try:
        with open_image(p) as im:  # every format the server reads (HEIC too), under its default pixel limit
            return im.size
    except ImageError as e:
        raise SystemExit(f"error: {flag} {path}: cannot be read as an image ({e})") from None
