"""Switch a bundle to reading a dermoscope's round field without its black frame (preprocessing.trim_dark_margins),
and measure again what that changes.

    python -m dermalens.export.dark_margins --model models/dermalens --version 3.3.0 [--data ../shared/data]

The networks and the image-type check keep their weights and thresholds (docs/decisions/dark-margins.md: refitted on
trimmed views the check let more phone photos through). Measured again on the bundle's new views and written into
card.json and MODEL_CARD.md: the image-type check's pass / flag rates at fp32 (as `dermalens gate-check --precision
fp32 --record-in-card` does), the out-of-distribution set, and the layout checks' figures. Then record the bf16 rates
and the external check again (`dermalens gate-check --precision bf16 --record-in-card`, `dermalens external-check
--part heldout --record-in-card`).
"""
from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from ..inference.bundle import read_card
from .card_fields import with_changelog
from .layout_checks import card_step_main, layout_checks_into
from .model_card import save_card
from .target import parse_version

TRIM_CHANGES = ("a dermoscope's round field inside a black frame is read without the frame "
                "(preprocessing.trim_dark_margins); same networks, image-type check and thresholds")


def trim_dark_margins_into(bundle: Path, data: Path, split_file: Path, version: str | None, changes: str = "") -> dict:
    """`version` None keeps the card's version and changelog (a step of `make export`, whose fit-gate names it)."""
    from ..evaluate.gate_figures import gate_rates, print_rates, record_in_card
    from ..evaluate.ood_eval import bundle_ood_set
    bundle = Path(bundle)
    if version is not None:
        parse_version(version)
    card = read_card(bundle)
    if "modality" not in card:
        raise ValueError(f"{bundle}: this bundle has no image-type check to measure again; "
                         "run dermalens fit-gate first")
    card["preprocessing"]["trim_dark_margins"] = True
    if version is not None:
        card["version"] = version
        card["changelog"] = with_changelog(card, card.get("changelog"), changes or TRIM_CHANGES,
                                           dt.date.today().isoformat())  # this step's day, not the export's
    save_card(bundle, card)
    table, info = gate_rates(bundle, Path(data), Path(split_file), "openvino", "fp32")
    print(f"image-type check as served ({info['runtime']} {info['precision']}), check and held-out parts:")
    print_rates(table)
    record_in_card(bundle, table, info)
    card = read_card(bundle)
    ood = card["modality"]["ood_set"] = bundle_ood_set(bundle, data, split_file)
    save_card(bundle, card)
    print(f"out-of-distribution set: {ood['flagged']}/{ood['total']} not assessed; missed: {ood['missed'] or 'none'}")
    return layout_checks_into(bundle, Path(data), Path(split_file), None)


def main(argv=None) -> int:
    return card_step_main(__doc__, trim_dark_margins_into, argv)


if __name__ == "__main__":
    sys.exit(main())
