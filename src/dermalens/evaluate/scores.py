"""The two scores both the metrics and their bootstrap intervals are built on (one module each imports)."""
from __future__ import annotations

import numpy as np

from ..classes import CODES, MALIGNANT_CODES


def malignancy_score(probs: np.ndarray, codes=CODES) -> np.ndarray:
    """P(malignant) = sum of the calibrated probabilities of mel, bcc and akiec."""
    mask = np.array([c in MALIGNANT_CODES for c in codes])
    return probs[:, mask].sum(axis=1)


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)
