"""How small may a user's image be? The shipped bundle on downscaled validation images.

    .venv/bin/python experiments/low_resolution_probe.py [--model models/dermalens-lite2]

Each validation image (200x150, itself a downscale of the 600x450 original) is shrunk to a short side of
150 (as is), 112, 94, 75, 56 and 38 pixels with Pillow's antialiased bilinear filter, then goes through the
bundle exactly as a user's upload would (the one preprocessing: resize to the input size, ONNX). Printed
per size, on validation only: macro AUROC, balanced accuracy of the bundle's decision rule, malignant
sensitivity and specificity at the card's threshold, and the share of images the OOD gate passes.

Rule, written before any figure was computed (session 9): the smallest short side the bundle assesses is
the smallest tested size at which validation macro AUROC is at most 0.01 below, and malignant sensitivity at
most 0.03 below, the figures of the images as they are (150). Images with a shorter short side get no
assessment: the predictor gives the reason, as it does for the other input checks.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from dermalens import DEFAULT_MODEL
from dermalens.cli import DEFAULT_DATA
from dermalens.data import DEFAULT_SPLIT_FILE, load_ham10000, select_split
from dermalens.evaluate.metrics import classification_metrics
from dermalens.inference import Predictor

SHORT_SIDES = (150, 112, 94, 75, 56, 38)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--split-file", type=Path, default=DEFAULT_SPLIT_FILE)
    a = ap.parse_args(argv)
    predictor = Predictor(a.model)
    records = select_split(load_ham10000(a.data), "val", a.split_file)
    codes = predictor.bundle.codes
    y = np.array([codes.index(r.dx) for r in records])
    originals = [Image.open(r.path).convert("RGB") for r in tqdm(records, desc="read")]
    print("| short side (px) | macro AUROC | balanced accuracy | malignant sens / spec | OOD gate passes |")
    print("|---|---|---|---|---|")
    for side in SHORT_SIDES:
        pixels = []
        for img in originals:
            scale = side / min(img.size)
            small = img if scale >= 1 else img.resize((round(img.width * scale), round(img.height * scale)),
                                                      Image.Resampling.BILINEAR, reducing_gap=None)
            pixels.append(predictor.load(small))
        preds = predictor.predict_pixels(np.stack(pixels))
        probs = np.stack([p.probabilities for p in preds])
        m = classification_metrics(y, probs, codes, malignant_threshold=predictor.threshold,
                                   pred=predictor.bundle.decide(probs))
        passes = np.mean([p.in_distribution for p in preds])
        size = f"{round(200 * side / 150)}x{side}"
        print(f"| {side} ({size}) | {m['macro_auroc']:.4f} | {m['balanced_accuracy']:.3f} | "
              f"{m['malignant']['sensitivity']:.3f} / {m['malignant']['specificity']:.3f} | {passes:.3f} |", flush=True)


if __name__ == "__main__":
    main()
