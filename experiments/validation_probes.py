"""Ideas for issue 3 that were checked on the validation split and dropped (session 4).

    .venv/bin/python experiments/validation_probes.py [--model models/dermalens-lite2]

Prints, for the bundle's calibrated validation probabilities:
1. late fusion with a metadata prior (age, sex, site; logistic regression fitted on the training split):
   p(c | image, meta) ~ p(c | image) * (p(c | meta) / p(c))^a;
2. the malignancy score taken from prior-corrected probabilities (tau as in the decision rule);
3. the specificity a stricter sensitivity target on validation would cost.
Validation only: none of these became part of the model, and the test split is not read.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score, roc_curve

from dermalens import DEFAULT_MODEL
from dermalens.classes import CODES, MALIGNANT_CODES
from dermalens.cli import DEFAULT_DATA
from dermalens.data import load_ham10000, select_split
from dermalens.evaluate.run import decode_records
from dermalens.inference.predictor import Predictor

MAL = [CODES.index(c) for c in MALIGNANT_CODES]


def metadata_features(rows: dict, ids, sites: list[str]) -> np.ndarray:
    out = []
    for i in ids:
        r = rows[i]
        try:
            age = float(r["age"])
        except ValueError:
            age = float("nan")
        missing = np.isnan(age)
        z = (50.0 - 50) / 20 if missing else (age - 50) / 20
        out.append([z, z * z, z ** 3, float(missing), r["sex"] == "male", r["sex"] == "female"]
                   + [r["localization"] == s for s in sites])
    return np.array(out, float)


def spec_at(is_mal, score, sens):
    fpr, tpr, _ = roc_curve(is_mal, score)
    return 1 - fpr[np.argmax(tpr >= sens)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--data", default=DEFAULT_DATA)
    a = ap.parse_args()
    records = load_ham10000(a.data)
    train, val = select_split(records, "train"), select_split(records, "val")
    predictor = Predictor(a.model)
    pixels, kept, _ = decode_records(predictor, val)
    probs, _, _ = predictor.forward(pixels)
    y = np.array([r.label for r in kept])
    is_mal = np.isin(y, MAL)
    y_train = np.array([r.label for r in train])
    prior = np.bincount(y_train, minlength=len(CODES)) / len(y_train)

    rows = {r["image_id"]: r for r in csv.DictReader(open(Path(a.data) / "HAM10000_metadata.csv"))}
    sites = sorted({r["localization"] for r in rows.values()})
    meta = LogisticRegression(C=1.0, max_iter=5000).fit(metadata_features(rows, [r.image_id for r in train], sites),
                                                         y_train)
    p_meta = meta.predict_proba(metadata_features(rows, [r.image_id for r in kept], sites))
    print("1. metadata late fusion (a = weight of the metadata prior; a = 0 is the bundle)")
    for w in (0.0, 0.5, 1.0):
        logp = np.log(probs + 1e-12) + w * (np.log(p_meta + 1e-12) - np.log(prior))
        q = np.exp(logp - logp.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
        s = q[:, MAL].sum(1)
        print(f"   a={w}: macro AUROC {roc_auc_score(y, q, multi_class='ovr'):.4f}  malignant AUROC "
              f"{roc_auc_score(is_mal, s):.4f}  spec@sens0.90 {spec_at(is_mal, s, 0.90):.3f}  "
              f"argmax bal.acc {balanced_accuracy_score(y, q.argmax(1)):.3f}")

    print("2. malignancy score from prior-corrected probabilities")
    for tau in (0.0, 0.25, 0.5, 0.75, 1.0):
        q = probs * prior ** -tau
        q /= q.sum(1, keepdims=True)
        s = q[:, MAL].sum(1)
        print(f"   tau={tau}: malignant AUROC {roc_auc_score(is_mal, s):.4f}  spec@sens0.90 {spec_at(is_mal, s, 0.9):.3f}")

    print("3. specificity at stricter validation sensitivity targets")
    s = probs[:, MAL].sum(1)
    for sens in (0.90, 0.91, 0.92, 0.93, 0.95):
        print(f"   sensitivity {sens:.2f}: specificity {spec_at(is_mal, s, sens):.3f}")


if __name__ == "__main__":
    main()
