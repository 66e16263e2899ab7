"""Are the images the feature-distance check refuses ('image features are unlike the dermoscopic training
images') ones the networks read badly? The shipped bundle on isic_archive's labelled dermoscopy from other clinics.

    .venv/bin/python experiments/measure_feature_distance_refusals.py [--model models/dermalens]

Reads the fit and check parts of isic_archive (the parts the external check's held-out figures leave out; nv,
mel, bkl labels), keeps the images the image-type check passes, and prints, for those the feature distance passes
and those it refuses: how many, malignant AUROC (melanoma against the rest, by the bundle's malignancy score),
top-1 accuracy of the bundle's decision and mean top probability. A measurement, not a choice: nothing in the
bundle depends on it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from dermalens.defaults import DEFAULT_DATA, DEFAULT_MODEL
from dermalens.evaluate.external import external_records
from dermalens.inference import Predictor


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--data", default=str(Path(DEFAULT_DATA).parent), help="folder holding isic_archive/")
    a = ap.parse_args()
    predictor = Predictor(a.model, share_cores=False)
    records = [r for part in ("fit", "check") for r in external_records(Path(a.data), part)[0]]
    codes = predictor.bundle.codes
    y = np.array([codes.index(r.dx) for r in records])
    pixels = np.stack([predictor.load(r.path) for r in records])
    probs, pooled, _ = predictor.forward(pixels)
    far = predictor.ood_scores(pooled) > predictor.ood_threshold
    dermoscopic = predictor.dermoscopic(pixels) >= predictor.bundle.gate.threshold
    melanoma, malignancy = y == codes.index("mel"), predictor.malignancy(probs)
    decided = predictor.bundle.decide(probs)
    print(f"{a.model}: isic_archive fit + check parts, {len(records)} labelled images, "
          f"{int(dermoscopic.sum())} passed by the image-type check")
    print("| feature distance | images | melanomas | malignant AUROC | top-1 accuracy | mean top probability |")
    print("|---|---|---|---|---|---|")
    for name, sel in (("passes", dermoscopic & ~far), ("refuses", dermoscopic & far)):
        print(f"| {name} | {int(sel.sum())} | {int(melanoma[sel].sum())} | "
              f"{roc_auc_score(melanoma[sel], malignancy[sel]):.3f} | {(decided[sel] == y[sel]).mean():.3f} | "
              f"{probs[sel].max(axis=1).mean():.3f} |")


if __name__ == "__main__":
    main()
