"""Would the OOD gate's Gaussian model, used as a second (LDA) head, rank better blended with the network's head?

    .venv/bin/python experiments/lda_head_probe.py [--model models/dermalens-lite2]

The recorded figures are 2.1.0's; to rerun them on that bundle (now replaced by 2.2.0):
    mkdir -p /tmp/b && git archive fc71364 models/dermalens-lite2 | tar -x -C /tmp/b
    .venv/bin/python experiments/lda_head_probe.py --model /tmp/b/models/dermalens-lite2

The gate (`ood.npz`) holds the training split's class means of the pooled features and a shared precision
matrix, so logit_k = -d_k^2 / 2 + log prior_k (d_k: Mahalanobis distance to class k) is linear discriminant
analysis on the network's own features. Validation only, through the ONNX bundle: the LDA logits get a
temperature fitted on validation, then log p = (1 - w) log p_head + w log p_LDA for each w, and the figures of
`dermalens.evaluate.compare.validation_figures`. About 4 minutes on 2 CPU cores. Nothing is saved.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from dermalens import DEFAULT_MODEL
from dermalens.cli import DEFAULT_DATA
from dermalens.data import load_ham10000, select_split
from dermalens.evaluate.compare import validation_figures
from dermalens.evaluate.run import decode_records
from dermalens.export.bundle import _raw
from dermalens.inference import Predictor

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def lda_logits(pooled: np.ndarray, means: np.ndarray, precision: np.ndarray, log_prior: np.ndarray) -> np.ndarray:
    diff = pooled[:, None, :].astype(np.float64) - means[None].astype(np.float64)  # N x K x C
    d2 = np.einsum("nkc,cd,nkd->nk", diff, precision.astype(np.float64), diff)
    return -0.5 * d2 + log_prior


def fit_wide_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Like calibration.fit_temperature, over a range wide enough for squared distances in 1280 dimensions,
    and with an exact log-softmax: that one clips probabilities at 1e-12, which these scores reach, and
    the clip moves the optimum (13.9 here against 10.9)."""
    def nll(log_t):
        return -log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean()
    return float(np.exp(minimize_scalar(nll, bounds=(np.log(0.05), np.log(1e6)), method="bounded").x))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--data", default=DEFAULT_DATA)
    a = ap.parse_args()
    predictor = Predictor(a.model)
    bundle, codes = predictor.bundle, predictor.bundle.codes
    records = load_ham10000(a.data)
    train, val = select_split(records, "train"), select_split(records, "val")
    pixels, val, _ = decode_records(predictor, val, desc="decode val")
    logits, pooled = _raw(bundle, pixels)
    gate = np.load(f"{a.model}/ood.npz")
    counts = np.bincount([codes.index(r.dx) for r in train], minlength=len(codes)).astype(float)
    lda = lda_logits(pooled, gate["means"], gate["precision"], np.log(counts / counts.sum()))
    y = np.array([codes.index(r.dx) for r in val])
    t_lda = fit_wide_temperature(lda, y)
    log_head = log_softmax(logits / bundle.card["temperature"], axis=1)
    log_lda = log_softmax(lda / t_lda, axis=1)
    for w in WEIGHTS:
        blended = (1 - w) * log_head + w * log_lda
        print(json.dumps({"w": w, "lda_temperature": round(t_lda, 2), **validation_figures(blended, val)}), flush=True)


if __name__ == "__main__":
    main()
