"""Figures per patient subgroup (age band, sex, body-site group), each with lesion-bootstrap intervals.

A group with fewer than MIN_CASES malignant or benign images is flagged too small to judge: its
sensitivity or specificity would move by more than about +-0.15 from one sample to the next."""
from __future__ import annotations

import numpy as np

from ..classes import MALIGNANT_CODES
from ..inference.metadata import PatientMetadata
from .intervals import bootstrap_intervals
from .metrics import malignancy_score

MIN_CASES = 20
AGE_BANDS = (("< 30", 0, 30), ("30-49", 30, 50), ("50-69", 50, 70), (">= 70", 70, 1000))
SITE_GROUPS = {
    "head and neck": ("face", "scalp", "ear", "neck"),
    "trunk": ("back", "chest", "abdomen", "trunk"),
    "upper limb": ("upper extremity", "hand"),
    "lower limb": ("lower extremity", "foot"),
    "acral and genital": ("acral", "genital"),
}
UNKNOWN = "not given"


def age_group(m: PatientMetadata | None) -> str:
    if m is None or m.age is None:
        return UNKNOWN
    return next(name for name, lo, hi in AGE_BANDS if lo <= m.age < hi)


def sex_group(m: PatientMetadata | None) -> str:
    return UNKNOWN if m is None or m.sex is None else m.sex


def site_group(m: PatientMetadata | None) -> str:
    if m is None or m.site is None:
        return UNKNOWN
    return next(g for g, sites in SITE_GROUPS.items() if m.site in sites)


GROUPINGS = {"age": (age_group, [b[0] for b in AGE_BANDS] + [UNKNOWN]),
             "sex": (sex_group, ["female", "male", UNKNOWN]),
             "site": (site_group, list(SITE_GROUPS) + [UNKNOWN])}


def subgroup_metrics(y, probs, pred, lesions, metas, codes, threshold, resamples: int = 1000) -> dict:
    """{grouping: {group: figures}} for the groups that hold any image."""
    y, probs, pred, lesions = np.asarray(y), np.asarray(probs), np.asarray(pred), np.asarray(lesions)
    is_mal = np.isin(np.asarray(codes)[y], list(MALIGNANT_CODES))
    score = malignancy_score(probs, codes)
    per_row = np.ndim(threshold) > 0
    out = {"min_cases": MIN_CASES, "rule": f"a group with fewer than {MIN_CASES} malignant or {MIN_CASES} benign "
                                           "images is flagged too small to judge", "groups": {}}
    for grouping, (of, names) in GROUPINGS.items():
        labels = np.array([of(m) for m in metas])
        table = {}
        for name in names:
            sel = labels == name
            if not sel.any():
                continue
            t = np.asarray(threshold)[sel] if per_row else threshold
            flagged = score[sel] >= t
            m_sel, b_sel = is_mal[sel], ~is_mal[sel]
            present = np.unique(y[sel])
            entry = {"n": int(sel.sum()), "lesions": int(len(np.unique(lesions[sel]))),
                     "malignant": int(m_sel.sum()), "benign": int(b_sel.sum()),
                     "balanced_accuracy": float(np.mean([(pred[sel][y[sel] == k] == k).mean() for k in present])),
                     "malignant_sensitivity": float(flagged[m_sel].mean()) if m_sel.any() else None,
                     "malignant_specificity": float((~flagged[b_sel]).mean()) if b_sel.any() else None,
                     "too_small": bool(min(m_sel.sum(), b_sel.sum()) < MIN_CASES)}
            ci = bootstrap_intervals(y[sel], probs[sel], pred[sel], lesions[sel], codes, t, resamples=resamples)
            entry["malignant_auroc"] = _auroc(m_sel, score[sel])
            entry["intervals"] = {k: ci.get(k) for k in ("balanced_accuracy", "malignant_sensitivity",
                                                         "malignant_specificity", "malignant_auroc")}
            table[name] = entry
        out["groups"][grouping] = table
    return out


def _auroc(pos: np.ndarray, score: np.ndarray) -> float | None:
    if not 0 < pos.sum() < len(pos):
        return None
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(pos, score))
