"""Fit the patient-metadata model (inference.metadata) on the training split: one multinomial logistic
regression per subset of fields, on the training images whose fields of that subset are all given.
Saved as plain arrays (metadata.npz); no pickle."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from ..inference.metadata import AGE_EDGES, FIELDS, SEXES, SITES, PatientMetadata, all_subsets, encode, subset_key

C = 1.0  # L2 strength, fixed in advance (sklearn's default); not tuned
MODEL_TEXT = ("multinomial logistic regression (scikit-learn, L2, C=1.0) on one-hot age band (< 10, 10-19, ..., "
              ">= 80), sex (male, female) and body site (HAM10000 localization vocabulary), one model per subset of "
              "the fields given, fitted on the training split's images that give those fields; applied log-linearly: "
              "p(class | image) * (p(class | metadata) / p(class)) ** weight, renormalised")


def fit_metadata_model(metas: list[PatientMetadata], y: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """Arrays coef_<key>, intercept_<key>, log_prior_<key> for every non-empty subset of FIELDS.
    A class absent from a subset's rows gets a very low metadata probability (it was never seen)."""
    y = np.asarray(y)
    arrays = {}
    for fields in all_subsets():
        rows = [i for i, m in enumerate(metas) if all(getattr(m, f) is not None for f in fields)]
        key = subset_key(fields)
        if not rows:
            raise ValueError(f"no training image gives {key}: cannot fit the metadata model")
        x = np.stack([encode(metas[i], fields) for i in rows])
        yy = y[rows]
        counts = np.bincount(yy, minlength=n_classes).astype(float)
        coef = np.zeros((n_classes, x.shape[1]))
        intercept = np.full(n_classes, -20.0)
        seen = np.flatnonzero(counts)
        if len(seen) == 1:
            intercept[seen] = 0.0
        else:
            lr = LogisticRegression(C=C, max_iter=5000).fit(x, yy)
            coef[lr.classes_] = lr.coef_ if len(lr.classes_) > 2 else np.vstack([-lr.coef_, lr.coef_]) / 2
            intercept[lr.classes_] = (lr.intercept_ if len(lr.classes_) > 2
                                      else np.concatenate([-lr.intercept_, lr.intercept_]) / 2)
        arrays[f"coef_{key}"] = coef
        arrays[f"intercept_{key}"] = intercept
        arrays[f"log_prior_{key}"] = np.log(np.maximum(counts, 0.5) / counts.sum())
        arrays[f"rows_{key}"] = np.array(len(rows))
    return arrays


def save_metadata_model(arrays: dict, path: Path) -> None:
    np.savez(path, **arrays)


def vocabulary() -> dict:
    return {"fields": list(FIELDS), "age_band_edges": list(AGE_EDGES), "sexes": list(SEXES), "sites": list(SITES),
            "missing": "a field not given (or 'unknown') is marginalised: the model of the fields given is used"}
