"""Does the answer depend on how the picture is held? The shipped bundle on flipped validation images.

    .venv/bin/python experiments/measure_flip_consistency.py [--model models/dermalens-lite2]

Lesions have no canonical orientation and training shows every rotation, yet a network is only roughly
invariant. Each validation image goes through the bundle as it is and flipped left-right, upside down and
turned 180 degrees (the views `--tta` averages). Printed, on validation only: each view's macro AUROC, and the
share of images whose predicted class, malignant-vs-benign call (card threshold) or risk level differs from
the unflipped image's. A measurement, not a choice: nothing in the bundle depends on it.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from probe_common import arguments, validation_images
from dermalens.evaluate.metrics import classification_metrics

VIEWS = {"as it is": None, "left-right": Image.Transpose.FLIP_LEFT_RIGHT,
         "upside down": Image.Transpose.FLIP_TOP_BOTTOM, "turned 180 degrees": Image.Transpose.ROTATE_180}


def main():
    a = arguments(__doc__)
    predictor, y, originals = validation_images(a)
    out = {}
    for name, op in VIEWS.items():
        pixels = np.stack([predictor.load(img if op is None else img.transpose(op)) for img in originals])
        out[name] = predictor.predict_pixels(pixels)
    base = out["as it is"]
    print("| view | macro AUROC | class differs | malignant call differs | risk level differs |")
    print("|---|---|---|---|---|")
    for name, preds in out.items():
        probs = np.stack([p.probabilities for p in preds])
        auroc = classification_metrics(y, probs, predictor.bundle.codes)["macro_auroc"]
        cls = np.mean([p.top != b.top for p, b in zip(preds, base)])
        mal = np.mean([(p.malignancy >= p.malignant_threshold) != (b.malignancy >= b.malignant_threshold)
                       for p, b in zip(preds, base)])
        risk = np.mean([p.risk != b.risk for p, b in zip(preds, base)])
        print(f"| {name} | {auroc:.4f} | {cls:.3f} | {mal:.3f} | {risk:.3f} |", flush=True)


if __name__ == "__main__":
    main()
