"""Image sets for the modality gate (dermoscopic or not), split by group so no patient, lesion or
condition crosses from fitting into checking.

Parts: `fit` (the classifier learns on it), `check` (the threshold is chosen on it) and `heldout`
(reported only). HAM10000 follows the project's split file (train / val / test). The other sets are
split by a hash of their group key, 60 / 15 / 25 %:
* isic_archive: per source; ISIC 2020 by patient_id, the others by image. Images that are also in
  isic2017_sample are left out of it (isic2017_sample is a held-out set of its own);
* pad_ufes_20: by patient_id;
* sd198_clinical: by condition, so the held-out conditions are kinds of photo the gate never saw.
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from .splits import read_split

PARTS = ("fit", "check", "heldout")
DERMOSCOPIC = 1
NOT_DERMOSCOPIC = 0


@dataclass(frozen=True)
class GateImage:
    path: Path
    set: str  # the collection: ham10000, isic_archive, isic2017_sample, pad_ufes_20, sd198_clinical
    label: int  # DERMOSCOPIC or NOT_DERMOSCOPIC
    part: str
    group: str  # what is kept together: lesion, patient, condition or image
    stratum: str = ""  # the class (HAM10000) or the source (isic_archive), for per-stratum figures


def _unit(key: str, salt: str = "modality-gate-v1") -> float:
    """A deterministic number in [0, 1) for a group key."""
    return int.from_bytes(hashlib.sha256(f"{salt}:{key}".encode()).digest()[:8], "big") / 2**64


def hash_part(key: str) -> str:
    """Deterministic 60 / 15 / 25 % assignment of a group key to fit / check / heldout."""
    u = _unit(key)
    return "fit" if u < 0.60 else "check" if u < 0.75 else "heldout"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def ham10000(root: Path, split_file: Path, fit_share: float = 0.5) -> list[GateImage]:
    """Validation is `check`, test is `heldout`; of the training split a share of lesions is `fit` (half of its
    7,000 images already outnumber every other collection)."""
    split = read_split(split_file)
    meta = {r["image_id"]: r for r in _rows(root / "HAM10000_metadata.csv")}
    parts = {"train": "fit", "val": "check", "test": "heldout"}
    out = []
    for i, s in sorted(split.items()):
        if i not in meta:
            continue
        lesion = meta[i]["lesion_id"]
        if s == "train" and _unit(f"ham/{lesion}") >= fit_share:
            continue
        out.append(GateImage(root / "images" / f"{i}.jpg", "ham10000", DERMOSCOPIC, parts[s], lesion, meta[i]["dx"]))
    return out


def isic2017_sample(root: Path) -> list[GateImage]:
    return [GateImage(root / "images" / f"{r['image_id']}.jpg", "isic2017_sample", DERMOSCOPIC, "heldout",
                      r["image_id"], r["dx"]) for r in _rows(root / "labels.csv")]


def isic_archive(root: Path, exclude: set[str] = frozenset()) -> list[GateImage]:
    out = []
    for r in _rows(root / "labels.csv"):
        if r["image_id"] in exclude:
            continue
        group = f"patient:{r['patient_id']}" if r["patient_id"] else f"image:{r['image_id']}"
        source = _source_name(r["source"])
        out.append(GateImage(root / "images" / f"{r['image_id']}.jpg", "isic_archive", DERMOSCOPIC,
                             hash_part(f"{source}/{group}"), group, source))
    return out


def _source_name(text: str) -> str:
    for key, name in (("2020", "ISIC 2020"), ("UDA-1", "UDA-1"), ("2016-2018", "ISIC 2016-2018")):
        if key in text:
            return name
    return text


def pad_ufes_20(root: Path) -> list[GateImage]:
    return [GateImage(root / "images" / f"{r['image_id']}.jpg", "pad_ufes_20", NOT_DERMOSCOPIC,
                      hash_part(f"pad/{r['patient_id']}"), r["patient_id"], r["dx"]) for r in _rows(root / "labels.csv")]


def sd198_clinical(root: Path) -> list[GateImage]:
    return [GateImage(root / "images" / f"{r['image_id']}.jpg", "sd198_clinical", NOT_DERMOSCOPIC,
                      hash_part(f"sd198/{r['condition']}"), r["condition"], r["condition"])
            for r in _rows(root / "labels.csv")]


def _image_file(p: Path) -> Path:
    """The labels name images by id; the file may be .jpg or .png."""
    if p.is_file():
        return p
    for ext in (".png", ".jpeg", ".JPG"):
        q = p.with_suffix(ext)
        if q.is_file():
            return q
    return p


def gate_images(shared: Path, split_file: Path) -> list[GateImage]:
    """Every image of the five collections under `shared` (the folder holding ham10000/, isic_archive/, ...)."""
    shared = Path(shared)
    needed = ["ham10000", "isic2017_sample", "isic_archive", "pad_ufes_20", "sd198_clinical"]
    missing = [n for n in needed if not (shared / n).is_dir()]
    if missing:
        raise FileNotFoundError(f"{shared}: missing {', '.join(missing)} (the modality gate is fitted on all five "
                                "collections; see ../shared/data/README.md)")
    i17 = isic2017_sample(shared / "isic2017_sample")
    images = (ham10000(shared / "ham10000", split_file) + i17
              + isic_archive(shared / "isic_archive", exclude={g.group for g in i17})
              + pad_ufes_20(shared / "pad_ufes_20") + sd198_clinical(shared / "sd198_clinical"))
    return [GateImage(_image_file(g.path), g.set, g.label, g.part, g.group, g.stratum) for g in images]
