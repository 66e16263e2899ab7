"""What the input probes share: the shipped bundle on the validation split's own images, and a count of the
pictures that get an answer.

Validation only; the test split is never read here.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from dermalens.data import load_ham10000, select_split
from dermalens.defaults import DEFAULT_DATA, DEFAULT_MODEL, DEFAULT_SPLIT_FILE
from dermalens.evaluate.metrics import classification_metrics
from dermalens.inference import Predictor

HEADER = ("| macro AUROC | balanced accuracy | malignant sens / spec | OOD gate passes |",
          "|---|---|---|---|")


def arguments(doc: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--split-file", type=Path, default=DEFAULT_SPLIT_FILE)
    return ap.parse_args()


def validation_images(a: argparse.Namespace) -> tuple[Predictor, np.ndarray, list[Image.Image]]:
    """The bundle's predictor, the validation labels (class indices) and the decoded RGB frames."""
    predictor = Predictor(a.model)
    records = select_split(load_ham10000(a.data), "val", a.split_file)
    codes = predictor.bundle.codes
    y = np.array([codes.index(r.dx) for r in records])
    return predictor, y, [Image.open(r.path).convert("RGB") for r in tqdm(records, desc="read")]


def measure(predictor: Predictor, y: np.ndarray, pixels: list[np.ndarray]) -> tuple[dict, float]:
    """The bundle's figures on these preprocessed images (no size check) and the share the gate passes."""
    preds = predictor.predict_pixels(np.stack(pixels))
    probs = np.stack([p.probabilities for p in preds])
    m = classification_metrics(y, probs, predictor.bundle.codes, malignant_threshold=predictor.threshold,
                               pred=predictor.bundle.decide(probs))
    return m, float(np.mean([p.in_distribution for p in preds]))


def figures(predictor: Predictor, y: np.ndarray, pixels: list[np.ndarray]) -> str:
    """One table row's cells, as HEADER names them."""
    m, passes = measure(predictor, y, pixels)
    return (f"| {m['macro_auroc']:.4f} | {m['balanced_accuracy']:.3f} | "
            f"{m['malignant']['sensitivity']:.3f} / {m['malignant']['specificity']:.3f} | {passes:.3f} |")


def answered(predictor: Predictor, pictures, quality: int = 90) -> tuple[int, str]:
    """Each picture saved as a JPEG and sent through Predictor.predict, as `dermalens predict` and the API run it:
    (how many got an answer, the reasons of the others as 'code count, ...')."""
    import io
    from collections import Counter
    count, reasons = 0, Counter()
    for picture in pictures:
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=quality)
        p = predictor.predict(buffer.getvalue())
        count += p.in_distribution
        reasons.update(r.code for r in p.ood_reasons)
    return count, ", ".join(f"{c} {k}" for c, k in reasons.most_common()) or "-"
