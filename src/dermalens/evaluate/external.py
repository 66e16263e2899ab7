"""External check: a bundle on dermoscopy from other clinics and devices (`isic_archive`: nv, mel, bkl).

Image only (the collection gives no age, sex or site); the bundle runs at its own operating point, fixed on
HAM10000 validation, and nothing here is tuned. By default only the part the image-type check was not fitted
on (`data.modality_sets`, 25 % of each source; ISIC 2020 by patient) is read. The ISIC 2016-2018 challenge
copies were squashed to 512x512 (aspect ratio distorted), so figures are also given per source. ISIC 2020
images of one patient are resampled together in the intervals; the others count as their own lesion.

    dermalens external-check --model models/dermalens [--part heldout|all] [--record-in-card]
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..data.datasets import Record
from ..data.modality_sets import isic2017_sample, isic_archive
from .metrics import classification_metrics
from .run import evaluate_records

NEEDED = ("isic_archive", "isic2017_sample")  # the second's images also sit in the first and are held out there
ABOUT = ("isic_archive: dermoscopy from other clinics and devices than HAM10000, labelled nv, mel or bkl only "
         "(so per-class figures exist for 3 of the 7 classes); the ISIC 2016-2018 challenge copies were squashed to "
         "512x512, distorting their aspect ratio; ISIC 2020 images of one patient are resampled together")


def check_data(shared: Path) -> None:
    """The two label files external_records reads, named when missing (before a bundle is loaded)."""
    missing = [f"{n}/labels.csv" for n in NEEDED if not (Path(shared) / n / "labels.csv").is_file()]
    if missing:
        raise FileNotFoundError(f"{shared}: missing {' and '.join(missing)} (--data is the folder holding "
                                "isic_archive/ and isic2017_sample/, whose images are left out of isic_archive's)")


def external_records(shared: Path, part: str = "heldout") -> tuple[list[Record], dict[str, str]]:
    """Labelled isic_archive records of one gate part ('all': every labelled image), and each one's source."""
    root = Path(shared) / "isic_archive"
    check_data(shared)
    exclude = {g.group for g in isic2017_sample(Path(shared) / "isic2017_sample")}
    parts = {g.path.stem: (g.part, g.stratum) for g in isic_archive(root, exclude=exclude)}
    records, source = [], {}
    with open(root / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            path = root / "images" / f"{row['image_id']}.jpg"
            got = parts.get(row["image_id"])
            if not row["dx"] or not path.is_file() or got is None or part not in ("all", got[0]):
                continue
            records.append(Record(row["image_id"], row["dx"], path, row["patient_id"] or row["image_id"]))
            source[row["image_id"]] = got[1]
    return records, source


def summary(m: dict) -> dict:
    ci = m.get("intervals") or {}
    mal = m.get("malignant", {})
    return {"n": m["n"], "macro_auroc": m["macro_auroc"], "macro_auroc_ci": ci.get("macro_auroc"),
            "balanced_accuracy": m["balanced_accuracy"], "ece": m["ece"], "malignant_auroc": mal.get("auroc"),
            "malignant_auroc_ci": ci.get("malignant_auroc"), "sensitivity": mal.get("sensitivity"),
            "sensitivity_ci": ci.get("malignant_sensitivity"), "specificity": mal.get("specificity"),
            "specificity_ci": ci.get("malignant_specificity"), "modality_pass_rate": m.get("modality_pass_rate"),
            "assessed_rate": m.get("assessed_rate"), "refused_by": m.get("refused_by")}


def external_check(predictor, shared: Path, part: str = "heldout") -> dict:
    records, source = external_records(shared, part)
    if not records:
        raise ValueError(f"{shared}/isic_archive: no labelled images in part {part!r}")
    res = evaluate_records(predictor, records, subgroups=False)
    m = res["metrics"]
    out = {"set": "isic_archive", "part": part, "about": ABOUT, "metadata": "not used (none given)",
           "classes": sorted({r.dx for r in res["records"]}), "all": summary(m), "by_source": {}}
    codes = predictor.bundle.codes
    src = np.array([source[r.image_id] for r in res["records"]])
    t, bias = predictor.bundle.operating_point(False)
    derm = res["dermoscopic"]
    for s in sorted(set(src)):
        sel = src == s
        probs = res["probs"][sel]
        sm = classification_metrics(res["y"][sel], probs, codes, float(t["malignant"]),
                                    pred=(np.log(np.maximum(probs, 1e-12)) + bias).argmax(axis=1),
                                    groups=[r.lesion for r, k in zip(res["records"], sel) if k])
        if derm is not None:
            sm["modality_pass_rate"] = float((derm[sel] >= predictor.bundle.gate.threshold).mean())
        sm["assessed_rate"] = float(res["assessed"][sel].mean())
        out["by_source"][s] = summary(sm)
    return out
