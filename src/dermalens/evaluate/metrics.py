"""Classification metrics for the 7 classes and for malignant-vs-benign (scikit-learn)."""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix,
                             precision_recall_fscore_support, roc_auc_score, roc_curve)

from ..classes import CODES, MALIGNANT_CODES
from .intervals import bootstrap_intervals
from .scores import expected_calibration_error, malignancy_score  # noqa: F401  (re-exported)


def reliability_bins(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> list[dict]:
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == y
    edges = np.linspace(0, 1, bins + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        out.append({"lo": float(lo), "hi": float(hi), "count": int(sel.sum()),
                    "confidence": float(conf[sel].mean()) if sel.any() else None,
                    "accuracy": float(correct[sel].mean()) if sel.any() else None})
    return out


def threshold_for_sensitivity(score: np.ndarray, is_malignant: np.ndarray, target: float = 0.90) -> float:
    """Highest threshold whose sensitivity (score >= t among malignant) is >= target."""
    pos = np.sort(score[is_malignant])[::-1]
    if len(pos) == 0:
        raise ValueError("no malignant cases to choose a threshold on")
    k = int(np.ceil(target * len(pos))) - 1  # the k-th highest positive score keeps k+1 positives
    return float(pos[max(k, 0)])


def binary_metrics(score: np.ndarray, is_malignant: np.ndarray, threshold) -> dict:
    """`threshold`: one number, or one per image (results with and without metadata mixed); then the
    reported threshold is the most common one."""
    pred = score >= threshold
    tp, fn = int((pred & is_malignant).sum()), int((~pred & is_malignant).sum())
    tn, fp = int((~pred & ~is_malignant).sum()), int((pred & ~is_malignant).sum())
    if np.ndim(threshold):
        values, counts = np.unique(threshold, return_counts=True)
        threshold = values[np.argmax(counts)] if len(values) else np.nan
    out = {"threshold": float(threshold), "tp": tp, "fn": fn, "tn": tn, "fp": fp,
           "sensitivity": tp / (tp + fn) if tp + fn else None,
           "specificity": tn / (tn + fp) if tn + fp else None}
    if 0 < is_malignant.sum() < len(is_malignant):
        out["auroc"] = float(roc_auc_score(is_malignant, score))
    return out


def classification_metrics(y: np.ndarray, probs: np.ndarray, codes=CODES,
                           malignant_threshold: float | None = None, pred: np.ndarray | None = None,
                           groups=None) -> dict:
    """Everything we report for a labelled set. Classes absent from `y` get no recall/AUROC
    (a set may hold only some of the 7 classes); macro figures average the present ones.
    `pred` are the model's decisions (its decision rule); by default the most probable class.
    AUROC, ECE and the malignancy figures use the probabilities. With `groups` (each image's
    lesion), the headline figures also get 95 % intervals from a lesion bootstrap."""
    with warnings.catch_warnings():
        # a set may hold only some classes (or one): sklearn's warnings about that ("y_pred contains classes not
        # in y_true", "a single label was found") would reach the user with a site-packages path; the figures
        # that such a set cannot define are None here and explained by undefined_figures
        warnings.filterwarnings("ignore", category=UserWarning, module="sklearn")
        return _classification_metrics(y, probs, codes, malignant_threshold, pred, groups)


def _classification_metrics(y, probs, codes, malignant_threshold, pred, groups) -> dict:
    y = np.asarray(y)
    pred = probs.argmax(axis=1) if pred is None else np.asarray(pred)
    labels = list(range(len(codes)))
    present = sorted(set(y.tolist()))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    predicted = np.bincount(pred.astype(int), minlength=len(codes))
    per_class = {}
    aurocs = {}
    for i, c in enumerate(codes):
        # "precision" stays a number (0.0 when no image was predicted as the class: 0 of 0) for the readers
        # that format it; "predicted" says when it is 0 of 0, which the report shows as n/a
        entry = {"precision": float(p[i]), "recall": float(r[i]) if s[i] else None,
                 "f1": float(f[i]) if s[i] else None, "support": int(s[i]), "predicted": int(predicted[i])}
        if 0 < s[i] < len(y):
            aurocs[c] = float(roc_auc_score(y == i, probs[:, i]))
            entry["auroc"] = aurocs[c]
        per_class[c] = entry
    out = {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if present else None,
        "macro_auroc": float(np.mean(list(aurocs.values()))) if aurocs else None,
        "macro_f1": float(np.mean([per_class[codes[i]]["f1"] for i in present])),
        "ece": expected_calibration_error(probs, y),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y, pred, labels=labels).tolist(),
        "classes_present": [codes[i] for i in present],
    }
    is_mal = np.array([codes[i] in MALIGNANT_CODES for i in y])
    score = malignancy_score(probs, codes)
    if malignant_threshold is not None:
        out["malignant"] = binary_metrics(score, is_mal, malignant_threshold)
    elif 0 < is_mal.sum() < len(is_mal):
        out["malignant"] = {"auroc": float(roc_auc_score(is_mal, score))}
    if groups is not None:
        out["intervals"] = bootstrap_intervals(y, probs, pred, groups, codes, malignant_threshold)
    return out


def undefined_figures(m: dict) -> list[str]:
    """Why figures of `classification_metrics` are n/a (None) for this set, one sentence each; empty when all
    are defined. A set may hold only some classes, so these are answers, not errors."""
    present = m.get("classes_present", [])
    out = []
    if len(present) < 2:
        out.append(f"macro AUROC needs images of at least two classes (this set has {', '.join(present) or 'none'})")
    has_malignant = any(c in MALIGNANT_CODES for c in present)
    if not has_malignant:
        out.append(f"malignant AUROC and sensitivity need malignant images ({', '.join(sorted(MALIGNANT_CODES))}); "
                   "this set has none")
    if has_malignant and all(c in MALIGNANT_CODES for c in present):
        out.append("malignant AUROC and specificity need benign images; this set has none")
    return out


def roc_points(y: np.ndarray, probs: np.ndarray, codes=CODES) -> dict:
    """Per-class one-vs-rest ROC curves (for plots)."""
    curves = {}
    for i, c in enumerate(codes):
        if 0 < (y == i).sum() < len(y):
            fpr, tpr, _ = roc_curve(y == i, probs[:, i])
            curves[c] = (fpr, tpr)
    return curves
