"""Bring an existing bundle's card.json to the current form, and regenerate MODEL_CARD.md from it.

    python -m dermalens.export.upgrade_card models/dermalens-lite2 [--check]

What changes (nothing the predictions depend on: the same preprocessing, temperature and thresholds):
preprocessing in timm's terms (input_size, test_input_size, crop_pct, crop_mode), input and outputs as
structured shapes, training.hardware per stage, the recipe without machine-local settings, and a
changelog of bundle versions. Idempotent: running it again changes nothing. `--check` exits 1 if the card
is not yet in the current form (and writes nothing).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..card_terms import from_card, is_timm_form, to_card
from .card_fields import (clean_recipe, feature_shape, hardware_by_stage, structured_input, structured_outputs,
                          test_summary, to_probabilities, with_changelog)
from .model_card import save_card

# The shipped line's history, before cards carried a changelog. Each entry's figures are that bundle's own
# card (test split, single pass): `git show COMMIT:models/NAME/card.json`. docs/history.md tells the story.
HISTORY = {
    "dermalens-lite2": [
        {"version": "1.0.0", "name": "dermalens-lite0", "date": "2026-11-23", "commit": "0d682cd",
         "summary": "EfficientNet-Lite0 at 144x192, trained on 2 CPU cores"},
        {"version": "1.1.0", "name": "dermalens-lite0", "date": "2026-11-23", "commit": "97cfe62",
         "summary": "Lite0 second stage at 168x224 with EMA; decision-rule prior correction"},
        {"version": "2.0.0", "date": "2026-11-23", "commit": "75ce1c0",
         "summary": "EfficientNet-Lite2 at 224x300, trained on one GPU"},
        {"version": "2.1.0", "date": "2026-11-23", "commit": "fc71364",
         "summary": "2.0.0's weights served at 256x341 (chosen on validation); class-balanced OOD threshold"},
        {"version": "2.2.0", "date": "2026-11-23", "commit": "9a33eed",
         "summary": "2 CPU epochs distilling the Lite2 + Lite0 pair into 2.1.0's weights"},
        {"version": "2.2.1", "date": "2026-11-23", "commit": "b1798ee",
         "summary": "input checks: no colour (min_chroma) and too small (min_short_side)"},
        {"version": "2.2.2", "date": "2026-11-24", "commit": "97a598d",
         "summary": "portrait images turned to the landscape input instead of squeezed"},
        {"version": "2.3.0", "date": "2026-11-24", "commit": "c4feb00",
         "summary": "the central 90 % of each frame served (crop_pct 0.9, chosen on validation)"},
    ],
}
HISTORY_TEST = {  # (balanced accuracy, macro AUROC, malignant sensitivity, specificity) from each card above
    "1.0.0": (0.699, 0.933, 0.872, 0.730), "1.1.0": (0.730, 0.941, 0.862, 0.758),
    "2.0.0": (0.730, 0.932, 0.872, 0.758), "2.1.0": (0.726, 0.932, 0.899, 0.752),
    "2.2.0": (0.732, 0.935, 0.899, 0.756), "2.2.1": (0.732, 0.935, 0.899, 0.756),
    "2.2.2": (0.732, 0.935, 0.899, 0.756), "2.3.0": (0.719, 0.931, 0.889, 0.760),
}


def _history(name: str) -> list[dict]:
    out = []
    for e in HISTORY.get(name, []):
        e = dict(e)
        f = HISTORY_TEST.get(e["version"])
        if f:
            e["test"] = dict(zip(("balanced_accuracy", "macro_auroc", "malignant_sensitivity",
                                  "malignant_specificity"), f))
        out.append(e)
    return out


def upgrade_card(card: dict, bundle_dir: Path) -> dict:
    card = json.loads(json.dumps(card))  # a copy; the input is left as it was
    pre = card["preprocessing"]
    if not is_timm_form(pre):
        trained = (card.get("resolution") or {}).get("trained")
        card["preprocessing"] = to_card(pre, trained)
    spec = from_card(card["preprocessing"])
    served = spec["input_size"]
    card["input"] = structured_input(served, spec.get("mean", (0.5,) * 3), spec.get("std", (0.5,) * 3))
    from ..inference.members import features_member, member_entries
    if not isinstance(card.get("outputs", {}).get("logits"), dict):
        codes = [c["code"] for c in card["classes"]]
        main = next(e for e in member_entries(card) if e["name"] == features_member(card))
        card["outputs"] = structured_outputs(codes, feature_shape(Path(bundle_dir) / main["graph"],
                                                                  main.get("input_size", served)))
    card["outputs"]["logits"]["to_probabilities"] = to_probabilities(len(member_entries(card)))
    if "recipe" in card:
        card["recipe"] = clean_recipe(card["recipe"])
    training = card.get("training")
    if training and not isinstance(training.get("hardware"), list):
        training["hardware"] = hardware_by_stage(training)
    if "changelog" not in card:
        log = _history(card["name"])
        if not any(e["version"] == card["version"] for e in log):
            log.append({"version": card["version"], "date": card.get("created", "")[:10],
                        "summary": "(no changelog before this version)", "test": test_summary(card.get("metrics", {}))})
        card["changelog"] = [e for e in log if _version(e["version"]) <= _version(card["version"])]
    return card


def finish_export(card: dict, bundle_dir: Path, previous: dict | None, summary: str) -> dict:
    """The card `dermalens export` writes: the current form, with the changelog of the bundle it replaces
    (same name) carried over and this version appended. Rewrites card.json and MODEL_CARD.md."""
    bundle_dir = Path(bundle_dir)
    earlier = None
    if previous and previous.get("name") == card["name"]:
        earlier = upgrade_card(previous, bundle_dir)["changelog"] if "preprocessing" in previous else None
    card = {**card, "changelog": with_changelog(card, earlier, summary or "exported")}
    card = upgrade_card(card, bundle_dir)
    save_card(bundle_dir, card)
    return card


def _version(text: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in text.split("."))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", help="bundle folder holding card.json and model.onnx")
    ap.add_argument("--check", action="store_true", help="exit 1 if the card needs upgrading; write nothing")
    a = ap.parse_args(argv)
    bundle = Path(a.bundle)
    path = bundle / "card.json"
    if not path.is_file():
        ap.error(f"{path} not found")
    card = json.loads(path.read_text())
    new = upgrade_card(card, bundle)
    if a.check:
        print(f"{path}: {'up to date' if new == card else 'needs upgrading'}")
        return 0 if new == card else 1
    save_card(bundle, new)
    print(f"{path}: {'already up to date' if new == card else 'upgraded'}; {bundle / 'MODEL_CARD.md'} regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
