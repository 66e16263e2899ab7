"""Temperature scaling (Guo et al. 2017), fitted on validation logits only."""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from ..inference.softmax import softmax


def nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    p = softmax(logits, temperature)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T > 0 minimising the negative log-likelihood of softmax(logits / T)."""
    res = minimize_scalar(lambda log_t: nll(logits, y, float(np.exp(log_t))),
                          bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))
