"""The model that ships in the repository: its card, its numbers, its gate and its heat-maps."""
import json

import numpy as np
import pytest
from PIL import Image

from dermalens.data import load_ham10000, select_split, split_sha256
from dermalens.evaluate.explain_eval import gradcam_mask_scores
from dermalens.evaluate.ood_set import synthetic_images
from dermalens.inference import Predictor
from conftest import FIXTURES, HAM, MINI, SPLIT_FILE

ham_only = pytest.mark.skipif(not (HAM / "HAM10000_metadata.csv").is_file(), reason="needs ../shared/data/ham10000")


@pytest.fixture(scope="module")
def predictor(shipped_bundle):
    return Predictor(shipped_bundle)


def test_card_describes_the_bundle(shipped_bundle, predictor):
    card = json.loads((shipped_bundle / "card.json").read_text())
    assert card["data"]["split_sha256"] == split_sha256(SPLIT_FILE), "the card must name THE split"
    assert [c["code"] for c in card["classes"]] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert card["thresholds"]["malignant"] <= card["thresholds"]["high_risk"]
    assert card["export_check"]["max_abs_logit_diff"] <= 1e-4
    for key in ("validation", "test"):
        m = card["metrics"][key]
        assert m["n"] > 1000
        # every headline figure carries its lesion-bootstrap interval, and the interval holds the figure
        assert m["intervals"]["groups"] < m["n"], "resampled by lesion, not by image"
        lo, hi = m["intervals"]["macro_auroc"]
        assert lo < m["macro_auroc"] < hi
        lo, hi = m["intervals"]["malignant_sensitivity"]
        assert lo < m["malignant"]["sensitivity"] < hi
    assert (shipped_bundle / "MODEL_CARD.md").is_file()


def test_human_model_card_is_written_from_the_json_card(shipped_bundle, tmp_path):
    """MODEL_CARD.md says what card.json says, OOD pass rate by diagnosis included: neither was edited by hand."""
    from dermalens.export.model_card import write_model_card
    card = json.loads((shipped_bundle / "card.json").read_text())
    write_model_card(card, tmp_path / "MODEL_CARD.md")
    assert (tmp_path / "MODEL_CARD.md").read_text() == (shipped_bundle / "MODEL_CARD.md").read_text()
    # as served, every check (export.blank_rule), where measured; else the export's feature-distance figure
    rates = card["ood"]["evaluation"].get("test_pass_rate_by_class") or card["metrics"]["test"]["ood_pass_rate_by_class"]
    assert set(rates) == {c["code"] for c in card["classes"]} and all(0 <= r <= 1 for r in rates.values())
    assert f"vasc {rates['vasc']:.3f}" in (shipped_bundle / "MODEL_CARD.md").read_text()


def _test_figures(shipped_bundle, key="test"):
    return json.loads((shipped_bundle / "card.json").read_text())["metrics"][key]


def test_card_meets_the_image_only_quality_line(shipped_bundle):
    """Issue 20's line without metadata, on the lesion-grouped test split read once: macro AUROC >= 0.94,
    balanced accuracy >= 0.70, malignant sensitivity >= 0.90 at specificity >= 0.72 (threshold from validation)."""
    m = _test_figures(shipped_bundle)
    assert m["metadata_used"] is False
    assert m["macro_auroc"] >= 0.94
    assert m["balanced_accuracy"] >= 0.70
    assert m["malignant"]["sensitivity"] >= 0.90 and m["malignant"]["specificity"] >= 0.72


def test_card_meets_the_metadata_line_for_auroc_and_sensitivity(shipped_bundle):
    """Issue 20's line with metadata: the parts bundle 3.0 meets (macro AUROC >= 0.95, sensitivity >= 0.90)."""
    m = _test_figures(shipped_bundle, "test_with_metadata")
    assert m["metadata_used"] is True and m["images_with_metadata"] > 0.95 * m["n"]
    assert m["macro_auroc"] >= 0.95
    assert m["malignant"]["sensitivity"] >= 0.90


# The parts of the with-metadata line bundle 3.0 misses. Strict: a model that meets one turns its test into a
# failure, so the xfail cannot outlive the shortfall it documents.
@pytest.mark.xfail(strict=True, reason="dermalens 3.0 with metadata: balanced accuracy 0.719 on the test split "
                   "(95 % CI 0.657-0.780), the line asks 0.72; see MODEL_CARD.md")
def test_card_meets_the_metadata_line_for_balanced_accuracy(shipped_bundle):
    assert _test_figures(shipped_bundle, "test_with_metadata")["balanced_accuracy"] >= 0.72


@pytest.mark.xfail(strict=True, reason="dermalens 3.0 with metadata: the threshold with the validation margin "
                   "gives sensitivity 0.919 at specificity 0.719 on the test split (95 % CI 0.687-0.752), the line "
                   "asks 0.75; see MODEL_CARD.md")
def test_card_meets_the_metadata_line_for_specificity(shipped_bundle):
    m = _test_figures(shipped_bundle, "test_with_metadata")
    assert m["malignant"]["sensitivity"] >= 0.90 and m["malignant"]["specificity"] >= 0.75


@pytest.mark.xfail(strict=True, reason="dermalens 3.0 with metadata: ECE 0.033 on the test split (95 % CI "
                   "0.025-0.058), the line asks <= 0.03; see MODEL_CARD.md")
def test_card_meets_the_metadata_line_for_calibration(shipped_bundle):
    assert _test_figures(shipped_bundle, "test_with_metadata")["ece"] <= 0.03


def test_card_is_an_ensemble_with_a_metadata_model(shipped_bundle):
    card = json.loads((shipped_bundle / "card.json").read_text())
    assert [m["name"] for m in card["members"]] == ["lite2_224x300_distill_cpu", "lite0_168x224_stage2"]
    assert card["ood"]["features_member"] == card["ensemble"]["features_member"] == "lite2_224x300_distill_cpu"
    assert card["operating_point"]["malignant_margin"]["validation_sensitivity_lower_bound"] >= 0.90
    assert card["metadata"]["malignant_margin"]["validation_sensitivity_lower_bound"] >= 0.90
    assert (shipped_bundle / "metadata.npz").is_file() and not list(shipped_bundle.glob("*.pkl"))


@pytest.mark.slow
@ham_only
def test_test_metrics_reproduce_from_onnx(shipped_bundle, predictor):
    """Re-running the evaluation from the bundle alone reproduces card.json's test figures."""
    from dermalens.evaluate.run import evaluate_records
    from dermalens.inference.metadata import read_metadata_csv
    cards = json.loads((shipped_bundle / "card.json").read_text())["metrics"]
    m = evaluate_records(predictor, select_split(load_ham10000(HAM), "test", SPLIT_FILE), progress=False,
                         metadata=read_metadata_csv(HAM / "HAM10000_metadata.csv"), subgroups=False)["metrics"]
    for card, got in ((cards["test"], m), (cards["test_with_metadata"], m["with_metadata"])):
        for key in ("accuracy", "balanced_accuracy", "macro_auroc", "ece"):
            assert got[key] == pytest.approx(card[key], abs=0.005), key
        for key in ("sensitivity", "specificity"):
            assert got["malignant"][key] == pytest.approx(card["malignant"][key], abs=0.005), key
        for key, interval in card["intervals"].items():
            if isinstance(interval, list):
                assert got["intervals"][key] == pytest.approx(interval, abs=0.005), key


def test_ood_gate_passes_lesions_and_flags_other_images(predictor):
    lesions = [predictor.predict(p) for p in sorted((MINI / "images").iterdir())]
    pass_rate = np.mean([p.in_distribution for p in lesions])
    assert pass_rate >= 0.85, pass_rate
    others = {**synthetic_images()}
    try:
        from skimage import data
        others.update({"astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea(),
                       "rocket": data.rocket()})
    except ImportError:
        pytest.fail("scikit-image is part of the test install")
    flagged = {n: not predictor.predict(Image.fromarray(np.asarray(a)[..., :3] if np.asarray(a).ndim == 3 else
                                                        np.asarray(a))).in_distribution for n, a in others.items()}
    assert np.mean(list(flagged.values())) >= 0.9, flagged
    for n in ("blank_white", "blank_black", "uniform_noise", "screenshot", "astronaut"):
        assert flagged[n], n


def test_greyscale_lesion_gets_no_assessment(shipped_bundle, predictor):
    """A greyscale copy of a lesion that the gate passes in colour gets no assessment, and the colour
    rule says why (the feature distance alone lets most greyscale lesions through:
    experiments/decide_min_chroma.py); the least colourful HAM10000 image must still pass that rule."""
    path = sorted((MINI / "images").iterdir())[0]
    colour = predictor.predict(path)
    assert colour.in_distribution and colour.risk != "indeterminate"
    grey = predictor.predict(Image.open(path).convert("L"))
    assert not grey.in_distribution and grey.risk == "indeterminate" and not grey.confident
    assert "greyscale" in [r["code"] for r in grey.to_dict()["quality"]["reasons"]]
    card = json.loads((shipped_bundle / "card.json").read_text())
    assert card["ood"]["exposure_rules"]["min_chroma"] > 0, "the card describes the colour rule it applies"
    least = predictor.predict(FIXTURES / "least_colourful" / "ISIC_0025456.jpg")
    assert not any("greyscale" in r for r in least.ood_reasons), least.ood_reasons


def test_thumbnail_gets_no_assessment(shipped_bundle, predictor):
    """Below the card's smallest short side (set on validation, experiments/decide_min_short_side.py)
    a lesion the gate passes at 200x150 gets no assessment; at that side it is still assessed."""
    side = json.loads((shipped_bundle / "card.json").read_text())["ood"]["min_short_side"]
    assert 16 < side <= 150, "HAM10000's own 200x150 images must pass"
    path = sorted((MINI / "images").iterdir())[0]
    img = Image.open(path)
    ok = predictor.predict(img.resize((round(side * 4 / 3), side)))
    assert not any("pixels" in r for r in ok.ood_reasons), ok.ood_reasons
    small = predictor.predict(img.resize((round((side - 1) * 4 / 3), side - 1)))
    assert not small.in_distribution and small.risk == "indeterminate"
    assert any(f"below {side} pixels" in r for r in small.ood_reasons), small.ood_reasons


def test_upright_photo_gets_the_answer_of_its_landscape_original(shipped_bundle, predictor):
    """The shipped card turns portrait images (chosen on validation, experiments/decide_portrait_turn.py):
    an upright copy of a lesion reaches the network as its landscape original turned 180 degrees, and
    gets that view's probabilities, not those of a squeezed copy."""
    card = json.loads((shipped_bundle / "card.json").read_text())
    assert card["preprocessing"]["match_orientation"] is True
    lesion = Image.open(sorted((MINI / "images").iterdir())[0]).convert("RGB")
    upright = predictor.predict(lesion.transpose(Image.Transpose.ROTATE_90))
    upside_down = predictor.predict(lesion.transpose(Image.Transpose.ROTATE_180))
    assert upright.turned and np.allclose(upright.probabilities, upside_down.probabilities, atol=1e-6)
    assert upright.in_distribution and upright.top == predictor.predict(lesion).top


def test_ood_threshold_is_applied_on_both_sides(shipped_bundle, predictor):
    """Just below the threshold passes, just above is flagged, and flagged is never a diagnosis."""
    path = sorted((MINI / "images").iterdir())[3]
    p = predictor.predict(path)
    gate = Predictor(shipped_bundle)
    gate.ood_threshold = p.ood_score + 1e-3
    below = gate.predict(path)
    assert below.in_distribution and below.risk != "indeterminate"
    gate.ood_threshold = p.ood_score - 1e-3
    above = gate.predict(path)
    assert not above.in_distribution and above.risk == "indeterminate"
    d = above.to_dict()
    assert d["quality"]["in_distribution"] is False and d["prediction"] is None and d["predictions"] == []
    assert [r["code"] for r in d["quality"]["reasons"]] == ["unlike_training"]


def test_gradcam_points_at_lesions_better_than_chance(predictor):
    recs = load_ham10000(MINI)
    scores = gradcam_mask_scores(predictor, recs, MINI / "masks", progress=False)
    assert scores["n"] == 49
    assert scores["energy_in_mask"] > scores["mean_mask_area_fraction"], scores


def test_low_is_never_shown_above_the_operating_threshold(predictor):
    for path in sorted((MINI / "images").iterdir()):
        p = predictor.predict(path)
        if p.malignancy >= p.malignant_threshold:
            assert p.risk in ("moderate", "high", "indeterminate")


def test_serving_and_evaluation_need_no_pytorch(shipped_bundle, tmp_path):
    """`make serve` installs no PyTorch: prediction, evaluation from the bundle and the API's app must run
    with torch, torchvision and timm unimportable (the test environment has them, so block them)."""
    import subprocess
    import sys
    from conftest import REPO
    code = f"""
import sys


class NoTorch:  # a finder that refuses them, as a machine without them would
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "timm"):
            raise ImportError(f"{{name}} is not installed in the serving environment")


sys.meta_path.insert(0, NoTorch())
from dermalens.cli import main
rc = main(["evaluate", "--model", {str(shipped_bundle)!r}, "--labels", {str(MINI / "HAM10000_metadata.csv")!r},
           "--out", {str(tmp_path / "report")!r}])
assert rc == 0, rc
from dermalens.serve.app import create_app
from fastapi.testclient import TestClient
with TestClient(create_app()) as client:
    assert client.get("/health").json()["model_loaded"] is True
assert not any(m.split(".")[0] in ("torch", "torchvision", "timm") for m in sys.modules), "PyTorch was imported"
print("ok without torch")
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "DERMALENS_MODEL": str(shipped_bundle)})
    assert r.returncode == 0 and "ok without torch" in r.stdout, r.stderr[-3000:]
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["n"] == 49
