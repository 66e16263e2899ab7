"""`dermalens fit-colour-check`: fit the colour-order check on a bundle's image-type check and write it in.

Nothing in the bundle changes unless the ship rule of docs/decisions/colour-order-check.md holds on the check
parts; then `colour_order.npz`, the card (modality.colour_order, version, changelog) and MODEL_CARD.md are
replaced, card.json last.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..data.modality_sets import DERMOSCOPIC, gate_images
from ..inference.bundle import read_card
from ..inference.modality import COLOUR_WEIGHTS, load_gate
from ..preprocess import PreprocessSpec
from ..train import colour_order as fit
from .card_fields import with_changelog
from .model_card import write_model_card
from .target import parse_version

SCORES_FILE = "report/colour_scores.csv"
SUMMARY = ("colour-order check: a dermoscopic image with red and blue exchanged (BGR sent as RGB) is not assessed, "
           "reason colours_swapped (same networks and figures otherwise)")


def fit_colour_check_into(bundle: Path, data: Path, split_file: Path, version: str, cache: Path | None = None,
                          changes: str = "") -> tuple[dict, list[str]]:
    """(the card, the ship rule's failures). The bundle is written only when there are no failures."""
    bundle = Path(bundle)
    card = read_card(bundle)
    if parse_version(version) <= parse_version(card["version"]):
        raise ValueError(f"--version {version} is not newer than the bundle's {card['version']}: the check changes "
                         "what the bundle answers, so it is a new version")
    if "modality" not in card:
        raise ValueError(f"{bundle}: this bundle has no image-type check to add the colour-order check to")
    items = [it for it in gate_images(Path(data), Path(split_file)) if it.label == DERMOSCOPIC]
    missing = [str(it.path) for it in items if not it.path.is_file()]
    if missing:
        raise FileNotFoundError(f"{data}: {len(missing)} image(s) its labels name are missing, such as {missing[0]}")
    # fp32 onnxruntime, as the image-type check's own committed figures: the portable runtime's numbers
    gate = load_gate(bundle, {k: v for k, v in card["modality"].items() if k != "colour_order"},
                     mode="throughput", runtime="onnxruntime", precision="fp32")
    net_spec = PreprocessSpec.from_dict(card["preprocessing"])
    if cache:
        cache = Path(cache) / f"{card['name']}-gate-{card['modality']['threshold']:.6f}-{len(items)}.npz"
    natural, swapped = fit.features(items, net_spec, gate, cache)

    before = fit.figures(gate.probability_from_features(natural) >= gate.threshold,
                         gate.probability_from_features(swapped) >= gate.threshold, items, "image-type check alone")
    weights = fit.fit_classifier(natural, swapped, items)
    gate.colour = {**weights, "threshold": fit.THRESHOLD}
    scores = [gate.scores_from_features(feats) for feats in (natural, swapped)]  # (dermoscopic, exchanged) each
    table, combined = fit.tables(scores, items, gate.threshold, fit.THRESHOLD)
    fit.print_figures([r for r in before + table + combined if not r["stratum"]])
    failures = fit.rule(table)
    if failures:
        return card, failures

    card["modality"]["colour_order"] = {
        "weights": COLOUR_WEIGHTS,
        "features": "the image-type check's own (same graph, same view)",
        "classifier": {"kind": "logistic regression (scikit-learn, L2)", "C": fit.C, "inputs": "standardised features",
                       "weighting": "each collection weighs the same, and within it each HAM10000 diagnosis or "
                                    "isic_archive source",
                       "data": "the dermoscopic images of the check's fit part, each as it is and with red and blue "
                               "exchanged"},
        "threshold": fit.THRESHOLD,
        "threshold_rule": "0.5, fixed before fitting (each image is in both orders, so the classes are balanced)",
        "ship_rule": (f"check parts: images as they are pass at >= {fit.PASS_TARGET:.1%} (HAM10000 validation, "
                      f"isic_archive check) and >= {fit.CLASS_PASS_TARGET:.0%} per HAM10000 validation class; the "
                      f"same images with red and blue exchanged flagged at >= {fit.FLAG_TARGET:.0%}"),
        "reason": "colours_swapped",
        "figures": table,
        "scores": SCORES_FILE,
        "figures_with_image_type_check": combined,
        "image_type_check_alone": before,
        "decision": "docs/decisions/colour-order-check.md",
        "command": "dermalens fit-colour-check --model <bundle> --version <version>",
    }
    card["version"] = version
    card["changelog"] = with_changelog(card, card.get("changelog"), changes or SUMMARY)
    card["changelog"][-1]["date"] = dt.date.today().isoformat()
    _write(bundle, card, weights, items, scores)
    return card, []


def _write(bundle: Path, card: dict, weights: dict, items, scores) -> None:
    staging = bundle.parent / f".{bundle.name}.fit-colour-partial"
    shutil.rmtree(staging, ignore_errors=True)  # left by a run that was killed
    (staging / "report").mkdir(parents=True)
    try:
        np.savez(staging / COLOUR_WEIGHTS, **weights)
        _write_scores(staging / SCORES_FILE, items, scores)
        (staging / "card.json").write_text(json.dumps(card, indent=2) + "\n")
        write_model_card(card, staging / "MODEL_CARD.md")
        (bundle / "report").mkdir(exist_ok=True)
        for f in (COLOUR_WEIGHTS, SCORES_FILE, "MODEL_CARD.md", "card.json"):  # card.json last: it names the others
            os.replace(staging / f, bundle / f)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_scores(path: Path, items, scores) -> None:
    """Per image, the image-type check's and this check's probabilities, as it is and exchanged: every figure in
    the card follows from this file and the two thresholds (tests/test_modality.py)."""
    (derm_n, swap_n), (derm_s, swap_s) = scores
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["set", "part", "stratum", "image", *fit.SCORE_COLUMNS])
        for i, it in enumerate(items):
            w.writerow([it.set, it.part, it.stratum, it.path.name,
                        *(f"{v[i]:.6f}" for v in (derm_n, swap_n, derm_s, swap_s))])
