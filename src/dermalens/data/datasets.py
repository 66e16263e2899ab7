"""Read labelled image sets into a flat list of `Record`s.

Two layouts:
* HAM10000: `HAM10000_metadata.csv` (lesion_id,image_id,dx,...) plus one or more image
  folders (`images/`, or the official `HAM10000_images_part_1/` and `_part_2/`).
* A generic labelled folder: a CSV with `image_id,dx` beside a folder of images, so any
  external set can be evaluated. It may hold only some of the 7 classes.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from .. import csvfiles
from ..csvfiles import PATIENT_COLUMNS
from ..classes import CLASSES, CODES

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".heic", ".heif",
                    ".avif")
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




def _words(text: str) -> str:
    """How a diagnosis written out is compared: 'Basal_cell-Carcinoma ' -> 'basal cell carcinoma'."""
    return " ".join(text.lower().replace("_", " ").replace("-", " ").split())


# Diagnoses written out, read as their codes: our own class names (classes.py, and each part of one that names
# two), with the names and plurals HAM10000's description uses
_HAM_NAMES = {
    "akiec": ("actinic keratoses", "actinic keratoses and intraepithelial carcinoma", "bowen's disease"),
    "bcc": ("basal cell carcinomas",),
    "bkl": ("benign keratosis", "benign keratoses", "benign keratosis like lesions"),
    "df": ("dermatofibromas",),
    "mel": ("melanomas",),
    "nv": ("melanocytic nevi", "melanocytic naevus", "melanocytic naevi"),
    "vasc": ("vascular lesions",),
}
DIAGNOSIS_NAMES: dict[str, str] = {}
for _c in CLASSES:
    for _name in (_c.code, _c.name, *_c.name.split("/"), *_HAM_NAMES.get(_c.code, ())):
        DIAGNOSIS_NAMES.setdefault(_words(_name), _c.code)


def diagnosis_code(text: str) -> str | None:
    """The class code a labels file means by `text` (a code or a class name, any case), or None."""
    return DIAGNOSIS_NAMES.get(_words(text))


def _nearest_code(text: str) -> str | None:
    close = difflib.get_close_matches(_words(text), list(DIAGNOSIS_NAMES), n=1, cutoff=0.6)
    return DIAGNOSIS_NAMES[close[0]] if close else None


@dataclass
class _Table:
    rows: list[tuple[int, dict]]  # (the file's line number, the row with its column names lower-cased)
    columns: list[str]
    delimiter: str
    warnings: list[str]


def _read_csv(path: Path, required: tuple[str, ...]) -> _Table:
    """Every row, with the file's line number: blank lines and quoted line breaks counted as the user sees them in
    an editor. Column names are matched whatever their case and surrounding spaces, and the separator is the one
    of comma, semicolon and tab that gives the required columns."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    table = csvfiles.read_table(
        path.read_bytes(), path, lambda cols: all(c in cols for c in required),
        lambda columns, hint: f"missing column(s) {[c for c in required if c not in [h.lower() for h in columns]]}; "
                              f"found {columns}{hint}", DatasetError)
    header = table.columns
    columns = [h.lower() for h in header]
    for name in dict.fromkeys(c for c in columns if c in required + PATIENT_COLUMNS + ("lesion_id",)):
        same = [h for h in header if h.lower() == name]
        if len(same) > 1:
            raise DatasetError(f"{path}: columns {' and '.join(map(repr, same))} are both read as {name}; keep one")
    rows = [(line, {k.lower(): v for k, v in row.items()}) for line, row in table.rows]
    delimiter, warnings = table.delimiter, table.warnings
    if not rows:
        raise DatasetError(f"{path}: no rows")
    return _Table(rows, columns, delimiter, warnings)


def _index_images(folders: list[Path]) -> dict[str, Path]:
    """file name and image id (file stem) -> path, over every image in the folders. A stem that two file names share
    (IMG_1.heic and its copy IMG_1.jpg) is no image id: which file a bare IMG_1 means cannot be guessed, so _build
    names both (a file of one name in two folders is the first folder's, as always)."""
    index: dict[str, Path] = {}
    by_stem: dict[str, dict[str, Path]] = {}
    for folder in folders:
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                index.setdefault(p.name, p)
                by_stem.setdefault(p.stem, {}).setdefault(p.name, p)
    for stem, files in by_stem.items():
        if len(files) == 1:
            index.setdefault(stem, next(iter(files.values())))
    return index


class ImagesMissing(DatasetError):
    """Images a labels file lists that are not there (missing="error")."""


class Records(list):
    """Records, with what the reader left out: `absent` (image ids listed but not found, with missing="skip")
    and `notes` (rows naming an image an earlier row names, with the same label: counted once; diagnoses read
    from their names), in words; `warnings`, in words, what the user should check (a file read as cp1252, listed
    names read as files of another extension, images in the folder the file does not list). `source` is the
    labels file, `columns` its column names (lower-cased), `delimiter` its separator and `rows` the line and row
    of each record's image id."""

    def __init__(self, records=(), absent=(), notes=(), *, warnings=(), source=None, columns=(), delimiter=",",
                 rows=None):
        super().__init__(records)
        self.absent, self.notes, self.warnings = list(absent), list(notes), list(warnings)
        self.source, self.columns, self.delimiter, self.rows = source, list(columns), delimiter, dict(rows or {})


def _by_lower(paths: list[Path]) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """Image files by lower-cased name and by lower-cased stem."""
    names: dict[str, list[Path]] = {}
    stems: dict[str, list[Path]] = {}
    for p in paths:
        names.setdefault(p.name.lower(), []).append(p)
        stems.setdefault(p.stem.lower(), []).append(p)
    return names, stems


def _listed_elsewise(image_id: str, names: dict, stems: dict) -> Path | list[Path]:
    """The one image file a listed name can mean when it is no file's own name or stem: the same name in another
    case, else the same stem with another image extension (ISIC_1.JPG, ISIC_1.png -> ISIC_1.jpg); otherwise the
    files it could mean (none, or several)."""
    same_name = names.get(image_id.lower(), [])
    if len(same_name) == 1:
        return same_name[0]
    stem = Path(image_id).stem if Path(image_id).suffix.lower() in IMAGE_EXTENSIONS else image_id
    same_stem = stems.get(stem.lower(), [])
    return same_stem[0] if len(same_stem) == 1 else same_stem


def _some(items, n=5) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


def _build(table: _Table, index, csv_path: Path, missing: str, folders: list[Path]) -> Records:
    records, absent, bad, repeats, conflicts = [], [], [], [], []
    first: dict[Path, tuple[int, dict, str]] = {}  # image file -> the line, row and code that first name it
    named: dict[str, str] = {}  # diagnoses written out -> their code
    elsewise: list[tuple[str, Path]] = []  # listed names read as another file name
    near: dict[str, list[Path]] = {}  # listed names not found -> the files they could mean
    paths = sorted(set(index.values()))
    lower = None  # _by_lower(paths), made when a listed name is not found as it is
    by_id: dict[str, tuple[int, dict]] = {}
    for line, row in table.rows:
        dx = diagnosis_code(row["dx"])
        if dx is None or not row["image_id"]:
            if not row["image_id"]:
                bad.append(f"line {line}: no image_id")
            else:
                guess = _nearest_code(row["dx"]) if row["dx"] else None
                bad.append(f"line {line}: {row['dx']!r}" + (f" ({guess}?)" if guess else ""))
            continue
        if row["dx"].lower() != dx:
            named.setdefault(row["dx"], dx)
        path = index.get(row["image_id"])
        if path is None:
            lower = lower or _by_lower(paths)
            other = _listed_elsewise(row["image_id"], *lower)
            if isinstance(other, Path):
                path = other
                elsewise.append((row["image_id"], path))
            else:
                absent.append(row["image_id"])
                if other:
                    near[row["image_id"]] = other
                continue
        if path in first:  # ISIC_1 twice, or ISIC_1 and ISIC_1.jpg (the index gives both one Path)
            earlier, row0, dx0 = first[path]
            named_rows = (f"line {earlier} ({row0['image_id']}, {row0['dx']}) and "
                          f"line {line} ({row['image_id']}, {row['dx']})")
            same = dx0 == dx and row0.get("lesion_id", "") == row.get("lesion_id", "")
            (repeats if same else conflicts).append(named_rows)
            continue
        first[path] = (line, row, dx)
        by_id.setdefault(row["image_id"], (line, row))
        records.append(Record(row["image_id"], dx, path, row.get("lesion_id", "")))
    if bad:
        raise DatasetError(
            f"{csv_path}: {len(bad)} unknown diagnosis label(s) or empty image_id(s) ({'; '.join(bad[:5])}); "
            f"expected one of {', '.join(CODES)}, or a class name such as melanoma or melanocytic nevi")
    if conflicts:  # which label is right cannot be guessed
        raise DatasetError(f"{csv_path}: {'; '.join(conflicts[:5])} list the same image with different labels (or "
                           "lesions); correct or remove one of the rows")
    absent = list(dict.fromkeys(absent))  # an image listed twice is one image missing
    hints = "; ".join(f"{i}: there are {' and '.join(p.name for p in near[i][:5])}, which one is meant cannot be "
                      "guessed (name it with its extension)" for i in absent[:5] if i in near)
    if absent and missing == "error":
        raise ImagesMissing(f"{csv_path}: {len(absent)} image(s) listed but not found ({_some(absent)})"
                            + (f"; {hints}" if hints else ""))
    warnings = list(table.warnings)
    if hints:
        warnings.append(f"{csv_path}: {hints}")
    if elsewise:
        warnings.append(f"{csv_path}: {len(elsewise)} listed file names are not the names on disk but differ only "
                        "in the extension or in case, so each is read as the one file it can mean ("
                        + _some(f"{i} as {p.name}" for i, p in elsewise) + ")")
    ambiguous = {q for i in absent if i in near for q in near[i]}  # listed, named in the hint above: not unlisted
    unlisted = [p for p in paths if p not in first and p not in ambiguous]
    if unlisted:
        warnings.append(f"{len(unlisted)} image(s) in {', '.join(map(str, folders))} are not listed in {csv_path} "
                        f"and are left out ({_some(p.name for p in unlisted)})")
    notes = [f"{r} list the same image: it is classified and counted once" for r in repeats]
    if named:
        notes.append(f"{csv_path}: diagnoses written as class names are read as their codes: "
                     + _some((f"{n!r} as {c}" for n, c in named.items()), 8))
    return Records(records, absent, notes, warnings=warnings, source=csv_path, columns=table.columns,
                   delimiter=table.delimiter, rows=by_id)


def load_ham10000(root: str | Path, metadata: str | Path | None = None,
                  image_dirs: list[str | Path] | None = None, missing: str = "error") -> Records:
    """All labelled images of a HAM10000-style folder, in metadata order."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: data folder not found; give the HAM10000 folder (HAM10000_metadata.csv and "
                           "images/) with --data or DERMALENS_DATA (docs/data.md says where to get it)")
    csv_path = Path(metadata) if metadata else root / HAM_METADATA
    if not metadata and not csv_path.is_file():
        raise DatasetError(f"{root}: no {HAM_METADATA} in this folder, so it is not the HAM10000 folder; give the "
                           "folder holding it and images/ with --data or DERMALENS_DATA (docs/data.md)")
    rows = _read_csv(csv_path, ("lesion_id", "image_id", "dx"))
    if image_dirs:
        folders = [Path(d) if Path(d).is_absolute() else root / d for d in image_dirs]
    else:
        folders = [root / d for d in HAM_IMAGE_DIRS if (root / d).is_dir()] or [root]
    for f in folders:
        if not f.is_dir():
            raise DatasetError(f"{f}: image folder not found")
    return _build(rows, _index_images(folders), csv_path, missing, folders)


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
    return _build(rows, _index_images([image_dir]), csv_path, missing, [image_dir])


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
