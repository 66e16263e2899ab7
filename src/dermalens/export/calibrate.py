"""The one home of calibration and operating points, all fitted on the validation split.

- temperatures: per member on its logits, then one for the whole on the log of the members' mean;
- the metadata weight (inference.metadata.fuse) on validation log-loss;
- per mode (image only, with metadata): the decision rule's prior correction, the malignancy
  threshold with a declared margin, and the high-risk threshold;
- the out-of-distribution threshold.
The rules are written here once and copied into the card (RULES), so the card says what was done.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import balanced_accuracy_score

from ..evaluate.calibration import fit_temperature
from ..evaluate.metrics import malignancy_score
from ..inference.metadata import fuse
from ..inference.ood import balanced_pass_threshold
from ..inference.softmax import decide

SENSITIVITY_TARGET = 0.90
MARGIN_LEVEL = 0.95  # the lower end of a 95 % lesion-bootstrap interval
MARGIN_RESAMPLES = 1000
TAUS = (0.0, 0.25, 0.5, 0.75, 1.0)
METADATA_WEIGHT_RANGE = (0.0, 2.0)

RULES = {
    "malignant": f"highest score whose validation sensitivity for malignant vs benign has a lesion-bootstrap "
                 f"{MARGIN_LEVEL:.0%} interval with lower end >= {SENSITIVITY_TARGET:.2f} ({MARGIN_RESAMPLES} "
                 "resamples of lesions, seed 0): the margin that keeps sensitivity >= 0.90 on unseen data",
    "high_risk": "score with specificity >= 0.95 on the validation split (never below 'malignant')",
    "ood": "lowest Mahalanobis score at which >= 95 % of the validation split's images pass on average "
           "over the classes (the plain 95th percentile would be set by nevi and turn away rare classes)",
    "decision_bias": "predicted class = argmax(log calibrated probability + decision_bias), decision_bias = "
                     "-tau * log(training-split class frequency), tau chosen for validation balanced accuracy; "
                     "the probabilities are not shifted",
    "temperature": "each member's temperature minimises its validation log-loss; the bundle's temperature, "
                   "applied to the log of the members' plain mean, minimises the ensemble's validation log-loss",
    "metadata_weight": f"w in {list(METADATA_WEIGHT_RANGE)} minimising validation log-loss of "
                       "p(image) * (p(metadata) / p(class)) ** w",
}


def member_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    return fit_temperature(logits, y)


def ensemble_temperature(mean_probs: np.ndarray, y: np.ndarray) -> float:
    """The T of softmax(log(mean) / T): temperature scaling on the log of the averaged probabilities."""
    return fit_temperature(np.log(np.maximum(mean_probs, 1e-12)), y)


def _log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.maximum(probs[np.arange(len(y)), y], 1e-12))))


def metadata_weight(probs: np.ndarray, log_ratio: np.ndarray, y: np.ndarray) -> float:
    res = minimize_scalar(lambda w: _log_loss(fuse(probs, log_ratio, w), y), bounds=METADATA_WEIGHT_RANGE,
                          method="bounded")
    return float(res.x)


def decision_bias(probs: np.ndarray, y: np.ndarray, train_counts: np.ndarray) -> tuple[float, np.ndarray, dict]:
    """(tau, bias, validation balanced accuracy by tau); ties go to the smaller tau."""
    log_prior = np.log(np.maximum(train_counts, 1) / train_counts.sum())
    taus = {tau: float(balanced_accuracy_score(y, decide(probs, -tau * log_prior))) for tau in TAUS}
    tau = max(taus, key=lambda t: (round(taus[t], 4), -t))
    return tau, (-tau * log_prior).astype(np.float32), taus


def threshold_with_margin(score: np.ndarray, is_mal: np.ndarray, groups, target: float = SENSITIVITY_TARGET,
                          level: float = MARGIN_LEVEL, resamples: int = MARGIN_RESAMPLES,
                          seed: int = 0) -> tuple[float, dict]:
    """Highest threshold t at which the lesion-bootstrap lower bound of sensitivity (score >= t among the
    malignant images) is >= target. Lesions are resampled as in evaluate.intervals."""
    score, is_mal = np.asarray(score, float), np.asarray(is_mal, bool)
    if not is_mal.any():
        raise ValueError("no malignant cases to choose a threshold on")
    _, group_of = np.unique(np.asarray(groups), return_inverse=True)
    rng = np.random.default_rng(seed)
    n_groups = group_of.max() + 1
    pos = np.flatnonzero(is_mal)
    order = pos[np.argsort(-score[pos], kind="stable")]  # malignant images, highest score first
    # how often each malignant image is drawn in each resample (its lesion's draw count)
    draws = np.stack([np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)[group_of[order]]
                      for _ in range(resamples)]).astype(float)
    totals = draws.sum(axis=1, keepdims=True)
    sens = np.cumsum(draws, axis=1) / np.maximum(totals, 1)  # sensitivity at t = k-th highest score
    lower = np.quantile(sens, (1 - level) / 2, axis=0)
    ok = np.flatnonzero(lower >= target)
    k = int(ok[0]) if len(ok) else len(order) - 1
    t = float(score[order[k]])
    flagged = score[pos] >= t
    return t, {"validation_sensitivity": float(flagged.mean()),
               "validation_sensitivity_lower_bound": float(lower[k]), "target": target, "level": level,
               "resamples": resamples, "seed": seed}


def high_risk_threshold(score: np.ndarray, is_mal: np.ndarray, t_malignant: float) -> float:
    benign = np.sort(score[~is_mal])
    return max(t_malignant, float(benign[min(len(benign) - 1, int(np.ceil(0.95 * len(benign))))]))


def operating_point(probs: np.ndarray, y: np.ndarray, groups, codes, malignant_codes, train_counts) -> dict:
    """Decision rule and thresholds for one mode (image only, or with metadata), on validation."""
    tau, bias, taus = decision_bias(probs, y, train_counts)
    score = malignancy_score(probs, codes)
    is_mal = np.isin(np.asarray(codes)[y], list(malignant_codes))
    t_op, margin = threshold_with_margin(score, is_mal, groups)
    return {"decision_bias": [float(b) for b in bias],
            "prior_correction": {"tau": tau, "validation_balanced_accuracy_by_tau": taus,
                                 "rule": RULES["decision_bias"]},
            "thresholds": {"malignant": t_op, "high_risk": high_risk_threshold(score, is_mal, t_op)},
            "malignant_margin": margin}


def ood_threshold(val_scores: np.ndarray, y_val: np.ndarray) -> float:
    return balanced_pass_threshold(val_scores, y_val, 0.95)
