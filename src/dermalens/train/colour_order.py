"""Fit the colour-order check: a dermoscopic image in its natural colours, or with red and blue exchanged
(an OpenCV array, which is BGR, sent on as RGB)?

Every choice was written down before the fit (docs/decisions/colour-order-check.md):
1. features: the image-type check's own (gate.onnx on the classifier's view), once for each dermoscopic image
   as it is and once with red and blue exchanged;
2. classifier: a logistic regression on standardised features (the image-type check's C), fitted on the fit
   part, each collection and within it each stratum (diagnosis, source) weighing the same;
3. threshold: 0.5, fixed (each image is in both orders, so the classes are balanced);
4. figures and the ship rule: on the check parts; the held-out parts are printed, not used.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data.modality_sets import GateImage
from ..evaluate.gate_figures import rates
from ..inference.modality import ModalityGate
from ..preprocess import PreprocessSpec
from .modality_gate import C

THRESHOLD = 0.5
PASS_TARGET = 0.995  # images as they are, per dermoscopic check set
CLASS_PASS_TARGET = 0.99  # ... and per HAM10000 validation class
FLAG_TARGET = 0.97  # the same check sets with red and blue exchanged
RULE_SETS = ("ham10000", "isic_archive")


def swap_red_blue(pixels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pixels[..., ::-1])


def features(items: list[GateImage], net_spec: PreprocessSpec, gate: ModalityGate, cache: Path | None = None,
             threads: int = 2, chunk: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(features of each image as it is, features of it with red and blue exchanged), N x D each."""
    if cache and cache.is_file():
        with np.load(cache) as z:
            return z["natural"], z["swapped"]

    def views(start):
        return np.stack([net_spec.to_uint8(it.path) for it in items[start:start + chunk]])

    natural, swapped = [], []
    with ThreadPoolExecutor(threads) as pool:
        starts = range(0, len(items), chunk)
        for px in tqdm(pool.map(views, starts), total=len(starts), desc="colour-order features", mininterval=5):
            natural.append(gate.features(px))
            swapped.append(gate.features(swap_red_blue(px)))
    out = np.concatenate(natural).astype(np.float32), np.concatenate(swapped).astype(np.float32)
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, natural=out[0], swapped=out[1])
    return out


def fit_classifier(natural: np.ndarray, swapped: np.ndarray, items: list[GateImage]) -> dict:
    """Plain arrays (mean, scale, W0, b0) that inference.modality reads; label 1 = colours exchanged."""
    from sklearn.linear_model import LogisticRegression
    fit = np.array([it.part == "fit" for it in items])
    X = np.concatenate([natural[fit], swapped[fit]])
    y = np.r_[np.zeros(fit.sum(), int), np.ones(fit.sum(), int)]
    fitted = [it for it, f in zip(items, fit) if f]
    mean, scale = X.mean(axis=0), X.std(axis=0) + 1e-6
    weight = np.tile(stratum_weights(fitted), 2)
    clf = LogisticRegression(C=C, max_iter=3000).fit((X - mean) / scale, y, sample_weight=weight)
    return {"mean": mean.astype(np.float32), "scale": scale.astype(np.float32),
            "W0": clf.coef_.T.astype(np.float32), "b0": clf.intercept_.astype(np.float32)}


def stratum_weights(items: list[GateImage]) -> np.ndarray:
    """Each collection weighs the same, and within it each stratum (a HAM10000 diagnosis, an isic_archive source):
    the rare red and purple vascular lesions count as much as the brown naevi (candidate 2 of the decision)."""
    sets = np.array([it.set for it in items])
    strata = np.array([f"{it.set}/{it.stratum}" for it in items])
    w = np.ones(len(items))
    for s in np.unique(sets):
        in_set = sets == s
        n_strata = len(np.unique(strata[in_set]))
        for st in np.unique(strata[in_set]):
            sel = strata == st
            w[sel] = 1.0 / (n_strata * sel.sum())
    return w / w.mean()


def figures(natural_passes: np.ndarray, swapped_passes: np.ndarray, items: list[GateImage],
            by: str = "colour-order check") -> list[dict]:
    """Pass / flag rates per collection, part and stratum, for the images as they are and exchanged."""
    table = []
    for colours, passes in (("as they are", natural_passes), ("exchanged", swapped_passes)):
        for row in rates(np.asarray(passes, float), items, 0.5):
            table.append({**row, "colours": colours, "by": by})
    return table


SCORE_COLUMNS = ("dermoscopic", "exchanged", "dermoscopic_when_swapped", "exchanged_when_swapped")


def tables(scores, items: list[GateImage], gate_threshold: float, threshold: float = THRESHOLD):
    """(this check's figures, the image-type check's with it) from ((dermoscopic, exchanged) probabilities of the
    images as they are, the same of them swapped)."""
    (derm_n, swap_n), (derm_s, swap_s) = scores
    colour_ok = [np.asarray(swap_n) < threshold, np.asarray(swap_s) < threshold]
    type_ok = [np.asarray(d) >= gate_threshold for d in (derm_n, derm_s)]
    return (figures(*colour_ok, items),
            figures(*(t & c for t, c in zip(type_ok, colour_ok)), items, "image-type check with it"))


def rule(table: list[dict]) -> list[str]:
    """The ship rule's failures on the check parts (an empty list: it holds)."""
    failures = []
    for r in table:
        if r["part"] != "check" or r["set"] not in RULE_SETS or (r["stratum"] and r["set"] != "ham10000"):
            continue
        if r["colours"] == "as they are":
            target = CLASS_PASS_TARGET if r["stratum"] else PASS_TARGET
            if r["passed"] < target:
                failures.append(f"{r['set']} check {r['stratum'] or 'overall'}: {r['passed']:.1%} of images as they "
                                f"are pass, the rule needs {target:.1%}")
        elif not r["stratum"] and r["flagged"] < FLAG_TARGET:
            failures.append(f"{r['set']} check: {r['flagged']:.1%} of exchanged images flagged, the rule needs "
                            f"{FLAG_TARGET:.0%}")
    return failures


def print_figures(table: list[dict]) -> None:
    print(f"{'by':22s} {'colours':12s} {'collection':16s} {'part':8s} {'stratum':24s} {'n':>5s} {'passed':>7s}")
    for r in table:
        print(f"{r['by']:22s} {r['colours']:12s} {r['set']:16s} {r['part']:8s} {r['stratum']:24s} {r['n']:5d} "
              f"{r['passed']:7.1%}")
