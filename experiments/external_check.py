"""External check: bundles on the labelled ISIC-archive images (dermoscopy from other clinics: nv, mel, bkl).

Image only (the collection gives no age, sex or site). Each bundle runs at its own operating point, fixed
on HAM10000 validation; nothing here is tuned. The 2016-2018 challenge copies were squashed to 512x512
(aspect ratio distorted), so figures are also given per source. ISIC 2020 images of one patient are
resampled together in the intervals; the others count as their own lesion.

    python experiments/external_check.py --models models/dermalens models/dermalens-lite2
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from dermalens.data.datasets import Record
from dermalens.evaluate.metrics import classification_metrics
from dermalens.evaluate.run import evaluate_records
from dermalens.inference import Predictor

DATA = Path("../shared/data/isic_archive")


def labelled_records(root: Path) -> tuple[list[Record], dict[str, str]]:
    records, source = [], {}
    with open(root / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            path = root / "images" / f"{row['image_id']}.jpg"
            if row["dx"] and path.is_file():
                records.append(Record(row["image_id"], row["dx"], path, row["patient_id"]))
                source[row["image_id"]] = row["source"]
    return records, source


def summary(m: dict) -> dict:
    ci = m.get("intervals") or {}
    mal = m.get("malignant", {})
    return {"n": m["n"], "macro_auroc": m["macro_auroc"], "macro_auroc_ci": ci.get("macro_auroc"),
            "balanced_accuracy": m["balanced_accuracy"], "balanced_accuracy_ci": ci.get("balanced_accuracy"),
            "ece": m["ece"], "malignant_auroc": mal.get("auroc"), "sensitivity": mal.get("sensitivity"),
            "sensitivity_ci": ci.get("malignant_sensitivity"), "specificity": mal.get("specificity"),
            "specificity_ci": ci.get("malignant_specificity"), "ood_pass_rate": m.get("ood_pass_rate")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    a = ap.parse_args()
    records, source = labelled_records(a.data)
    out = {}
    for model in a.models:
        predictor = Predictor(model)
        res = evaluate_records(predictor, records)
        name = f"{predictor.bundle.card['name']} {predictor.bundle.card['version']}"
        out[name] = {"all": summary(res["metrics"])}
        codes = predictor.bundle.codes
        src = np.array([source[r.image_id] for r in res["records"]])
        t, bias = predictor.bundle.operating_point(False)
        for s in sorted(set(src)):
            sel = src == s
            probs = res["probs"][sel]
            m = classification_metrics(res["y"][sel], probs, codes, float(t["malignant"]),
                                       pred=predictor.bundle.decide(probs) if bias is None else
                                       (np.log(np.maximum(probs, 1e-12)) + bias).argmax(axis=1),
                                       groups=[r.lesion for r, k in zip(res["records"], sel) if k])
            out[name][s] = summary(m)
        for part, s in out[name].items():
            print(f"{name:22s} {part:45s} n {s['n']:5d}  macro AUROC {s['macro_auroc']:.3f}  bal.acc "
                  f"{s['balanced_accuracy']:.3f}  ECE {s['ece']:.3f}  malignant AUROC {s['malignant_auroc']:.3f}  "
                  f"sens {s['sensitivity']:.3f} spec {s['specificity']:.3f}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
