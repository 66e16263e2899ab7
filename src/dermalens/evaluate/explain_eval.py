"""How well Grad-CAM points at the lesion, measured against HAM10000's lesion masks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..inference.gradcam import gradcam, mask_agreement


def mask_path(mask_dir: Path, image_id: str) -> Path:
    return Path(mask_dir) / f"{image_id}_segmentation.png"


def gradcam_mask_scores(predictor, records, mask_dir: str | Path, batch_size: int = 64,
                        progress: bool = True) -> dict:
    """Mean share of heat-map energy inside the mask, and the pointing-game hit rate
    (the heat-map's peak lies inside the mask), for the predicted class of each image."""
    mask_dir = Path(mask_dir)
    recs = [r for r in records if mask_path(mask_dir, r.image_id).is_file()]
    if predictor.bundle.spec.resize != "stretch":
        raise ValueError("mask agreement assumes the 'stretch' resize policy (whole frame kept)")
    energies, hits = [], []
    b = predictor.bundle
    for i in tqdm(range(0, len(recs), batch_size), desc="grad-cam vs masks", disable=not progress):
        chunk = recs[i:i + batch_size]
        pixels = np.stack([predictor.load(r.path) for r in chunk])
        probs, _, maps = predictor.forward(pixels)
        for r, p, f in zip(chunk, probs, maps):
            mask = np.asarray(Image.open(mask_path(mask_dir, r.image_id)).convert("L"))
            cam = gradcam(f, b.head_weight, int(np.argmax(p)), mask.shape)
            e, h = mask_agreement(cam, mask)
            energies.append(e)
            hits.append(h)
    mask_share = [float((np.asarray(Image.open(mask_path(mask_dir, r.image_id)).convert("L")) > 0).mean())
                  for r in recs]
    return {"n": len(recs), "energy_in_mask": float(np.mean(energies)) if energies else None,
            "pointing_game": float(np.mean(hits)) if hits else None,
            "mean_mask_area_fraction": float(np.mean(mask_share)) if mask_share else None}
