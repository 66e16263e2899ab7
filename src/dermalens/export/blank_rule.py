"""Set the blank check's threshold (`ood.exposure_rules.min_std`) from the fit parts' dermoscopy, and measure it.

    python -m dermalens.export.blank_rule --model models/dermalens --version 3.4.1 [--data ../shared/data]

The rule (docs/decisions/input-checks.md, "Blank"): the largest whole number at which no dermoscopic image of the
fit parts (HAM10000 fit, isic_archive fit), as the bundle serves it, is refused as "nearly uniform". Printed, for
every part of the five collections (docs/data.md), how many images the check refuses with the card's threshold before
and with the new one; written into card.json (`ood.exposure_rules.min_std`, `ood.blank_figures`) and MODEL_CARD.md,
with the out-of-distribution set and the test split's share passing every check, measured again as served. Then
record the external check again (`dermalens external-check --part heldout --record-in-card`).
"""
from __future__ import annotations

import datetime as dt
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data.modality_sets import DERMOSCOPIC
from ..inference.bundle import read_card
from ..inference.ood import luminance_std
from .card_fields import with_changelog
from .layout_checks import card_step_inputs, card_step_main
from .model_card import save_card

COMMAND = "python -m dermalens.export.blank_rule --model <bundle> --version <new version>"
BLANK_CHANGES = ("the blank check's threshold (min_std) is set from the fit parts' dermoscopy, so small pale lesions "
                 "on plain skin are no longer refused as blank frames")


def blank_rows(stds: np.ndarray, items: list, before: float, after: float) -> list[dict]:
    """One row per collection and part: images, and how many the check refuses at each threshold."""
    rows = []
    for key in sorted({(it.set, it.part, it.label) for it in items}, key=lambda k: (-k[2], k[0], k[1])):
        s = np.array([v for it, v in zip(items, stds) if (it.set, it.part, it.label) == key])
        rows.append({"set": key[0], "part": key[1], "dermoscopic": key[2] == DERMOSCOPIC, "n": len(s),
                     "lowest": round(float(s.min()), 2), "refused_before": int((s < before).sum()),
                     "refused_after": int((s < after).sum())})
    return rows


def blank_rule_into(bundle: Path, data: Path, split_file: Path, version: str | None, changes: str = "") -> dict:
    """`version` None keeps the card's version and changelog (a step of `make export`, whose fit-gate names it)."""
    from ..evaluate.ood_eval import bundle_ood_set
    from ..inference import Predictor
    bundle = Path(bundle)
    card, items = card_step_inputs(bundle, data, split_file, version)
    predictor = Predictor(bundle)

    def std(it):  # of the view as served, what exposure_reasons reads
        return luminance_std(predictor.load_sized(predictor.open_image(it.path))[0])

    with ThreadPoolExecutor(2) as pool:
        stds = np.array(list(tqdm(pool.map(std, items), total=len(items), desc="blank check", mininterval=5)))
    fit = [s for it, s in zip(items, stds) if it.part == "fit" and it.label == DERMOSCOPIC]
    before = float(card["ood"]["exposure_rules"]["min_std"])
    after = float(math.floor(min(fit)))
    rows = blank_rows(stds, items, before, after)
    print(f"lowest luminance deviation of the fit parts' dermoscopy: {min(fit):.2f}; min_std {before:g} -> {after:g}")
    print("| set | part | kind | n | lowest | refused before | refused after |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        kind = "dermoscopic" if r["dermoscopic"] else "not dermoscopic"
        print(f"| {r['set']} | {r['part']} | {kind} | {r['n']} | {r['lowest']:.2f} | {r['refused_before']} "
              f"| {r['refused_after']} |")
    card["ood"]["exposure_rules"]["min_std"] = after
    card["ood"]["blank_figures"] = {
        "rule": "min_std: the largest whole number at which no dermoscopic image of the fit parts (HAM10000 fit, "
                "isic_archive fit), as served, is refused (docs/decisions/input-checks.md, 'Blank')",
        "fit_lowest": round(float(min(fit)), 4), "previous_min_std": before, "command": COMMAND, "rows": rows}
    if version is not None:
        card["version"] = version
        card["changelog"] = with_changelog(card, card.get("changelog"), changes or BLANK_CHANGES,
                                           dt.date.today().isoformat())
    save_card(bundle, card)
    ood = bundle_ood_set(bundle, data, split_file)  # through the bundle as now saved
    card = read_card(bundle)
    card["modality"]["ood_set"] = ood
    evaluation = card["ood"].setdefault("evaluation", {})
    overall, by_class = _test_pass_rates(Predictor(bundle), items)
    evaluation.update(ood, flagged_rate=ood["flagged"] / ood["total"], test_pass_rate=overall,
                      test_pass_rate_by_class=by_class, test_pass_rate_command=COMMAND)
    save_card(bundle, card)
    print(f"out-of-distribution set: {ood['flagged']}/{ood['total']} not assessed; missed: {ood['missed'] or 'none'}; "
          f"HAM10000 test split passing every check: {evaluation['test_pass_rate']:.4f}")
    return card


def _test_pass_rates(predictor, items: list) -> tuple[float, dict]:
    """Share of the HAM10000 test split (the held-out part) that every check passes, as served: overall and by
    diagnosis."""
    test = [it for it in items if it.set == "ham10000" and it.part == "heldout"]
    passed = np.array([predictor.predict(it.path).in_distribution for it in tqdm(test, desc="test split",
                                                                                 mininterval=5)])
    dx = np.array([it.stratum for it in test])
    return float(passed.mean()), {c: float(passed[dx == c].mean()) for c in sorted(set(dx))}


def main(argv=None) -> int:
    return card_step_main(__doc__, blank_rule_into, argv)


if __name__ == "__main__":
    sys.exit(main())
