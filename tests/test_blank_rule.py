"""The blank check: a nearly uniform frame is not assessed, a small pale lesion on plain skin is (its threshold comes
from the fit parts' dermoscopy: export.blank_rule)."""
import json
import math

import numpy as np
from PIL import Image

from conftest import FIXTURES, SHIPPED

FAINT = FIXTURES / "faint" / "ISIC_0008396.jpg"  # isic_archive, a fit-part nevus: luminance deviation 4.7


def test_the_shipped_cards_follow_the_rule_and_record_what_it_refuses():
    for name in ("dermalens", "dermalens-lite2"):
        card = json.loads((SHIPPED.parent / name / "card.json").read_text())
        figures = card["ood"]["blank_figures"]
        assert card["ood"]["exposure_rules"]["min_std"] == math.floor(figures["fit_lowest"]), name
        fit = [r for r in figures["rows"] if r["dermoscopic"] and r["part"] == "fit"]
        assert {r["set"] for r in fit} == {"ham10000", "isic_archive"} and all(r["refused_after"] == 0 for r in fit)
        assert all(r["refused_after"] <= r["refused_before"] for r in figures["rows"]), name
        assert card["modality"]["ood_set"]["flagged"] == card["modality"]["ood_set"]["total"] == 60


def test_a_faint_lesion_on_plain_skin_is_answered_and_a_blank_frame_is_not(shipped_bundle):
    from dermalens.inference import Predictor
    from dermalens.inference.ood import luminance_std
    predictor = Predictor(shipped_bundle)
    assert luminance_std(predictor.load(FAINT)) < 6  # the threshold before 3.4.1 refused it as blank
    p = predictor.predict(FAINT)
    assert p.in_distribution and not p.ood_reasons, [str(r) for r in p.ood_reasons]
    skin = Image.new("RGB", (600, 450), (224, 172, 140))  # a plain frame: blank, with its reason
    assert "blank" in [r.code for r in predictor.predict(skin).ood_reasons]
    noisy = np.clip(np.asarray(skin, np.int16) + np.random.default_rng(0).integers(-3, 4, (450, 600, 3)), 0, 255)
    assert "blank" in [r.code for r in predictor.predict(Image.fromarray(noisy.astype(np.uint8))).ood_reasons]


def test_the_rows_count_refusals_at_both_thresholds():
    from types import SimpleNamespace

    from dermalens.export.blank_rule import blank_rows
    items = [SimpleNamespace(set="a", part="fit", label=1), SimpleNamespace(set="a", part="fit", label=1),
             SimpleNamespace(set="b", part="check", label=0)]
    rows = blank_rows(np.array([3.5, 7.0, 5.0]), items, before=6.0, after=4.0)
    assert rows == [{"set": "a", "part": "fit", "dermoscopic": True, "n": 2, "lowest": 3.5, "refused_before": 1,
                     "refused_after": 1},
                    {"set": "b", "part": "check", "dermoscopic": False, "n": 1, "lowest": 5.0, "refused_before": 1,
                     "refused_after": 0}]
