"""Fit the modality gate (dermoscopic or not) and measure it on every collection it can be checked on.

Steps, each fixed before any held-out figure was read:
1. features: every image is preprocessed exactly as the classifier would read it (the bundle's spec),
   then `gate.onnx` turns that view into channel statistics. The `fit` part is shown several times,
   augmented (train.modality_augment); `check` and `heldout` once, as they are;
2. classifier: a logistic regression (scikit-learn) on standardised features; each collection weighs the
   same in the fit, whatever its size, so HAM10000 does not drown the other sources;
3. threshold: the highest at which every dermoscopic check set (HAM10000 validation overall and per class,
   isic_archive check) still passes at the target rate;
4. figures: pass / flag rates per collection and part, written into the card.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data.modality_sets import DERMOSCOPIC, PARTS, GateImage  # noqa: F401 (PARTS: re-exported for export)
from ..evaluate.gate_figures import print_rates, rates  # noqa: F401 (the fit prints and records them)
from ..evaluate.ood_set import skimage_photos, synthetic_images
from ..inference.modality import ModalityGate
from ..preprocess import PreprocessSpec, load_rgb
from .modality_augment import augment_clinical, augment_dermoscopic, composite, device_overlay

# How many augmented views of each fit image: the clinical sets are small and the hard side.
FIT_VIEWS = {"ham10000": 1, "isic_archive": 2, "pad_ufes_20": 4, "sd198_clinical": 4, "photos": 12}
COMPOSITES = {"fit": 2000, "check": 600}  # screen captures, document figures and collages built from each part
OVERLAID = {"fit": 1000, "check": 300}  # dermoscopy with a device's overlays: the composite check's positives too
PASS_TARGET = 0.985  # share of each dermoscopic check set that must pass (per HAM10000 class: CLASS_PASS_TARGET)
CLASS_PASS_TARGET = 0.95
C = 0.1  # inverse L2 strength of the logistic regression
SEED = 0
HEAD_PASS_TARGET, HEAD_CLASS_PASS_TARGET = 0.995, 0.98  # the composite check may cost half a point of dermoscopy


def _views(item: GateImage, index: int) -> list[Image.Image]:
    """The image as it is; for the fit part, augmented views as well (FIT_VIEWS)."""
    img = load_rgb(item.path)
    if item.part != "fit":
        return [img]
    rng = np.random.default_rng([SEED, index])
    aug = augment_dermoscopic if item.label == DERMOSCOPIC else augment_clinical
    n = FIT_VIEWS[item.set]
    if n == 1:
        return [aug(img, rng) if rng.random() < 0.5 else img]
    return [img] + [aug(img, rng) for _ in range(n - 1)]


def extract(items: list[GateImage], net_spec: PreprocessSpec, gate: ModalityGate, cache: Path | None = None,
            threads: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Features of every view of every item -> (features V x D, item index of each view V)."""
    if cache and cache.is_file():
        z = np.load(cache)
        return z["features"], z["index"]

    def prepare(i):
        return i, np.stack([net_spec.to_uint8(v) for v in _views(items[i], i)])

    feats, index = [], []
    with ThreadPoolExecutor(threads) as pool:
        for i, pixels in tqdm(pool.map(prepare, range(len(items))), total=len(items), desc="gate features",
                              mininterval=5):
            feats.append(gate.features(pixels))
            index += [i] * len(pixels)
    out = np.concatenate(feats).astype(np.float32), np.asarray(index)
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, features=out[0], index=out[1])
    return out


def _drawn_views(items: list[GateImage], part: str, net_spec: PreprocessSpec, n: int, salt: list[int], draw,
                 desc: str, threads: int) -> np.ndarray:
    """The classifier's views of `n` pictures drawn from the part's dermoscopy, each from its own seed:
    draw(pick, i, rng), where pick(j) is the j-th item of the part's shuffled dermoscopy (wrapping round)."""
    base = [it for it in items if it.part == part and it.label == DERMOSCOPIC]
    order = np.random.default_rng([SEED, PARTS.index(part), *salt]).permutation(len(base))

    def prepare(i):
        rng = np.random.default_rng([SEED, PARTS.index(part), *salt, i])
        return net_spec.to_uint8(draw(lambda j: base[order[j % len(base)]], i, rng))

    with ThreadPoolExecutor(threads) as pool:
        return np.stack(list(tqdm(pool.map(prepare, range(n)), total=n, desc=desc, mininterval=5)))


def _cached_features(cache: Path | None, views) -> np.ndarray:
    """gate features of views() (a callable: not drawn at all when the cache has them), kept in `cache`."""
    if cache and cache.is_file():
        return np.load(cache)["features"]
    out = views().astype(np.float32)
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, features=out)
    return out


def composite_views(items: list[GateImage], part: str, net_spec: PreprocessSpec, threads: int = 2) -> np.ndarray:
    """The classifier's views of COMPOSITES[part] composites (train.modality_augment.composite) of the part's
    dermoscopy."""
    def draw(pick, i, rng):  # the first, and a collage's others after it
        return composite(load_rgb(pick(9 * i).path), lambda: [load_rgb(pick(9 * i + k).path) for k in range(1, 9)],
                         rng)
    return _drawn_views(items, part, net_spec, COMPOSITES[part], [], draw, f"composites ({part})", threads)


def composite_features(items: list[GateImage], part: str, net_spec: PreprocessSpec, gate: ModalityGate,
                       cache: Path | None = None, threads: int = 2) -> np.ndarray:
    """Features of composite_views: fit-part ones are negatives of the fit, check-part ones measure it."""
    return _cached_features(cache, lambda: gate.features(composite_views(items, part, net_spec, threads)))


def overlaid_features(items: list[GateImage], part: str, net_spec: PreprocessSpec, gate: ModalityGate,
                      cache: Path | None = None, threads: int = 2) -> np.ndarray:
    """Features of OVERLAID[part] images of the part's dermoscopy carrying a device's overlays
    (modality_augment.device_overlay): fit-part ones are positives of the composite check, check-part ones measure
    it."""
    def draw(pick, i, rng):
        return device_overlay(load_rgb(pick(i).path), rng)
    return _cached_features(cache, lambda: gate.features(_drawn_views(
        items, part, net_spec, OVERLAID[part], [1], draw, f"overlaid dermoscopy ({part})", threads)))


def photo_negatives(net_spec: PreprocessSpec, gate: ModalityGate) -> np.ndarray:
    """Features of everyday photos (scikit-image's) and synthetic images, augmented: fit-only negatives."""
    rng = np.random.default_rng(SEED)
    views = []
    for arr in {**skimage_photos(), **synthetic_images()}.values():
        img = Image.fromarray(arr).convert("RGB")
        views += [img] + [augment_clinical(img, rng) for _ in range(FIT_VIEWS["photos"] - 1)]
    return gate.features(np.stack([net_spec.to_uint8(v) for v in views]))


def fit_classifier(X: np.ndarray, y: np.ndarray, weight: np.ndarray) -> dict:
    """Standardise, fit a logistic regression; returns plain arrays (mean, scale, W0, b0) that
    inference.modality.ModalityGate reads as a one-layer network."""
    from sklearn.linear_model import LogisticRegression
    mean, scale = X.mean(axis=0), X.std(axis=0) + 1e-6
    clf = LogisticRegression(C=C, max_iter=2000).fit((X - mean) / scale, y, sample_weight=weight)
    return {"mean": mean.astype(np.float32), "scale": scale.astype(np.float32),
            "W0": clf.coef_.T.astype(np.float32), "b0": clf.intercept_.astype(np.float32)}


def set_weights(sets: list[str]) -> np.ndarray:
    """Each collection weighs the same in the fit (dermoscopic and not, each half)."""
    sets = np.asarray(sets)
    w = np.ones(len(sets))
    for s in np.unique(sets):
        w[sets == s] = 1.0 / (sets == s).sum()
    return w / w.mean()


def fit_composite_check(weights: dict, dermoscopic: np.ndarray, composites: np.ndarray) -> dict:
    """A logistic regression on the check's standardised features: dermoscopy (1) against composites (0),
    each side weighing the same. Returns {"W": D x 1, "b": 1} on the standardised features."""
    from sklearn.linear_model import LogisticRegression
    X = (np.concatenate([dermoscopic, composites]) - weights["mean"]) / weights["scale"]
    y = np.r_[np.ones(len(dermoscopic), int), np.zeros(len(composites), int)]
    w = np.where(y == 1, 0.5 / len(dermoscopic), 0.5 / len(composites)) * len(y)
    clf = LogisticRegression(C=C, max_iter=2000).fit(X, y, sample_weight=w)
    return {"W": clf.coef_.T.astype(np.float32), "b": clf.intercept_.astype(np.float32)}


def head_probability(weights: dict, head: dict, feats: np.ndarray) -> np.ndarray:
    h = (feats.astype(np.float32) - weights["mean"]) / weights["scale"]
    return 1.0 / (1.0 + np.exp(-(h @ head["W"] + head["b"])[:, 0].astype(np.float64)))


def both_checks(weights: dict, head: dict, threshold: float, head_threshold: float) -> dict:
    """One ReLU network for inference.modality: z = L + min(u, v), u = check logit - L, v = composite logit - L2
    (L, L2: the thresholds' logits), written min(u, v) = relu(u) - relu(-u) - relu(u - v). Where the composite
    check passes by more than the check does, z is the check's own logit. margins_W, margins_b give u and v
    themselves, so the runtime can say which check refused (inference.modality.GateScores)."""
    logit = lambda p: float(np.log(p / (1 - p)))  # noqa: E731
    L, L2 = logit(threshold), logit(head_threshold)
    w1, c1 = weights["W0"][:, :1], float(weights["b0"][0]) - L
    w2, c2 = head["W"], float(head["b"][0]) - L2
    return {"mean": weights["mean"], "scale": weights["scale"],
            "W0": np.concatenate([w1, -w1, w1 - w2], axis=1).astype(np.float32),
            "b0": np.array([c1, -c1, c1 - c2], np.float32),
            "W1": np.array([[1.0], [-1.0], [-1.0]], np.float32), "b1": np.array([L], np.float32),
            "margins_W": np.concatenate([w1, w2], axis=1).astype(np.float32), "margins_b": np.array([c1, c2], np.float32)}


def choose_threshold(p: np.ndarray, items: list[GateImage], target_all: float = PASS_TARGET,
                     target_class: float = CLASS_PASS_TARGET) -> float:
    """Highest threshold at which every dermoscopic check set passes at `target_all` (each HAM10000 class at
    `target_class`): the strictest gate that still reads the dermoscopy it was checked on."""
    limits = []
    groups: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        if it.part == "check" and it.label == DERMOSCOPIC:
            groups.setdefault(it.set, []).append(i)
            if it.set == "ham10000":
                groups.setdefault(f"ham10000/{it.stratum}", []).append(i)
    for name, idx in groups.items():
        target = target_class if "/" in name else target_all
        # the largest t with mean(p >= t) >= target: at most k = floor((1 - target) n) images may fall below it
        scores = np.sort(p[idx])
        k = int(np.floor((1 - target) * len(scores) + 1e-9))
        limits.append(float(scores[k]))
    return min(limits)
