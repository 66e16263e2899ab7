"""Older cards keep loading and are upgraded to the current form (timm terms, structured outputs,
hardware per stage, no machine-local recipe keys, a changelog) without changing a prediction."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from dermalens.card_terms import from_card, to_card
from dermalens.export.upgrade_card import HISTORY, HISTORY_TEST, upgrade_card
from dermalens.inference import Predictor
from dermalens.preprocess import PreprocessSpec
from conftest import FIXTURES, REPO, SHIPPED


def test_timm_terms_round_trip():
    spec = PreprocessSpec(input_size=(256, 341), resize="center_crop", center_fraction=0.9, match_orientation=True)
    card = to_card(spec.to_dict(), trained_size=(224, 300))
    assert card["input_size"] == [3, 224, 300] and card["test_input_size"] == [3, 256, 341]
    assert card["crop_pct"] == 0.9 and card["crop_mode"] == "center"
    assert PreprocessSpec.from_dict(card) == spec
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec  # the older words still load
    with pytest.raises(ValueError, match="crop_mode must be one of"):
        from_card({**card, "crop_mode": "border"})


def _old_card():
    """The shipped card as it was written before this form (git history), or a downgraded copy."""
    r = subprocess.run(["git", "-C", str(REPO), "show", "00c2140:models/dermalens-lite2/card.json"],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip("needs the repository's history")
    return json.loads(r.stdout)


def test_an_old_card_is_upgraded_idempotently_and_predicts_the_same(tmp_path):
    old = tmp_path / "old"
    # bundle 2.3.0's card with the files of the single-network bundle kept beside the shipped ensemble
    shutil.copytree(REPO / "models" / "dermalens-lite2", old,
                    ignore=shutil.ignore_patterns("report", "*.png", "*.csv", "gate.*"))
    (old / "card.json").write_text(json.dumps(_old_card()))
    image = FIXTURES / "fullres" / "ISIC_0024311.jpg"
    before = Predictor(old).predict(image)  # the old words load
    r = subprocess.run([sys.executable, "-m", "dermalens.export.upgrade_card", str(old)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    card = json.loads((old / "card.json").read_text())
    assert card["preprocessing"]["input_size"] == [3, 224, 300]
    assert card["preprocessing"]["test_input_size"] == [3, 256, 341]
    assert card["preprocessing"]["crop_pct"] == 0.9 and card["preprocessing"]["crop_mode"] == "squash"
    assert card["outputs"]["features"]["shape"] == ["N", 1280, 8, 11]
    assert not {"data_root", "out_dir", "threads", "cache_dir"} & set(card["recipe"])
    assert [h["device"] for h in card["training"]["hardware"]] == ["NVIDIA H100 80GB HBM3", "CPU (2 cores, x86_64)"]
    assert [e["version"] for e in card["changelog"]][-3:] == ["2.2.1", "2.2.2", "2.3.0"]
    assert "## Versions" in (old / "MODEL_CARD.md").read_text()
    assert upgrade_card(card, old) == card  # idempotent
    check = subprocess.run([sys.executable, "-m", "dermalens.export.upgrade_card", str(old), "--check"])
    assert check.returncode == 0
    after = Predictor(old).predict(image)
    assert np.array_equal(before.probabilities, after.probabilities)


def test_the_shipped_card_is_in_the_current_form():
    card = json.loads((SHIPPED / "card.json").read_text())
    assert upgrade_card(card, SHIPPED) == card, "run python -m dermalens.export.upgrade_card models/dermalens"


def test_the_history_figures_are_those_of_each_bundles_own_card():
    for entry in HISTORY["dermalens-lite2"]:
        name = entry.get("name", "dermalens-lite2")
        r = subprocess.run(["git", "-C", str(REPO), "show", f"{entry['commit']}:models/{name}/card.json"],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip("needs the repository's history")
        card = json.loads(r.stdout)
        assert card["version"] == entry["version"]
        t = card["metrics"]["test"]
        got = tuple(round(v, 3) for v in (t["balanced_accuracy"], t["macro_auroc"], t["malignant"]["sensitivity"],
                                          t["malignant"]["specificity"]))
        assert got == HISTORY_TEST[entry["version"]], entry["version"]
