"""The image-type (modality) check: phone and clinical photos are not assessed, dermoscopy is; the reason
reaches every surface; the card's figures are the committed scores'."""
import base64
import csv
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURES, MINI, SHARED, SHIPPED
from serverutil import running_server

MODALITY = FIXTURES / "modality"
PHONE = sorted((MODALITY / "pad_ufes_20").glob("*.jpg"))
CLINICAL = sorted((MODALITY / "sd198_clinical").glob("*.jpg"))
OTHER_DERMOSCOPY = sorted((MODALITY / "isic2017_sample").glob("*.jpg"))
IMAGE_TYPE_CODES = {"not_dermoscopic", "composite_image"}  # the two reasons the image-type checks give


def _ham_test_fixtures() -> list[Path]:
    split = {r["image_id"]: r["split"] for r in csv.DictReader(open(SHIPPED.parents[1] / "splits" / "ham10000_split.csv"))}
    return [p for p in sorted((MINI / "images").iterdir()) if split.get(p.stem) == "test"]


@pytest.fixture(scope="module")
def predictor(shipped_bundle):
    from dermalens.inference import Predictor
    return Predictor(shipped_bundle)


@pytest.fixture(scope="module")
def card(shipped_bundle) -> dict:
    return json.loads((shipped_bundle / "card.json").read_text())


def test_fixtures_are_there():
    assert len(PHONE) >= 3 and len(CLINICAL) >= 2 and len(OTHER_DERMOSCOPY) >= 3


def test_phone_and_clinical_photos_are_not_assessed(predictor):
    for path in PHONE + CLINICAL:
        p = predictor.predict(path)
        assert not p.in_distribution and p.risk == "indeterminate", path.name
        assert "not_dermoscopic" in [r.code for r in p.ood_reasons], (path.name, p.dermoscopic)
        assert p.dermoscopic < p.dermoscopic_threshold


def test_dermoscopy_from_ham10000_and_another_source_passes_the_check(predictor):
    images = _ham_test_fixtures() + OTHER_DERMOSCOPY
    assert len(images) >= 17
    refused = [p.name for p in images if IMAGE_TYPE_CODES & {r.code for r in predictor.predict(p).ood_reasons}]
    assert refused == []


def test_the_same_decisions_at_bf16(shipped_bundle):
    """Where the CPU has AMX the runtime picks bf16 by default: the check's decisions on the fixtures hold there
    (elsewhere OpenVINO emulates bf16 with the same rounding)."""
    from dermalens.inference import Predictor
    pred = Predictor(shipped_bundle, runtime="openvino", precision="bf16")
    assert pred.bundle.gate.model.precision == "bf16"
    for path in PHONE + CLINICAL:
        assert "not_dermoscopic" in [r.code for r in pred.predict(path).ood_reasons], path.name
    for path in _ham_test_fixtures() + OTHER_DERMOSCOPY:
        assert not IMAGE_TYPE_CODES & {r.code for r in pred.predict(path).ood_reasons}, path.name


def test_api_answers_a_phone_photo_with_the_reason_and_no_diagnosis(shipped_bundle):
    with running_server(shipped_bundle) as url, httpx.Client(base_url=url, timeout=60) as client:
        data = base64.b64encode(PHONE[0].read_bytes()).decode()
        body = client.post("/predict", json={"image": "data:image/jpeg;base64," + data, "explain": True}).json()
        up = client.post("/predict/upload", files={"file": (PHONE[0].name, PHONE[0].read_bytes(), "image/jpeg")}).json()
    for r in (body, up):
        assert r["success"] and r["quality"]["in_distribution"] is False
        assert r["quality"]["reasons"][0]["code"] == "not_dermoscopic"
        assert "ordinary photo, not a dermoscopic image" in r["quality"]["reasons"][0]["message"]
        assert r["prediction"] is None and r["predictions"] == [] and r["malignancy"] is None
        assert r["risk"]["level"] == "indeterminate" and "explanation" not in r
        assert 0 <= r["quality"]["dermoscopic_probability"] < r["quality"]["dermoscopic_threshold"]


def test_the_advice_under_a_refusal_follows_its_reason(predictor):
    """Every refusal got one advice, 'does not look like a colour dermoscopic image': a dermoscopic image that was
    only too small was told so right under the reason that said it was too small."""
    lesion = Image.open(FIXTURES / "fullres" / "ISIC_0024311.jpg")
    tiny = predictor.predict(lesion.resize((40, 30)))
    assert [r.code for r in tiny.ood_reasons] == ["too_small"], tiny.ood_reasons
    assert "original" in tiny.to_dict()["risk"]["recommendation"]
    assert "does not look" not in tiny.to_dict()["risk"]["recommendation"]
    phone = predictor.predict(PHONE[0]).to_dict()["risk"]["recommendation"]
    grey = predictor.predict(lesion.convert("L")).to_dict()["risk"]["recommendation"]
    assert "only dermoscopic images" in phone and "colour original" in grey
    assert predictor.predict(lesion).to_dict()["risk"]["recommendation"] == predictor.predict(lesion).recommendation


def test_a_refusal_with_several_reasons_gets_the_advice_for_the_most_basic():
    from dermalens.inference.risk import NOT_ASSESSED_ADVICE, RECOMMENDATIONS, recommendation
    assert recommendation("indeterminate", ["too_small", "not_dermoscopic"]) == NOT_ASSESSED_ADVICE["not_dermoscopic"]
    assert recommendation("indeterminate", ["a_code_of_a_later_bundle"]) == RECOMMENDATIONS["indeterminate"]
    assert recommendation("low", ["too_small"]) == RECOMMENDATIONS["low"]


def test_card_figures_are_the_committed_scores(shipped_bundle, card):
    """Every pass / flag rate in card.json follows from report/gate_scores.csv and the card's threshold, and
    the threshold from the scores of the check part by the card's rule."""
    from dermalens.data.modality_sets import GateImage
    from dermalens.evaluate.gate_figures import rates
    from dermalens.train.modality_gate import choose_threshold
    g = card["modality"]
    rows = list(csv.DictReader(open(shipped_bundle / g["scores"])))
    items = [GateImage(Path(r["image"]), r["set"], int(r["dermoscopic"]), r["part"], "", r["stratum"]) for r in rows]
    p = np.array([float(r["probability"]) for r in rows])
    assert abs(choose_threshold(p, items) - g["threshold"]) < 1e-5
    assert rates(p, items, g["threshold"]) == g["figures"]
    assert not any(r["part"] == "heldout" and r["set"] == "ham10000" and r["stratum"] == "" and r["passed"] < 0.9
                   for r in g["figures"])


def test_committed_scores_are_the_gates_own(predictor, shipped_bundle, card):
    """The probabilities in the committed scores file are what the shipped check computes for those images."""
    rows = {(r["set"], r["image"]): float(r["probability"])
            for r in csv.DictReader(open(shipped_bundle / card["modality"]["scores"]))}
    checked = 0
    for folder in ("pad_ufes_20", "sd198_clinical", "isic2017_sample"):
        for path in sorted((MODALITY / folder).glob("*.jpg")):
            got = float(predictor.dermoscopic(predictor.load(path)[None])[0])
            assert abs(got - rows[(folder, path.name)]) < 1e-4, path.name
            checked += 1
    assert checked >= 8


def test_gate_weights_are_plain_arrays(shipped_bundle, card):
    with np.load(shipped_bundle / card["modality"]["weights"], allow_pickle=False) as z:
        assert {"mean", "scale", "W0", "b0"} <= set(z.files)


def test_shipped_margins_are_the_two_checks_of_its_network(predictor, card):
    """gate.npz's margins (which check refused) are the same two checks its network combines: the network's logit
    is the check threshold's logit plus the lower margin, on real images of every kind."""
    gate = predictor.bundle.gate
    assert {"margins_W", "margins_b"} <= set(gate.weights)
    paths = PHONE + CLINICAL + OTHER_DERMOSCOPY + sorted((FIXTURES / "fullres").glob("*.jpg"))
    feats = gate.features(np.stack([predictor.load(p) for p in paths]))
    w = gate.weights
    m = ((feats - w["mean"]) / w["scale"]) @ w["margins_W"] + w["margins_b"]
    t = card["modality"]["threshold"]
    logit = np.log(gate.probability_from_features(feats) / (1 - gate.probability_from_features(feats)))
    assert np.allclose(logit, np.log(t / (1 - t)) + m.min(axis=1), atol=1e-3)


def test_a_gate_with_damaged_margins_is_refused_by_name(tmp_path, shipped_bundle):
    import shutil

    from dermalens.inference.bundle import BundleError, load_bundle
    copy = tmp_path / "b"
    shutil.copytree(shipped_bundle, copy, ignore=shutil.ignore_patterns("report"))
    with np.load(copy / "gate.npz") as z:
        w = {k: z[k] for k in z.files}
    w["margins_W"] = w["margins_W"][:, :1]
    np.savez(copy / "gate.npz", **w)
    with pytest.raises(BundleError, match="gate.npz.*margins_W"):
        load_bundle(copy)


def test_bundle_without_its_gate_file_is_refused(tmp_path, shipped_bundle):
    import shutil

    from dermalens.inference.bundle import BundleError, load_bundle
    copy = tmp_path / "b"
    shutil.copytree(shipped_bundle, copy, ignore=shutil.ignore_patterns("report"))
    (copy / "gate.npz").unlink()
    with pytest.raises(BundleError, match="gate.npz"):
        load_bundle(copy)


def test_reason_carries_a_stable_code():
    from dermalens.inference.ood import NOT_DERMOSCOPIC, Reason, exposure_reasons
    assert NOT_DERMOSCOPIC.code == "not_dermoscopic" and "dermoscopic" in NOT_DERMOSCOPIC
    dark = exposure_reasons(np.zeros((32, 32, 3), np.uint8))
    assert [r.code for r in dark] == ["too_dark", "blank", "greyscale"]
    assert isinstance(dark[0], Reason) and dark[0].to_dict()["code"] == "too_dark"


def test_augmentations_keep_images_usable():
    from dermalens.train.modality_augment import augment_clinical, augment_dermoscopic, dark_rim
    img = Image.open(PHONE[0]).convert("RGB")
    rng = np.random.default_rng(0)
    for f in (augment_clinical, augment_dermoscopic):
        out = f(img, rng)
        assert out.mode == "RGB" and min(out.size) >= 16
    rim = np.asarray(dark_rim(img, rng))
    assert rim[0, 0].mean() < 30 and rim[rim.shape[0] // 2, rim.shape[1] // 2].mean() > 30


def test_a_device_overlay_is_a_small_mark_on_the_whole_image():
    """The composite check's overlaid positives keep the dermoscopic image whole: only a few per cent of the
    pixels change, unlike a composite, which puts the image inside something else."""
    from dermalens.train.modality_augment import device_overlay
    img = Image.open(OTHER_DERMOSCOPY[0]).convert("RGB")
    turns = [img.rotate(90 * k, expand=True) for k in range(4)]
    turns += [t.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for t in turns]
    for seed in range(6):
        out = device_overlay(img, np.random.default_rng(seed))
        assert out.mode == "RGB" and 300 <= max(out.size) <= 1200
        small = np.asarray(out.resize((160, 160)), np.int16)
        changed = min((np.abs(small - np.asarray(t.resize((160, 160)), np.int16)).max(axis=2) > 60).mean()
                      for t in turns)
        assert changed < 0.06, seed


def test_threshold_rule_is_the_strictest_that_keeps_every_check_set():
    from dermalens.data.modality_sets import GateImage
    from dermalens.train.modality_gate import choose_threshold
    items = ([GateImage(Path(f"a{i}"), "ham10000", 1, "check", "", "nv") for i in range(200)]
             + [GateImage(Path(f"b{i}"), "isic_archive", 1, "check", "", "x") for i in range(200)]
             + [GateImage(Path(f"c{i}"), "pad_ufes_20", 0, "check", "", "") for i in range(50)])
    p = np.concatenate([np.linspace(0.5, 1, 200), np.linspace(0.2, 1, 200), np.zeros(50)])
    t = choose_threshold(p, items)
    assert (p[200:400] >= t).mean() >= 0.985 and (p[:200] >= t).mean() >= 0.985
    assert not ((p[200:400] >= np.nextafter(t, 1)).mean() >= 0.985)


@pytest.mark.skipif(not (SHARED / "pad_ufes_20").is_dir(), reason="needs ../shared/data")
def test_gate_sets_never_share_a_patient_or_condition():
    from dermalens.data.modality_sets import gate_images
    items = gate_images(SHARED, SHIPPED.parents[1] / "splits" / "ham10000_split.csv")
    for s in ("pad_ufes_20", "sd198_clinical", "isic_archive", "ham10000"):
        parts = {}
        for it in items:
            if it.set == s:
                parts.setdefault(it.group, set()).add(it.part)
        assert all(len(v) == 1 for v in parts.values()), s
    i17 = {it.path.stem for it in items if it.set == "isic2017_sample"}
    assert not i17 & {it.path.stem for it in items if it.set == "isic_archive"}


@pytest.mark.skipif(not (SHARED / "isic_archive").is_dir(), reason="needs ../shared/data")
def test_external_check_reads_only_the_labelled_part_the_gate_never_saw(card):
    from dermalens.data.modality_sets import gate_images
    from dermalens.evaluate.external import external_records
    records, source = external_records(SHARED, "heldout")
    heldout = {it.path.stem for it in gate_images(SHARED, SHIPPED.parents[1] / "splits" / "ham10000_split.csv")
               if it.set == "isic_archive" and it.part == "heldout"}
    assert records and {r.image_id for r in records} <= heldout
    assert {r.dx for r in records} <= {"nv", "mel", "bkl"} and set(source.values()) <= {"ISIC 2016-2018", "ISIC 2020", "UDA-1"}
    ext = card["external"]
    assert ext["part"] == "heldout" and ext["all"]["n"] == len(records)
    assert sum(f["n"] for f in ext["by_source"].values()) == len(records)


def test_bf16_figures_sit_beside_the_fitted_ones(card):
    """`dermalens gate-check --precision bf16 --record-in-card` rescored the same images: same collections, parts
    and counts as the fitted figures, every collection's rate within a point of them (one image on isic2017_sample's
    93)."""
    fitted = {(r["set"], r["part"], r["stratum"]): r for r in card["modality"]["figures"] if r["part"] != "fit"}
    bf16 = {(r["set"], r["part"], r["stratum"]): r
            for r in card["modality"]["figures_by_precision"]["bf16"]["figures"]}
    assert set(bf16) == set(fitted)
    for key, r in bf16.items():
        assert r["n"] == fitted[key]["n"], key
        if key[2] == "":  # within a point, or one image on a set where an image is more than a point
            images_apart = abs(round(r["passed"] * r["n"]) - round(fitted[key]["passed"] * r["n"]))
            assert images_apart <= max(1, int(0.01 * r["n"])), key


def test_cached_gate_features_are_named_by_the_fit_recipe(monkeypatch):
    pytest.importorskip("torch")  # the fit side (export.gate_graph) needs the training install
    from dermalens.export import modality_bundle as mb
    from dermalens.preprocess import PreprocessSpec
    from types import SimpleNamespace
    card, spec = {"name": "dermalens", "version": "3.0.0"}, PreprocessSpec(input_size=(256, 341))
    items = [SimpleNamespace(path=f"/data/{i}.jpg", label=i % 2, part="fit") for i in range(4)]
    name = mb._cache_name(card, spec, items)
    assert name == mb._cache_name(card, spec, items) and name.startswith("dermalens-3.0.0-192x256-")
    assert mb._cache_name(card, spec, items[::-1]) != name  # the cache stores positions in this list
    monkeypatch.setattr(mb.fit, "FIT_VIEWS", {**mb.fit.FIT_VIEWS, "pad_ufes_20": 5})
    assert mb._cache_name(card, spec, items) != name  # another recipe never reads these features
    monkeypatch.undo()
    monkeypatch.setattr(mb, "GATE_INPUT", (168, 224))
    assert mb._cache_name(card, spec, items) != name
    monkeypatch.undo()
    monkeypatch.setattr(mb.fit, "COMPOSITES", {**mb.fit.COMPOSITES, "fit": 3000})
    assert mb._cache_name(card, spec, items) != name  # composites_fit.npz lives in the same folder
    monkeypatch.undo()
    monkeypatch.setattr(mb.fit, "composite_features", lambda *a, **k: None)  # another way of picking the images
    assert mb._cache_name(card, spec, items) != name
    monkeypatch.undo()
    monkeypatch.setattr(mb.fit, "composite_views", lambda *a, **k: None)  # another way of drawing them
    assert mb._cache_name(card, spec, items) != name
    monkeypatch.undo()
    monkeypatch.setattr(mb.fit, "OVERLAID", {**mb.fit.OVERLAID, "fit": 3000})  # overlaid_fit.npz shares the folder
    assert mb._cache_name(card, spec, items) != name


def test_the_composite_check_and_the_check_are_one_network_of_their_minimum():
    """gate.npz of both checks gives L + min(check logit - L, composite logit - L2): the check's own probability
    where the composite check passes by more, below the threshold wherever either refuses."""
    from dermalens.inference.modality import ModalityGate
    from dermalens.train.modality_gate import both_checks
    rng = np.random.default_rng(0)
    d = 12
    check = {"mean": rng.normal(size=d).astype(np.float32), "scale": rng.uniform(0.5, 2, d).astype(np.float32),
             "W0": rng.normal(size=(d, 1)).astype(np.float32), "b0": rng.normal(size=1).astype(np.float32)}
    head = {"W": rng.normal(size=(d, 1)).astype(np.float32), "b": rng.normal(size=1).astype(np.float32)}
    t, t2 = 0.52, 0.3
    X = rng.normal(size=(500, d)).astype(np.float32)
    h = (X - check["mean"]) / check["scale"]
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    u = (h @ check["W0"] + check["b0"])[:, 0] - logit(t)
    v = (h @ head["W"] + head["b"])[:, 0] - logit(t2)
    gate = ModalityGate(None, None, both_checks(check, head, t, t2), t)
    both = gate.probability_from_features(X)
    assert np.allclose(both, 1 / (1 + np.exp(-(logit(t) + np.minimum(u, v)))), atol=1e-5)
    # the margins say which check refused: the composite check where its margin is the lower one
    told = gate.scores_from_features(X).composite
    clear = np.abs(u - v) > 1e-4
    assert (told == ((v < 0) & (v < u)))[clear].all() and told.any() and (~told & (u < 0)).any()
    assert ((both >= t) == ((u >= 0) & (v >= 0)))[np.minimum(np.abs(u), np.abs(v)) > 1e-4].all()
    assert 0 < (v < 0).sum() and 0 < ((u >= 0) & (v >= 0)).sum()  # both cases occur


@pytest.mark.parametrize("dressing", ["screen capture", "document figure", "collage"])
def test_dermoscopy_dressed_as_a_screenshot_a_figure_or_a_collage_is_not_assessed(predictor, dressing):
    from dermalens.train.modality_augment import _collage, _document, _screen
    images = [Image.open(p).convert("RGB") for p in sorted((FIXTURES / "fullres").glob("*.jpg"))]
    rng = np.random.default_rng(3)
    made = {"screen capture": lambda: _screen(images[0], rng), "document figure": lambda: _document(images[0], rng),
            "collage": lambda: _collage(images + images[:1], rng)}[dressing]
    refused = 0
    for _ in range(4):
        p = predictor.predict_pixels(predictor.load(made())[None])[0]
        refused += not p.in_distribution and [r.code for r in p.ood_reasons] in (["composite_image"], ["not_dermoscopic"])
    assert refused >= 3, dressing
    assert all(predictor.predict(f).in_distribution for f in sorted((FIXTURES / "fullres").glob("*.jpg"))[:1])


def test_a_collage_is_told_it_is_one_and_a_phone_photo_that_it_is_a_photo(shipped_bundle):
    """Through the API: dermoscopy tiled into a collage gets `composite_image` and no diagnosis, a phone photo keeps
    `not_dermoscopic` (the reason says which check refused)."""
    import io

    from dermalens.train.modality_augment import _collage
    images = [Image.open(p).convert("RGB") for p in sorted((FIXTURES / "fullres").glob("*.jpg"))]
    buf = io.BytesIO()
    _collage(images, np.random.default_rng(1)).save(buf, "JPEG", quality=90)
    with running_server(shipped_bundle) as url, httpx.Client(base_url=url, timeout=60) as client:
        collage = client.post("/predict/upload", files={"file": ("figure.jpg", buf.getvalue(), "image/jpeg")}).json()
        phone = client.post("/predict/upload", files={"file": (PHONE[0].name, PHONE[0].read_bytes(), "image/jpeg")}).json()
    assert [r["code"] for r in collage["quality"]["reasons"]] == ["composite_image"]
    assert "screenshot" in collage["quality"]["reasons"][0]["message"]
    assert collage["prediction"] is None and collage["risk"]["level"] == "indeterminate"
    assert [r["code"] for r in phone["quality"]["reasons"]] == ["not_dermoscopic"]


def test_the_previous_check_is_compared_only_when_it_read_the_same_features(tmp_path):
    """fit-gate prints the bundle's earlier check beside the new one; an earlier check of another input size,
    backbone or stages cannot score the new features, and once stopped every refit after the whole fit."""
    pytest.importorskip("torch")  # the fit side (export.gate_graph) needs the training install
    from dermalens.export import modality_bundle as mb
    from dermalens.preprocess import PreprocessSpec
    spec = PreprocessSpec(input_size=mb.GATE_INPUT).to_dict()
    card = {"modality": {"threshold": 0.5, "preprocessing": spec, "backbone": {"name": mb.BACKBONE}}}
    np.savez(tmp_path / "gate.npz", mean=np.zeros(8), scale=np.ones(8), W0=np.ones((8, 1)), b0=np.zeros(1))
    assert mb._previous_gate(tmp_path, card, 8)[1] == 0.5
    older = {"modality": {**card["modality"], "preprocessing": {k: v for k, v in spec.items()
                                                                 if k != "trim_dark_margins"}}}
    assert mb._previous_gate(tmp_path, older, 8)[1] == 0.5  # a card written before a later preprocessing key
    assert mb._previous_gate(tmp_path, card, 12) is None  # other stages: other feature count
    other_size = {"modality": {**card["modality"], "preprocessing": {**spec, "input_size": [168, 224]}}}
    assert mb._previous_gate(tmp_path, other_size, 8) is None
    (tmp_path / "gate.npz").write_bytes(b"damaged")
    assert mb._previous_gate(tmp_path, card, 8) is None


def test_recorded_gate_figures_reach_the_model_card(tmp_path, shipped_bundle):
    """`dermalens gate-check --record-in-card` rewrites MODEL_CARD.md too: before, the card held the new figures and
    the model card the old ones until some other command rewrote it."""
    import shutil

    from dermalens.evaluate.gate_figures import record_in_card
    copy = tmp_path / "b"
    shutil.copytree(shipped_bundle, copy, ignore=shutil.ignore_patterns("report"))
    table = [{"set": "isic2017_sample", "part": "heldout", "stratum": "", "n": 93, "dermoscopic": True,
              "passed": 0.1234, "flagged": 0.8766}]
    record_in_card(copy, table, {"runtime": "openvino", "precision": "bf16"})
    assert "isic2017_sample heldout 12.3 % passed" in (copy / "MODEL_CARD.md").read_text()


def test_recorded_precision_figures_reach_the_model_card(tmp_path, shipped_bundle):
    """`dermalens evaluate --record-in-card` rewrites MODEL_CARD.md too (export.model_card.save_card), as gate-check does."""
    import shutil

    from dermalens.evaluate.precision import record_in_card
    copy = tmp_path / "b"
    shutil.copytree(shipped_bundle, copy, ignore=shutil.ignore_patterns("report"))
    metrics = {"n": 10, "balanced_accuracy": 0.1234, "macro_auroc": 0.5678, "ece": 0.01,
               "malignant": {"sensitivity": 0.5, "specificity": 0.5}}
    record_in_card(copy, "test", metrics, {"runtime": "onnxruntime", "precision": "fp16"})
    assert "| fp16 (onnxruntime) | test | 0.568 | 0.123 |" in (copy / "MODEL_CARD.md").read_text()
