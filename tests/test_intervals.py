"""Lesion-grouped bootstrap intervals: right figures, right grouping, reproducible."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dermalens.classes import CODES
from dermalens.evaluate.intervals import _auroc, bootstrap_intervals, headline_figures, with_interval
from dermalens.evaluate.metrics import classification_metrics


def _sample(n, seed=0, signal=2.0):
    """A noisy but informative 7-class classifier on n cases, every class present."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(7), rng.integers(0, 7, n - 7)])
    logits = rng.normal(size=(n, 7))
    logits[np.arange(n), y] += signal
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs, probs.argmax(axis=1)


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    score = rng.integers(0, 5, 300).astype(float)  # many ties
    positive = rng.random(300) < 0.3
    assert _auroc(positive, score) == pytest.approx(roc_auc_score(positive, score), abs=1e-12)


def test_headline_figures_agree_with_classification_metrics():
    y, probs, pred = _sample(400)
    m = classification_metrics(y, probs, CODES, malignant_threshold=0.4, pred=pred)
    h = headline_figures(y, probs, pred, CODES, 0.4)
    for key in ("accuracy", "balanced_accuracy", "macro_auroc", "ece"):
        assert h[key] == pytest.approx(m[key], abs=1e-12), key
    assert h["malignant_auroc"] == pytest.approx(m["malignant"]["auroc"], abs=1e-12)
    assert h["malignant_sensitivity"] == pytest.approx(m["malignant"]["sensitivity"])
    assert h["malignant_specificity"] == pytest.approx(m["malignant"]["specificity"])


def test_intervals_contain_the_estimate_shrink_with_n_and_repeat():
    y, probs, pred = _sample(300)
    small = bootstrap_intervals(y, probs, pred, np.arange(300), threshold=0.4, resamples=300)
    point = headline_figures(y, probs, pred, CODES, 0.4)
    for f in ("balanced_accuracy", "macro_auroc", "malignant_sensitivity", "malignant_specificity"):
        lo, hi = small[f]
        assert lo < point[f] < hi, f
    y4, probs4, pred4 = _sample(4800, seed=3)
    large = bootstrap_intervals(y4, probs4, pred4, np.arange(4800), threshold=0.4, resamples=300)
    width = {k: v[1] - v[0] for k, v in small.items() if isinstance(v, list)}
    assert all(large[k][1] - large[k][0] < 0.6 * width[k] for k in width)  # ~1/sqrt(16) of the width
    again = bootstrap_intervals(y, probs, pred, np.arange(300), threshold=0.4, resamples=300)
    assert again == small


def test_images_of_one_lesion_are_resampled_together():
    """Six copies of each lesion carry no more information than one: grouped by lesion, the
    interval matches the one-image-per-lesion interval; treated as independent images it is
    far too narrow."""
    y, probs, pred = _sample(200)
    single = bootstrap_intervals(y, probs, pred, np.arange(200), threshold=0.4, resamples=400)
    rep = lambda a: np.repeat(a, 6, axis=0)  # noqa: E731
    grouped = bootstrap_intervals(rep(y), rep(probs), rep(pred), rep(np.arange(200)), threshold=0.4, resamples=400)
    naive = bootstrap_intervals(rep(y), rep(probs), rep(pred), np.arange(1200), threshold=0.4, resamples=400)
    assert grouped["groups"] == 200 and naive["groups"] == 1200
    for f in ("balanced_accuracy", "macro_auroc"):
        w_single, w_grouped = single[f][1] - single[f][0], grouped[f][1] - grouped[f][0]
        assert w_grouped == pytest.approx(w_single, rel=0.25), f
        assert naive[f][1] - naive[f][0] < 0.6 * w_grouped, f


def test_figures_a_sample_cannot_define_get_no_interval():
    y = np.zeros(50, int)  # one class only (akiec, malignant): no AUROC, no specificity
    probs = np.full((50, 7), 1 / 7)
    out = bootstrap_intervals(y, probs, y, np.arange(50), threshold=0.5, resamples=50)
    assert out["macro_auroc"] is None and out["malignant_auroc"] is None and out["malignant_specificity"] is None
    assert out["accuracy"] == [1.0, 1.0]
    no_threshold = bootstrap_intervals(y, probs, y, np.arange(50), resamples=20)
    assert no_threshold["malignant_sensitivity"] is None


def test_with_interval_formats_value_and_interval():
    m = {"macro_auroc": 0.9316, "malignant": {"sensitivity": 0.872},
         "intervals": {"macro_auroc": [0.9102, 0.9501], "malignant_sensitivity": None}}
    assert with_interval(m, "macro_auroc") == "0.932 (95 % CI 0.910-0.950)"
    assert with_interval(m, "malignant_sensitivity") == "0.872"
    assert with_interval(m, "malignant_auroc") == "n/a"
