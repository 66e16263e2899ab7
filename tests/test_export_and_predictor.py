"""Export -> bundle -> PyTorch-free predictor: equivalence, calibration, TTA, Grad-CAM, OOD, risk."""
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermalens.data import load_ham10000
from dermalens.inference import BundleError, Predictor, load_bundle
from dermalens.inference.risk import risk_level
from conftest import FIXTURES, MINI, SPLIT_FILE

torch = pytest.importorskip("torch")


def tiny_torch_model(run_dir):
    from dermalens.train.models import create_model
    model = create_model("custom_cnn", pretrained=False)
    model.load_state_dict(torch.load(run_dir / "best.pt", weights_only=True)["model"])
    return model.eval()


def test_bundle_files_and_card(tiny_bundle):
    for f in ("model.onnx", "card.json", "head.npz", "ood.npz", "MODEL_CARD.md"):
        assert (tiny_bundle / f).is_file(), f
    card = json.loads((tiny_bundle / "card.json").read_text())
    assert [c["code"] for c in card["classes"]] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    # timm's terms: trained size, served size, the central share kept and how the frame is resized
    assert card["preprocessing"]["input_size"] == [3, 48, 64] and card["preprocessing"]["test_input_size"] == [3, 48, 64]
    assert card["preprocessing"]["crop_pct"] == 1.0 and card["preprocessing"]["crop_mode"] == "squash"
    assert card["outputs"]["logits"]["shape"] == ["N", 7] and card["outputs"]["logits"]["channel_def"]["6"] == "vasc"
    assert card["outputs"]["features"]["shape"][0] == "N" and len(card["outputs"]["features"]["spatial_shape"]) == 2
    assert not {"data_root", "out_dir", "threads"} & set(card["recipe"])
    assert [s["stage"] for s in card["training"]["hardware"]] == [1] and card["training"]["hardware"][0]["device"]
    assert card["changelog"][-1]["version"] == card["version"]
    assert card["temperature"] > 0 and set(card["thresholds"]) == {"malignant", "high_risk", "ood"}
    assert card["export_check"]["max_abs_logit_diff"] <= 1e-4
    assert {"validation", "test", "test_tta"} <= set(card["metrics"])
    assert len(card["data"]["split_sha256"]) == 64
    assert "not a medical device" in (tiny_bundle / "MODEL_CARD.md").read_text()


def test_predictor_agrees_with_pytorch(tiny_run, tiny_bundle):
    """ONNX + numpy (temperature, softmax) == PyTorch on real images, to 1e-4."""
    model = tiny_torch_model(tiny_run)
    pred = Predictor(tiny_bundle)
    paths = [r.path for r in load_ham10000(MINI)[:10]] + sorted((FIXTURES / "fullres").iterdir())
    pixels = np.stack([pred.load(p) for p in paths])
    probs, _, _ = pred.forward(pixels)
    with torch.no_grad():
        logits = model(torch.from_numpy(pred.bundle.spec.normalize(pixels)))
    ref = torch.softmax(logits / pred.bundle.temperature, dim=1).numpy()
    assert np.abs(probs - ref).max() < 1e-4


def test_tta_averages_valid_distributions(tiny_bundle):
    pred = Predictor(tiny_bundle)
    path = next((MINI / "images").iterdir())
    plain, tta = pred.predict(path), pred.predict(path, tta=True)
    assert tta.tta and tta.probabilities.sum() == pytest.approx(1, abs=1e-5)
    px = pred.load(path)
    views = np.stack([px, px[:, ::-1], px[::-1, :], px[::-1, ::-1]])  # flips and 180-degree rotation
    manual = pred.forward(np.ascontiguousarray(views))[0].mean(axis=0)
    assert np.allclose(tta.probabilities, manual, atol=1e-6)
    assert plain.probabilities == pytest.approx(pred.forward(px[None])[0][0], abs=1e-6)
    # TTA of an image equals TTA of its mirror image: the views are the same set
    mirrored = Image.open(path).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert np.allclose(pred.predict(mirrored, tta=True).probabilities, tta.probabilities, atol=1e-5)


def test_gradcam_matches_autograd(tiny_run, tiny_bundle):
    """The numpy Grad-CAM equals Grad-CAM computed with PyTorch autograd on the same model."""
    from dermalens.inference.gradcam import gradcam_raw
    model = tiny_torch_model(tiny_run)
    pred = Predictor(tiny_bundle)
    px = pred.load(next((MINI / "images").iterdir()))[None]
    _, _, maps = pred.forward(px)
    feats = model.forward_features(torch.from_numpy(pred.bundle.spec.normalize(px))).detach().requires_grad_(True)
    for c in range(7):
        model.forward_head(feats)[0, c].backward()
        alpha = feats.grad[0].mean(dim=(1, 2))
        ref = torch.relu((alpha[:, None, None] * feats[0]).sum(0)).detach().numpy()
        feats.grad = None
        assert np.allclose(gradcam_raw(maps[0], pred.bundle.head_weight, c), ref, atol=1e-5)


def test_gradcam_output(tiny_bundle):
    pred = Predictor(tiny_bundle)
    for path in sorted((MINI / "images").iterdir())[:5]:
        for c in range(7):
            p = pred.predict(path, explain=True, explain_class=c)
            assert p.cam.shape == (48, 64) and p.cam.min() >= 0
            assert p.cam.max() == pytest.approx(1.0) or p.cam.max() == 0
            assert p.overlay_png()[:8] == b"\x89PNG\r\n\x1a\n"
        with pytest.raises(ValueError, match="explain_class"):
            pred.predict(path, explain=True, explain_class=9)


def test_the_heat_map_lies_like_the_image_as_sent(tiny_bundle):
    """The network sees a portrait photo turned to landscape and any frame resized to its input;
    the overlay shown to the user is turned back and has the photo's own shape."""
    pred = Predictor(tiny_bundle)
    assert pred.bundle.spec.match_orientation  # new exports turn portrait images
    lesion = Image.open(sorted((MINI / "images").iterdir())[0]).convert("RGB")
    portrait = lesion.transpose(Image.Transpose.ROTATE_90)
    p = pred.predict(portrait, explain=True)
    assert p.turned and p.pixels.shape == (48, 64, 3)
    shown = Image.open(io.BytesIO(p.overlay_png()))
    assert shown.size == (48, 64)  # width x height: upright, like the 150x200 photo
    # The turned-back overlay's base is the photo itself (heat-map blended at 45 %): it must
    # match the upright photo far better than the same pixels left lying on their side.
    base = np.asarray(portrait.resize(shown.size), dtype=float)
    upright = np.abs(np.asarray(shown, dtype=float) - base).mean()
    upside_down = np.abs(np.asarray(shown.transpose(Image.Transpose.ROTATE_180), dtype=float) - base).mean()
    assert upright < upside_down
    square = pred.predict(lesion.crop((25, 0, 175, 150)), explain=True)
    assert not square.turned and Image.open(io.BytesIO(square.overlay_png())).size == (64, 64)


def test_risk_rules():
    assert risk_level(0.10, 0.2, 0.5, True) == "low"
    assert risk_level(0.20, 0.2, 0.5, True) == "moderate"  # at the threshold is never "low"
    assert risk_level(0.70, 0.2, 0.5, True) == "high"
    assert risk_level(0.99, 0.2, 0.5, False) == "indeterminate"
    assert risk_level(0.30, 0.4, 0.35, True) == "low"  # a misordered card cannot make "high" below the op point
    scores = np.linspace(0, 1, 101)
    assert all(risk_level(s, 0.3, 0.6, True) != "low" for s in scores if s >= 0.3)


def test_bundle_errors_are_clear(tiny_bundle, tmp_path):
    with pytest.raises(BundleError, match="bundle folder not found"):
        load_bundle(tmp_path / "nope")
    broken = tmp_path / "b"
    shutil.copytree(tiny_bundle, broken)
    (broken / "model.onnx").unlink()
    with pytest.raises(BundleError, match="model.onnx: missing"):
        load_bundle(broken)
    shutil.copy(tiny_bundle / "model.onnx", broken / "model.onnx")
    card = json.loads((broken / "card.json").read_text())
    card["preprocessing"]["test_input_size"] = [3, 64, 64]
    (broken / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="does not match the card's preprocessing"):
        load_bundle(broken)
    card["preprocessing"]["test_input_size"] = [3, 48, 64]
    card["classes"] = card["classes"][:6]
    card["decision_bias"] = card["decision_bias"][:6]
    (broken / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="6 classes"):
        load_bundle(broken)
    (broken / "card.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(broken)
    shutil.copy(tiny_bundle / "card.json", broken / "card.json")
    assert "ood" in json.loads((broken / "card.json").read_text())["thresholds"]
    (broken / "ood.npz").unlink()  # the feature-distance check must not go quietly missing
    with pytest.raises(BundleError, match="ood.npz: missing"):
        load_bundle(broken)
    (broken / "ood.npz").write_bytes((tiny_bundle / "ood.npz").read_bytes()[:200])  # a cut-off download
    with pytest.raises(BundleError, match="ood.npz: unreadable"):
        load_bundle(broken)


def test_decision_bias_moves_the_decision_not_the_probabilities(tiny_bundle, tmp_path):
    """The card's decision_bias picks the predicted class; probabilities, AUROC and the
    malignancy score must not move, and evaluation must count the biased decisions."""
    from dermalens.evaluate.run import evaluate_records
    from dermalens.inference.softmax import decide
    probs = np.array([[0.6, 0.4], [0.2, 0.8]])
    assert decide(probs).tolist() == [0, 1]
    assert decide(probs, np.array([0.0, np.log(2.0)])).tolist() == [1, 1]  # 0.4 * 2 > 0.6

    biased = tmp_path / "biased"
    shutil.copytree(tiny_bundle, biased)
    card = json.loads((biased / "card.json").read_text())
    codes = [c["code"] for c in card["classes"]]
    card["decision_bias"] = [50.0 if c == "df" else 0.0 for c in codes]
    (biased / "card.json").write_text(json.dumps(card))
    plain, skewed = Predictor(tiny_bundle), Predictor(biased)
    records = load_ham10000(MINI)[:12]
    a, b = plain.predict(records[0].path), skewed.predict(records[0].path)
    assert np.array_equal(a.probabilities, b.probabilities) and a.malignancy == b.malignancy
    assert b.codes[b.top] == "df" and b.to_dict()["prediction"]["code"] == "df"
    assert b.to_dict()["prediction"]["most_probable"] == a.codes[int(np.argmax(a.probabilities))]
    ma, mb = evaluate_records(plain, records, progress=False)["metrics"], evaluate_records(skewed, records, progress=False)["metrics"]
    assert ma["macro_auroc"] == mb["macro_auroc"] and ma["ece"] == mb["ece"]
    cm = np.array(mb["confusion_matrix"])
    assert cm[:, codes.index("df")].sum() == len(records) == cm.sum()


def test_evaluation_reports_the_ood_pass_rate_per_diagnosis(tiny_bundle, tmp_path):
    from collections import Counter
    from dermalens.evaluate.run import evaluate_records
    records = load_ham10000(MINI)
    strict = tmp_path / "strict"
    shutil.copytree(tiny_bundle, strict)
    card = json.loads((strict / "card.json").read_text())
    for gate, expected in ((tiny_bundle, None), (strict, 0.0)):
        if expected is not None:  # a threshold nothing passes
            card["thresholds"]["ood"] = -1.0
            (strict / "card.json").write_text(json.dumps(card))
        m = evaluate_records(Predictor(gate), records, progress=False)["metrics"]
        by_class, n = m["ood_pass_rate_by_class"], Counter(r.dx for r in records)
        assert set(by_class) == set(n)
        assert abs(sum(by_class[c] * n[c] for c in n) / len(records) - m["ood_pass_rate"]) < 1e-9
        if expected is not None:
            assert set(by_class.values()) == {expected}


def test_old_prior_shifted_cards_are_refused(tiny_bundle, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(tiny_bundle, old)
    card = json.loads((old / "card.json").read_text())
    card["logit_bias"] = [0.0] * len(card["classes"])
    (old / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="re-export"):
        load_bundle(old)


def test_ood_threshold_does_not_let_the_common_class_decide():
    """95 nevi-like scores near 0 and 5 rare-class scores far out: the plain 95th percentile turns
    the whole rare class away; the class-balanced rule must let >= 95 % pass on average over classes."""
    from dermalens.inference.ood import balanced_pass_threshold
    scores = np.r_[np.linspace(0, 1, 95), [10, 11, 12, 13, 14]]
    labels = np.r_[np.zeros(95, int), np.ones(5, int)]
    assert np.quantile(scores, 0.95) < 10  # what the old rule did
    assert balanced_pass_threshold(scores, labels, 0.95) == 14  # 4 of 5 would average 0.90
    assert balanced_pass_threshold(scores, labels, 0.90) == 13
    # one class alone: the ordinary percentile rule, never looser than needed
    assert balanced_pass_threshold(np.arange(100.0), np.zeros(100, int), 0.95) == 94
    with pytest.raises(ValueError, match="no validation scores"):
        balanced_pass_threshold(np.array([]), np.array([]))


def test_ood_gate_survives_a_precision_matrix_that_float32_made_indefinite():
    """Lite2's 1280 pooled features gave a Ledoit-Wolf precision whose float32 copy (as stored in
    ood.npz) is no longer positive definite: Cholesky failed and export died. The gate must still
    produce the float64 Mahalanobis distances."""
    from dermalens.inference.ood import mahalanobis_score
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(64, 64)))
    precision = (q * np.logspace(-9, 3, 64)) @ q.T
    p32 = precision.astype(np.float32)
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(p32.astype(np.float64))
    means = rng.normal(size=(7, 64)).astype(np.float32)
    f = rng.normal(size=(20, 64)).astype(np.float32)
    got = mahalanobis_score(f, {"means": means, "precision": p32})
    ref = np.min([np.einsum("nc,cd,nd->n", f - m, precision, f - m) for m in means.astype(np.float64)], axis=0)
    np.testing.assert_allclose(got, ref, rtol=1e-3)


def test_teacher_check_reports_each_bundle_and_their_mean(tiny_bundle, capsys):
    """Averaging a bundle with itself must change nothing: the mean's figures equal the bundle's."""
    from dermalens.train.teacher import main
    main(["--bundle", str(tiny_bundle), "--bundle", str(tiny_bundle), "--check", "--data", str(MINI),
          "--split-file", str(SPLIT_FILE)])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["model"] for r in rows] == [str(tiny_bundle), str(tiny_bundle), "mean"]
    assert rows[0]["macro_auroc"] == rows[2]["macro_auroc"] and rows[0]["malignant_auroc"] == rows[2]["malignant_auroc"]


def test_export_can_serve_at_another_input_size(tiny_run, tmp_path):
    """The network is fully convolutional: the bundle's ONNX input, preprocessing and card all move
    to the served size (and the served part of the frame) together, and the card keeps the trained
    size next to it."""
    import onnxruntime as ort
    from dermalens.export.bundle import export_bundle
    card = export_bundle(tiny_run, tmp_path / "b", MINI, SPLIT_FILE, evaluate_test=False, input_size=(64, 85),
                         center_fraction=0.9)
    assert card["resolution"]["trained"] == [48, 64] and card["resolution"]["served"] == [64, 85]
    assert card["preprocessing"]["crop_pct"] == 0.9
    assert "central 90 % of the frame" in (tmp_path / "b" / "MODEL_CARD.md").read_text()
    assert card["preprocessing"]["test_input_size"] == [3, 64, 85] and card["input"]["shape"][2:] == [64, 85]
    assert card["preprocessing"]["input_size"] == [3, 48, 64]
    sess = ort.InferenceSession(str(tmp_path / "b" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[2:] == [64, 85]
    assert "Trained at 48x64, served at 64x85" in (tmp_path / "b" / "MODEL_CARD.md").read_text()
    result = Predictor(tmp_path / "b").predict(load_ham10000(MINI)[0].path)
    assert result.pixels.shape == (64, 85, 3) and abs(result.probabilities.sum() - 1) < 1e-5


def test_a_failed_export_leaves_the_bundle_it_would_replace_as_it_was(tiny_run, tiny_bundle, tmp_path, monkeypatch):
    """Export takes minutes on the real model and often writes over the bundle being served: killed or
    failing half-way, it must not leave a new model.onnx beside the old card.json."""
    import shutil
    from dermalens.export import bundle as bundle_mod
    target = tmp_path / "served"
    shutil.copytree(tiny_bundle, target)
    (target / "report").mkdir()
    (target / "report" / "report.html").write_text("kept")
    before = {f.name: f.read_bytes() for f in target.iterdir() if f.is_file()}

    def broken(*a, **k):
        raise RuntimeError("test split evaluation failed")
    monkeypatch.setattr(bundle_mod, "evaluate_records", broken)
    with pytest.raises(RuntimeError, match="test split evaluation failed"):
        bundle_mod.export_bundle(tiny_run, target, MINI, SPLIT_FILE, version="9.9.9", input_size=(64, 85),
                                 force=True)
    assert {f.name: f.read_bytes() for f in target.iterdir() if f.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["served"], "the staging folder must be cleaned up"

    monkeypatch.undo()
    card = bundle_mod.export_bundle(tiny_run, target, MINI, SPLIT_FILE, version="9.9.9", evaluate_test=False,
                                    input_size=(64, 85), force=True)
    assert json.loads((target / "card.json").read_text())["version"] == card["version"] == "9.9.9"
    assert (target / "model.onnx").read_bytes() != before["model.onnx"]  # the new network input size
    assert not (target / "report").exists(), "the replaced bundle's report describes another model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["served"]


def _cut(path: Path, keep: int = 500) -> None:
    path.write_bytes(path.read_bytes()[:keep])


BROKEN_BUNDLES = {  # what a failed copy or a hand edit leaves -> what the one line must say
    "head cut off": (lambda b: _cut(next(b.glob("*.head.npz"))), "head.npz: unreadable classifier head"),
    "metadata cut off": (lambda b: _cut(b / "metadata.npz"), "metadata.npz: unusable metadata model"),
    "check weights cut off": (lambda b: _cut(b / "gate.npz"), "gate.npz: unreadable"),
    "check graph cut off": (lambda b: _cut(b / "gate.onnx", 5000), "gate.onnx: cannot load ONNX model"),
    "member graph cut off": (lambda b: _cut(sorted(b.glob("lite0*.onnx"))[0], 5000), ".onnx: cannot load ONNX model"),
    "empty ood.npz": (lambda b: _cut(b / "ood.npz", 0), "ood.npz: unreadable"),
    "temperature null": (lambda b: _edit(b, temperature=None), "temperature must be a number > 0, got None"),
    "temperature text": (lambda b: _edit(b, temperature="abc"), "temperature must be a number > 0, got 'abc'"),
    "no members": (lambda b: _edit(b, members=[]), "members must be a non-empty list"),
    "members not a list": (lambda b: _edit(b, members="x"), "members must be a non-empty list"),
    "decision_bias text": (lambda b: _edit(b, decision_bias=["a"] * 7), "decision_bias must be numbers"),
    "decision_bias null": (lambda b: _edit(b, decision_bias=None), "decision_bias must be numbers"),
    "threshold text": (lambda b: _edit(b, thresholds={"malignant": "x"}), "thresholds must map names to numbers"),
    "check threshold missing": (lambda b: _edit(b, modality=lambda m: m.pop("threshold")), "modality.threshold must be a number"),
}


def _edit(bundle: Path, **changes) -> None:
    card = json.loads((bundle / "card.json").read_text())
    for key, value in changes.items():
        if callable(value):
            value(card[key])
        else:
            card[key] = value
    (bundle / "card.json").write_text(json.dumps(card))


@pytest.mark.parametrize("case", sorted(BROKEN_BUNDLES))
def test_a_damaged_bundle_is_one_line_naming_what(shipped_bundle, tmp_path, case):
    broken = tmp_path / "bundle"
    shutil.copytree(shipped_bundle, broken)
    damage, message = BROKEN_BUNDLES[case]
    damage(broken)
    with pytest.raises(BundleError, match=re.escape(message)) as e:
        load_bundle(broken)
    assert "\n" not in str(e.value)

