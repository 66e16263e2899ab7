"""Write the layout checks (inference.layout) into a bundle's card, with what they refuse of each collection.

    python -m dermalens.export.layout_checks --model models/dermalens --version 3.2.0 [--data ../shared/data]

Prints, for every part of the five collections the image-type check is fitted and checked on (docs/data.md) and
for the check part's composites, the share each check refuses on its own; the same table goes into card.json
(`ood.layout_figures`) and MODEL_CARD.md. Needs the training install (the composites are drawn by its code).
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data.modality_sets import DERMOSCOPIC, gate_images
from ..defaults import DEFAULT_DATA, DEFAULT_MODEL, DEFAULT_SPLIT_FILE
from ..inference.bundle import read_card
from ..inference.layout import LAYOUT_RULES, band_reasons, shape_reasons
from ..preprocess import PreprocessSpec, open_image
from .card_fields import with_changelog
from .model_card import save_card
from .target import parse_version

COMMAND = "python -m dermalens.export.layout_checks --model <bundle> --version <new version>"

LAYOUT_CHANGES = ("layout checks: pictures longer than any camera's frame and a flat light band along an edge (a "
                  "caption, a page) are not assessed (composite_image)")


def measure(items: list, spec: PreprocessSpec, rules: dict, threads: int = 2) -> list[dict]:
    """One row per collection and part: images, and the share each check refuses."""
    def refused(it):  # on the view and the size as served (Predictor.load_sized)
        view, size = spec.load_sized(open_image(it.path))
        return bool(band_reasons(view, rules)), bool(shape_reasons(*size, rules))

    with ThreadPoolExecutor(threads) as pool:
        hits = list(tqdm(pool.map(refused, items), total=len(items), desc="layout checks", mininterval=5))
    rows = []
    for key in sorted({(it.set, it.part, it.label) for it in items}, key=lambda k: (-k[2], k[0], k[1])):
        got = np.array([h for it, h in zip(items, hits) if (it.set, it.part, it.label) == key], bool)
        rows.append({"set": key[0], "part": key[1], "dermoscopic": key[2] == DERMOSCOPIC, "n": len(got),
                     "band": round(float(got[:, 0].mean()), 4), "elongated": round(float(got[:, 1].mean()), 4),
                     "band_images": int(got[:, 0].sum()), "elongated_images": int(got[:, 1].sum()),
                     "refused_images": int(got.any(axis=1).sum())})
    return rows


def composite_row(items: list, spec: PreprocessSpec, rules: dict) -> dict:
    from ..train.modality_gate import COMPOSITES, composite_views
    views = composite_views(items, "check", spec)
    band = np.array([bool(band_reasons(v, rules)) for v in views])
    return {"set": "composites", "part": "check", "dermoscopic": False, "n": COMPOSITES["check"],
            "band": round(float(band.mean()), 4), "band_images": int(band.sum()),
            "elongated": None, "elongated_images": None, "refused_images": int(band.sum())}


def print_rows(rows: list[dict]) -> None:
    print("| set | part | kind | n | paper band refuses | elongated refuses |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        kind = "dermoscopic" if r["dermoscopic"] else "not dermoscopic"
        shape = "-" if r["elongated"] is None else f"{100 * r['elongated']:.1f} % ({r['elongated_images']})"
        print(f"| {r['set']} | {r['part']} | {kind} | {r['n']} | {100 * r['band']:.1f} % ({r['band_images']}) "
              f"| {shape} |")


def layout_checks_into(bundle: Path, data: Path, split_file: Path, version: str | None, changes: str = "") -> dict:
    """Write the rules and their figures on the bundle's own views; `version` None keeps the card's version
    (a command that changes those views measures them again)."""
    bundle = Path(bundle)
    card, items = card_step_inputs(bundle, data, split_file, version)
    spec = PreprocessSpec.from_dict(card["preprocessing"])
    rows = measure(items, spec, LAYOUT_RULES) + [composite_row(items, spec, LAYOUT_RULES)]
    print_rows(rows)
    card.setdefault("ood", {})["layout_rules"] = LAYOUT_RULES
    card["ood"]["layout_figures"] = {
        "rule": "fixed: max_aspect_ratio from cameras' frames (at most 21:9), the band's parameters on the fit parts "
                "only (docs/decisions/modality-check.md, 'Layout checks')",
        "reason_code": "composite_image", "command": COMMAND, "rows": rows}
    if version is None:
        save_card(bundle, card)
        return card
    card["version"] = version
    card["changelog"] = with_changelog(card, card.get("changelog"), changes or LAYOUT_CHANGES,
                                       dt.date.today().isoformat())  # this step's day, not the export's
    save_card(bundle, card)
    return card


def card_step_inputs(bundle: Path, data: Path, split_file: Path, version: str | None) -> tuple[dict, list]:
    """What a step that writes into a bundle's card from the five collections reads, checked before any work: the
    new version's form, the card, and every image of the collections (none missing)."""
    if version is not None:
        parse_version(version)
    card = read_card(Path(bundle))
    items = gate_images(Path(data), Path(split_file))
    missing = [str(it.path) for it in items if not it.path.is_file()]
    if missing:
        raise FileNotFoundError(f"{data}: {len(missing)} image(s) its labels name are missing, such as {missing[0]}")
    return card, items


def card_step_main(doc: str, into, argv=None) -> int:
    """The command line of a step that writes into a bundle's card from the five collections: `into(bundle, data,
    split_file, version or None, changes)`."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help="bundle folder (default %(default)s)")
    ap.add_argument("--data", default=str(Path(DEFAULT_DATA).parent),
                    help="folder holding the five collections of docs/data.md (default %(default)s)")
    ap.add_argument("--split-file", default=str(DEFAULT_SPLIT_FILE))
    ap.add_argument("--version", help="the bundle's new version, MAJOR.MINOR.PATCH (default: keep the card's)")
    ap.add_argument("--changes", default="", help="what this version changes, for the card's changelog")
    a = ap.parse_args(argv)
    try:
        into(Path(a.model), Path(a.data), Path(a.split_file), a.version, a.changes)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {Path(a.model) / 'card.json'} ({a.version or 'version kept'}) and MODEL_CARD.md")
    return 0


def main(argv=None) -> int:
    return card_step_main(__doc__, layout_checks_into, argv)


if __name__ == "__main__":
    sys.exit(main())
