"""Read labelled image sets into a flat list of `Record`s.

Two layouts:
* HAM10000: `HAM10000_metadata.csv` (lesion_id,image_id,dx,...) plus one or more image
  folders (`images/`, or the official `HAM10000_images_part_1/` and `_part_2/`).
* A generic labelled folder: a CSV with `image_id,dx` beside a folder of images, so any
  external set can be evaluated. It may hold only some of the 7 classes.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ..classes import CODES

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
HAM_METADATA = "HAM10000_metadata.csv"
HAM_IMAGE_DIRS = ("images", "HAM10000_images_part_1", "HAM10000_images_part_2", "HAM10000_images")


class DatasetError(ValueError):
    """A data set that cannot be used as it is; the message says what to fix."""


@dataclass(frozen=True)
class Record:
    image_id: str
    dx: str
    path: Path
    lesion_id: str = ""

    @property
    def label(self) -> int:
        return CODES.index(self.dx)

    @property
    def lesion(self) -> str:
        """The lesion this image shows; an image of a set without lesion ids is its own lesion."""
        return self.lesion_id or self.image_id


def _read_csv(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict]]:
    """(the file's line number, the row) of every row: blank lines and quoted line breaks counted as the user
    sees them in an editor."""
    if not path.is_file():
        raise DatasetError(f"{path}: metadata file not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {missing}; found {header}")
        rows = [(reader.line_num, {(k or "").strip(): (v or "").strip() for k, v in row.items()}) for row in reader]
    if not rows:
        raise DatasetError(f"{path}: no rows")
    return rows


def _index_images(folders: list[Path]) -> dict[str, Path]:
    """image id (file stem) and file name -> path, over every image in the folders."""
    index: dict[str, Path] = {}
    for folder in folders:
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                index.setdefault(p.stem, p)
                index.setdefault(p.name, p)
    return index


class ImagesMissing(DatasetError):
    """Images a labels file lists that are not there (missing="error")."""


class Records(list):
    """Records, with what the reader left out: `absent` (image ids listed but not found, with missing="skip")
    and `notes` (rows naming an image an earlier row names, with the same label: counted once), in words."""

    def __init__(self, records=(), absent=(), notes=()):
        super().__init__(records)
        self.absent, self.notes = list(absent), list(notes)


def _build(rows, index, csv_path: Path, missing: str) -> Records:
    records, absent, bad, repeats, conflicts = [], [], [], [], []
    first: dict[Path, tuple[int, dict]] = {}  # image file -> the line and row that first name it
    for line, row in rows:
        dx = row["dx"].lower()
        if dx not in CODES or not row["image_id"]:
            bad.append(f"line {line}: {row['dx']!r}" if row["image_id"] else f"line {line}: no image_id")
            continue
        path = index.get(row["image_id"])
        if path is None:
            absent.append(row["image_id"])
            continue
        if path in first:  # ISIC_1 twice, or ISIC_1 and ISIC_1.jpg (the index gives both one Path)
            earlier, row0 = first[path]
            named = (f"line {earlier} ({row0['image_id']}, {row0['dx']}) and "
                     f"line {line} ({row['image_id']}, {row['dx']})")
            same = row0["dx"].lower() == dx and row0.get("lesion_id", "") == row.get("lesion_id", "")
            (repeats if same else conflicts).append(named)
            continue
        first[path] = (line, row)
        records.append(Record(row["image_id"], dx, path, row.get("lesion_id", "")))
    if bad:
        raise DatasetError(
            f"{csv_path}: {len(bad)} unknown diagnosis label(s) or empty image_id(s) ({'; '.join(bad[:5])}); "
            f"expected one of {', '.join(CODES)}")
    if conflicts:  # which label is right cannot be guessed
        raise DatasetError(f"{csv_path}: {'; '.join(conflicts[:5])} list the same image with different labels (or "
                           "lesions); correct or remove one of the rows")
    absent = list(dict.fromkeys(absent))  # an image listed twice is one image missing
    if absent and missing == "error":
        raise ImagesMissing(
            f"{csv_path}: {len(absent)} image(s) listed but not found ({', '.join(absent[:5])}"
            f"{', ...' if len(absent) > 5 else ''})")
    return Records(records, absent, [f"{r} list the same image: it is classified and counted once" for r in repeats])


def load_ham10000(root: str | Path, metadata: str | Path | None = None,
                  image_dirs: list[str | Path] | None = None, missing: str = "error") -> Records:
    """All labelled images of a HAM10000-style folder, in metadata order."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: data folder not found")
    csv_path = Path(metadata) if metadata else root / HAM_METADATA
    rows = _read_csv(csv_path, ("lesion_id", "image_id", "dx"))
    if image_dirs:
        folders = [Path(d) if Path(d).is_absolute() else root / d for d in image_dirs]
    else:
        folders = [root / d for d in HAM_IMAGE_DIRS if (root / d).is_dir()] or [root]
    for f in folders:
        if not f.is_dir():
            raise DatasetError(f"{f}: image folder not found")
    return _build(rows, _index_images(folders), csv_path, missing)


def load_labelled_folder(csv_path: str | Path, image_dir: str | Path | None = None,
                         missing: str = "error") -> Records:
    """A CSV `image_id,dx` and its images (default: the CSV's own folder, or `images/` in it)."""
    csv_path = Path(csv_path)
    rows = _read_csv(csv_path, ("image_id", "dx"))
    if image_dir is None:
        image_dir = csv_path.parent / "images" if (csv_path.parent / "images").is_dir() else csv_path.parent
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise DatasetError(f"{image_dir}: image folder not found")
    return _build(rows, _index_images([image_dir]), csv_path, missing)


def load_dataset(path: str | Path, missing: str = "error") -> Records:
    """HAM10000 folder, labelled folder (containing labels.csv) or a labels CSV, by what is there."""
    path = Path(path)
    if path.is_file():
        return load_labelled_folder(path, missing=missing)
    if (path / HAM_METADATA).is_file():
        return load_ham10000(path, missing=missing)
    for name in ("labels.csv", "metadata.csv"):
        if (path / name).is_file():
            return load_labelled_folder(path / name, missing=missing)
    raise DatasetError(f"{path}: expected {HAM_METADATA}, labels.csv or a CSV file with image_id,dx")
