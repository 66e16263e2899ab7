"""THE split: train / val / test, grouped by lesion, stratified by diagnosis.

HAM10000 has 10,015 images of 7,470 lesions; putting two photos of one lesion on both
sides of a split inflates every metric, so whole lesions are assigned. Within each
diagnosis the lesions are shuffled with a fixed seed and dealt to test, then val, until
each holds its share of that diagnosis's *images*; the rest go to train. That keeps class
proportions within a point or two of the whole. The file is committed and every metric
dermalens reports names it (by path and sha256).
"""
from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..defaults import DEFAULT_SPLIT_FILE  # re-exported as dermalens.data.DEFAULT_SPLIT_FILE
from ..paths import file_in_the_way
from .datasets import DatasetError, Record

SPLITS = ("train", "val", "test")
DEFAULT_SEED = 20180813  # HAM10000's publication date; any fixed value would do
DEFAULT_FRACTIONS = {"val": 0.15, "test": 0.15}


def make_split(records: list[Record], seed: int = DEFAULT_SEED,
               fractions: dict[str, float] = DEFAULT_FRACTIONS) -> dict[str, str]:
    """image_id -> 'train' | 'val' | 'test'."""
    if any(not r.lesion_id for r in records):
        raise DatasetError("every record needs a lesion_id to build a lesion-grouped split")
    lesions: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        lesions[r.lesion_id].append(r)
    by_class: dict[str, list[str]] = defaultdict(list)
    for lesion_id in sorted(lesions):
        dxs = {r.dx for r in lesions[lesion_id]}
        if len(dxs) != 1:
            raise DatasetError(f"lesion {lesion_id} has several diagnoses {sorted(dxs)}")
        by_class[dxs.pop()].append(lesion_id)
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for dx in sorted(by_class):
        ids = by_class[dx]
        ids = [ids[i] for i in rng.permutation(len(ids))]
        total = sum(len(lesions[l]) for l in ids)
        targets = [(name, fractions[name] * total) for name in ("test", "val")]
        filled = {name: 0 for name in SPLITS}
        for lesion_id in ids:
            split = "train"
            for name, target in targets:
                if filled[name] < target:
                    split = name
                    break
            filled[split] += len(lesions[lesion_id])
            for r in lesions[lesion_id]:
                assignment[r.image_id] = split
    return assignment


def _is_split_file(path: Path) -> bool:
    """UTF-8 text whose header names image_id and split (a broken split file is still one; its data is not)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return {"image_id", "split"} <= set(header)


def check_split_out(out: Path, data_root: Path) -> None:
    """Refuse, whatever --force says, an --out that `write_split` would fail on or that is not a split file
    (the data set's metadata, an image, notes): --force may only replace one split with another."""
    out = Path(out)
    if out.is_dir():
        raise FileExistsError(f"--out {out} is a folder; give a file name such as {out / 'ham10000_split.csv'}")
    if file_in_the_way(out.parent):
        raise FileExistsError(f"--out {out} lies inside a file, not a folder")
    if not out.is_file() or out.stat().st_size == 0:
        return
    from .datasets import HAM_METADATA
    if out.resolve() == (Path(data_root) / HAM_METADATA).resolve():
        raise FileExistsError(f"--out {out} is the data set's own metadata file; it is never replaced (not even "
                              "with --force): give another --out")
    if not _is_split_file(out):
        raise FileExistsError(f"--out {out} exists and is not a split file (no image_id and split columns); "
                              "--force replaces only a split file: give another --out")


def write_split(records: list[Record], assignment: dict[str, str], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted((r.image_id, r.lesion_id, r.dx, assignment[r.image_id]) for r in records)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["image_id", "lesion_id", "dx", "split"])
        w.writerows(rows)


def read_split(path: Path = DEFAULT_SPLIT_FILE) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: split file not found (create it with `dermalens split`)")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    missing = {"image_id", "split"} - set(reader.fieldnames or ())
    if missing or not rows:
        raise DatasetError(f"{path}: not a split file (it needs columns image_id and split, one row per image; "
                           "create one with `dermalens split`)")
    bad = {r["split"] for r in rows} - set(SPLITS)
    if bad:
        raise DatasetError(f"{path}: unknown split name(s) {sorted(bad)}")
    parts: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        parts[r["image_id"]].add(r["split"])
    twice = sorted(i for i, p in parts.items() if len(p) > 1)
    if twice:  # an image trained on and tested on: no flag can make its figures honest
        named = ", ".join(f"{i} ({'/'.join(sorted(parts[i]))})" for i in twice[:5])
        raise DatasetError(f"{path}: {len(twice)} image(s) in more than one split, such as {named}; "
                           "each image belongs to one split (make the file again with `dermalens split`)")
    return {r["image_id"]: r["split"] for r in rows}


def select_split(records: list[Record], split: str, path: Path = DEFAULT_SPLIT_FILE) -> list[Record]:
    """The records of one split; every record must appear in the split file."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {SPLITS}")
    assignment = read_split(path)
    unknown = [r.image_id for r in records if r.image_id not in assignment]
    if unknown:
        raise DatasetError(f"{len(unknown)} image(s) not in split file {path}: {unknown[:5]}; the split was made from "
                           "another data set: pass the data folder it was made from (--data), or make a split of "
                           "this one with `dermalens split --data DATA --out FILE`")
    return [r for r in records if assignment[r.image_id] == split]


def split_sha256(path: Path = DEFAULT_SPLIT_FILE) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def balanced_subset(records: list[Record], n: int) -> list[Record]:
    """At most n records, dealt round-robin over the diagnoses (smoke tests); n <= 0: all."""
    if n <= 0 or n >= len(records):
        return records
    by_class: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_class[r.dx].append(r)
    out, i = [], 0
    while len(out) < n:
        for dx in sorted(by_class):
            if i < len(by_class[dx]) and len(out) < n:
                out.append(by_class[dx][i])
        i += 1
    return out
