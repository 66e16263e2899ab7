"""Out-of-distribution gate: is this a dermoscopic lesion image at all?

Four checks, any of which flags an image (each reason carries a stable code, `Reason.code`):
* modality: a separate small model says whether the picture is dermoscopic at all (inference.modality);
* exposure: the resized image is nearly black, nearly white, nearly uniform, or has no colour
  (a greyscale picture: every HAM10000 image is in colour, and the network answers a greyscale
  lesion as confidently as a colour one, so only this check can turn it away);
* size: the image as sent (or its part inside a dark frame, which is all the view shows) is smaller than the
  model can read (its short side below `MIN_SHORT_SIDE`; a thumbnail upscaled to the input size);
* feature distance: the smallest Mahalanobis distance of the image's pooled features to
  any class mean of the training split (shared Ledoit-Wolf covariance, after Lee et al.
  2018). Its threshold lets at least 95 % of validation images pass on average over the
  classes (`balanced_pass_threshold`), so the rare classes are not the ones it turns away.
"""
from __future__ import annotations

import numpy as np

# min_chroma: mean over pixels of max(R, G, B) - min(R, G, B). Greyscale images score 0 (saved as colour
# JPEG, well under 1); the least colourful of the 10,015 HAM10000 images scores 6.0 and 99.9 % score above
# 11.6 as bundle 2.3.0 preprocesses them (5.2 and 11.2 on whole frames; `.venv/bin/python
# experiments/decide_min_chroma.py`), so 2.0 turns away grey pictures and no dermoscopic image.
# min_std: a first guess, set for each bundle from the fit parts' dermoscopy by export.blank_rule (a step of make export).
EXPOSURE_RULES = {"min_mean": 20.0, "max_mean": 235.0, "min_std": 6.0, "min_chroma": 2.0}

# Shortest side, in pixels of the image as sent, below which no assessment is given: the smallest size at
# which the shipped model's validation figures held up when validation images were shrunk
# (`.venv/bin/python experiments/decide_min_short_side.py`; rule and table in docs/decisions/input-checks.md).
MIN_SHORT_SIDE = 112


class Reason(str):
    """Why an image is not assessed: the message a user reads, carrying a stable machine `code` that clients
    can branch on (the message may be reworded; the code is not)."""
    code: str

    def __new__(cls, code: str, message: str):
        r = super().__new__(cls, message)
        r.code = code
        return r

    def to_dict(self) -> dict:
        return {"code": self.code, "message": str(self)}


NOT_DERMOSCOPIC = Reason("not_dermoscopic", "This looks like an ordinary photo, not a dermoscopic image. "
                                            "dermalens only reads dermoscopic images")
COMPOSITE_IMAGE = Reason("composite_image", "This looks like a screenshot, a figure from a document or several images "
                                            "put together, not one dermoscopic image. Send the dermoscopic image file "
                                            "itself, one lesion per picture")
UNLIKE_TRAINING = Reason("unlike_training", "image features are unlike the dermoscopic training images")


def luminance(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def luminance_std(pixels: np.ndarray) -> float:
    """What the blank check compares with `min_std` (export.blank_rule sets it from this)."""
    return float(luminance(pixels).std())


def exposure_reasons(pixels: np.ndarray, rules: dict = EXPOSURE_RULES) -> list[str]:
    """Reasons an HxWx3 uint8 image is unusable by its exposure or colour alone. `min_chroma` is not
    applied when `rules` lacks it (the card of a bundle exported before the rule existed)."""
    lum = luminance(pixels)
    reasons = []
    if lum.mean() < rules["min_mean"]:
        reasons.append(Reason("too_dark", "image is too dark (under-exposed)"))
    elif lum.mean() > rules["max_mean"]:
        reasons.append(Reason("too_bright", "image is too bright (over-exposed)"))
    if lum.std() < rules["min_std"]:
        reasons.append(Reason("blank", "image is nearly uniform (blank)"))
    if "min_chroma" in rules and mean_chroma(pixels) < rules["min_chroma"]:
        reasons.append(Reason("greyscale", "image has no colour (greyscale); the model knows only colour dermoscopic "
                                           "images"))
    return reasons


def size_reasons(width: int, height: int, min_short_side: int | None, framed: bool = False) -> list[str]:
    """Reasons an image of this size (as sent, or of its part inside a dark frame: `framed`; before the resize) is
    too small to assess."""
    if min_short_side and min(width, height) < min_short_side:
        what = "the image inside its dark frame is" if framed else "image is"
        return [Reason("too_small", f"{what} only {width}x{height} pixels; below {min_short_side} pixels on the "
                                    "short side the model's accuracy drops, so it is not assessed")]
    return []


def mean_chroma(pixels: np.ndarray) -> float:
    """Mean over the pixels of max(R, G, B) - min(R, G, B), for uint8 HxWx3."""
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]  # element-wise: a reduction over a 3-long axis is slow
    return float((np.maximum(np.maximum(r, g), b).astype(np.int16) - np.minimum(np.minimum(r, g), b)).mean())


def fit_gate(train_pooled: np.ndarray, train_labels: np.ndarray, n_classes: int) -> dict:
    from sklearn.covariance import LedoitWolf
    means = np.stack([train_pooled[train_labels == c].mean(axis=0) for c in range(n_classes)])
    centred = train_pooled - means[train_labels]
    lw = LedoitWolf().fit(centred)
    return {"means": means.astype(np.float32), "precision": lw.precision_.astype(np.float32)}


def balanced_pass_threshold(scores: np.ndarray, labels: np.ndarray, rate: float = 0.95) -> float:
    """Lowest threshold at which the mean over classes of the share of images passing is >= rate.

    Why not the plain 95th percentile: two thirds of HAM10000 are nevi, which lie closest to their
    class mean, so that percentile is set by nevi. For Lite2 at 256x341 it passed 98 % of
    validation nevi but 61 % of vascular lesions and 80 % of actinic keratoses.
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels)
    classes = np.unique(labels)
    if not len(scores):
        raise ValueError("no validation scores to set the OOD threshold on")
    for t in np.unique(scores):  # ascending; the balanced pass rate only grows with t
        if np.mean([(scores[labels == c] <= t).mean() for c in classes]) >= rate:
            return float(t)
    return float(scores.max())


def whiten(gate: dict) -> dict:
    """Precompute L (precision = L L^T) and the whitened class means, once per model:
    then (f - m)^T P (f - m) = |f L - m L|^2 costs one C x C product per image, not K."""
    if "L" not in gate:
        # Any L with L L^T = P gives the same distances. Not Cholesky: a precision matrix with a
        # wide eigenvalue range (Lite2's 1280 pooled ReLU6 features) loses positive definiteness
        # when stored as float32; the eigen-decomposition tolerates that by clipping the round-off.
        P = gate["precision"].astype(np.float64)
        w, V = np.linalg.eigh((P + P.T) / 2)
        L = (V * np.sqrt(np.clip(w, w.max() * 1e-12, None))).astype(np.float32)
        gate = {**gate, "L": L, "means_w": gate["means"] @ L}
    return gate


def mahalanobis_score(pooled: np.ndarray, gate: dict) -> np.ndarray:
    """Smallest squared Mahalanobis distance to a class mean, per row (higher = stranger)."""
    gate = whiten(gate)
    fw = pooled.astype(np.float32) @ gate["L"]  # N x C
    d = fw[:, None, :] - gate["means_w"][None, :, :]  # N x K x C
    return np.einsum("nkc,nkc->nk", d, d).min(axis=1)
