"""Inputs -> the list of images to score, each with its manifest columns; and partitions of it.

An image is named by one string, its key: an absolute local path (a `file://` URL becomes one), or
an fsspec URL (s3://, gs://...). The key is what a rerun uses to know an image is done, so the same
image named two ways is one key, and two folders holding the same file names are not.
"""
from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .. import csvfiles
from ..data.datasets import IMAGE_EXTENSIONS
from ..predict import expand_inputs


@dataclass(frozen=True)
class Item:
    key: str
    extra: dict = field(default_factory=dict)  # manifest columns passed through to the row
    patient: object = None  # PatientMetadata from the manifest's age/sex/site columns, or None


@dataclass(frozen=True)
class Partition:
    id: str
    items: tuple[Item, ...]


def is_url(text: str) -> bool:
    return "://" in text


def canonical_key(text: str) -> str:
    """A local path or file:// URL -> its absolute path (workers may run in another folder); other URLs as they are."""
    if text.startswith("file://"):
        text = text[len("file://"):]
    elif is_url(text):
        return text
    return os.path.abspath(os.path.expanduser(text))


def collect_inputs(inputs: list[str], recursive: bool = False) -> tuple[list[Item], list[str]]:
    """(images in a stable order, without repeats; problems to warn about)."""
    items, problems = [], []
    for text in inputs:
        if text.lower().endswith(".csv"):
            items += read_manifest(text)
        elif is_url(text):
            found = _list_url(text, recursive)
            if not found:
                problems.append(f"{text}: no images there ({', '.join(IMAGE_EXTENSIONS)})")
            items += [Item(u) for u in found]
        else:
            paths, probs = expand_inputs([text], recursive)
            items += [Item(str(p)) for p in paths]
            problems += probs
    seen, unique = set(), []
    for it in items:
        it = Item(canonical_key(it.key), it.extra, it.patient)
        if it.key in seen:
            problems.append(f"{it.key}: listed more than once; scored once")
        else:
            seen.add(it.key)
            unique.append(it)
    return unique, problems


def read_manifest(text: str) -> list[Item]:
    """A CSV with a `path` column (relative to the CSV's folder, or absolute, or URLs) or an
    `image_id` column (looked up in the CSV's folder or its images/). Its other columns (age, sex,
    site...) travel with each image into its row."""
    import fsspec
    try:
        with fsspec.open(text, "rb") as f:
            raw = f.read()
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"{text}: cannot read manifest ({e})") from None
    table = csvfiles.read_table(  # as a spreadsheet saves it: cp1252, ';' or tabs too
        raw, text, lambda cols: "path" in cols or "image_id" in cols,
        lambda columns, hint: f"a manifest needs a 'path' or 'image_id' column; found {columns}{hint}")
    for w in table.warnings:
        print(f"warning: {w}", file=sys.stderr)
    rows = table.rows
    named = {h.lower(): h for h in reversed(table.columns)}  # Path, IMAGE_ID: whatever their case
    column = named.get("path") or named["image_id"]
    base = text.rsplit("/", 1)[0] if is_url(text) else str(Path(text).parent)
    index = _local_index(Path(base)) if column.lower() == "image_id" and not is_url(text) else {}
    items = []
    for line, row in rows:
        name = (row[column] or "").strip()
        if not name:
            continue
        extra = {k.strip(): (v or "").strip() for k, v in row.items() if k and k.lower() != "path"}
        patient = manifest_patient(text, line, extra, table.delimiter)
        if column.lower() == "image_id":
            key = str(index[name]) if name in index else f"{base}/{name}"
        elif is_url(name) or Path(name).is_absolute():
            key = name
        else:
            key = f"{base}/{name}" if is_url(text) else str(Path(base) / name)
        items.append(Item(key, extra, patient))
    if not items:
        raise ValueError(f"{text}: manifest lists no image")
    return items


def manifest_patient(text: str, line: int, extra: dict, delimiter: str = ","):
    """The patient details a manifest row carries (age, sex, localization or site), read as
    --metadata reads them; None when it has none."""
    from ..inference.metadata import patient_from_row
    fields = {k: v for k, v in extra.items() if k.lower() in csvfiles.PATIENT_COLUMNS}
    if not fields:
        return None
    meta = patient_from_row(fields, delimiter, f"{text} line {line}")
    return meta if meta.present else None


def rename_clashes(items: list[Item], taken: set[str]) -> tuple[list[Item], list[str]]:
    """Manifest columns named like a result column (a 'prediction' column of labels, say) become
    input_<name>, so neither replaces the other: (items, renamed names)."""
    clash = sorted({k for it in items for k in it.extra if k in taken})
    if not clash:
        return items, []
    new = {k: f"input_{k}" for k in clash}
    return [Item(it.key, {new.get(k, k): v for k, v in it.extra.items()}, it.patient) for it in items], clash


def _local_index(folder: Path) -> dict[str, Path]:
    index = {}
    for sub in (folder, folder / "images"):
        if sub.is_dir():
            for p in sorted(sub.iterdir()):
                if p.suffix.lower() in IMAGE_EXTENSIONS:
                    index.setdefault(p.stem, p)
                    index.setdefault(p.name, p)
    return index


def _list_url(url: str, recursive: bool) -> list[str]:
    import fsspec
    fs, root = fsspec.core.url_to_fs(url)
    if any(ch in root for ch in "*?["):
        found = fs.glob(root)
    elif fs.isdir(root):
        found = fs.find(root) if recursive else fs.ls(root, detail=False)
    else:
        return [url]  # one file; a missing one is reported when read
    return sorted(fs.unstrip_protocol(p) for p in found if Path(p).suffix.lower() in IMAGE_EXTENSIONS)


def partition_id(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def plan_partitions(items: list[Item], done: set[str], size: int) -> list[Partition]:
    """Cut the whole list into fixed chunks first, then drop what is done: an interrupted rerun of
    the same command gives the unfinished chunks their old ids, so a late write by a task of the
    first run replaces the same file rather than adding a second copy of its rows."""
    if size < 1:
        raise ValueError(f"--partition-size must be at least 1, got {size}")
    parts = []
    for i in range(0, len(items), size):
        todo = tuple(it for it in items[i:i + size] if it.key not in done)
        if todo:
            parts.append(Partition(partition_id([it.key for it in todo]), todo))
    return parts
