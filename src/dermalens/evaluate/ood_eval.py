"""Measure the OOD gate: pass rate in distribution, flag rate on non-dermoscopy images."""
from __future__ import annotations

import numpy as np
from PIL import Image

from .ood_set import degraded_lesions, skimage_photos, synthetic_images


def ood_images(lesion_pixels: np.ndarray | None = None, n_exposure: int = 10) -> dict[str, np.ndarray]:
    images = {**skimage_photos(), **synthetic_images()}
    if lesion_pixels is not None and len(lesion_pixels):
        images.update(degraded_lesions(lesion_pixels[:n_exposure], [f"lesion{i}" for i in range(n_exposure)]))
    return images


def evaluate_gate(predictor, in_dist: dict | None = None, lesion_pixels: np.ndarray | None = None) -> dict:
    images = ood_images(lesion_pixels)
    names = sorted(images)
    pixels = np.stack([predictor.load(Image.fromarray(images[n])) for n in names]) if names else None
    flagged = {}
    preds = predictor.predict_pixels(pixels) if names else []
    for n, p in zip(names, preds):
        flagged[n] = not p.in_distribution
    out = {"total": len(names), "flagged": int(sum(flagged.values())),
           "flagged_rate": float(np.mean(list(flagged.values()))) if names else None,
           "missed": sorted(n for n, f in flagged.items() if not f)}
    if in_dist is not None:
        out["test_pass_rate"] = in_dist["metrics"].get("ood_pass_rate")
    return out


def bundle_ood_set(bundle, data, split_file) -> dict:
    """The out-of-distribution set as export builds it (with degraded copies of the first ten test images) through
    the bundle as served: {total, flagged, missed}, what a card's modality.ood_set records."""
    from pathlib import Path

    from ..data import load_ham10000, select_split
    from ..inference import Predictor
    predictor = Predictor(bundle)
    test = select_split(load_ham10000(Path(data) / "ham10000"), "test", Path(split_file))[:10]
    ood = evaluate_gate(predictor, lesion_pixels=np.stack([predictor.load(r.path) for r in test]))
    return {k: ood[k] for k in ("total", "flagged", "missed")}
