"""Ensemble bundles, patient-metadata fusion, the operating point with a margin and subgroup figures."""
import base64
import csv
import json

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from conftest import MINI, SPLIT_FILE
from serverutil import running_server

from dermalens.inference import Predictor
from dermalens.inference.metadata import (SITES, MetadataError, MetadataModel, PatientMetadata, fuse,
                                          read_metadata_csv)
from dermalens.inference.softmax import softmax

LESION = sorted((MINI / "images").iterdir())[0]


@pytest.fixture(scope="module")
def ensemble_bundle(tiny_run, tmp_path_factory):
    """Two tiny networks of different input sizes, exported as one bundle (the second trains in seconds)."""
    from dermalens.export.bundle import export_bundle
    from dermalens.train.config import TrainConfig
    from dermalens.train.loop import train
    second = tmp_path_factory.mktemp("tiny_run_b")
    train(TrainConfig(backbone="custom_cnn", pretrained=False, input_size=(40, 56), epochs=1, batch_size=8,
                      data_root=str(MINI), split_file=str(SPLIT_FILE), out_dir=str(second), cache_dir="", threads=2,
                      seed=7))
    out = tmp_path_factory.mktemp("ensemble") / "bundle"
    export_bundle([tiny_run, second], out, MINI, SPLIT_FILE, name="tiny-ensemble", version="0.0.1",
                  test_extras=False)
    return out


# ---- metadata values -------------------------------------------------------------------------
def test_metadata_values_are_checked_and_unknown_means_not_given():
    m = PatientMetadata.parse("55", "Female", "lower_extremity")
    assert (m.age, m.sex, m.site) == (55.0, "female", "lower extremity")
    assert PatientMetadata.parse("", "unknown", "unknown").present == ()
    with pytest.raises(MetadataError, match="male, female, unknown"):
        PatientMetadata.parse(sex="x")
    with pytest.raises(MetadataError, match="back"):
        PatientMetadata.parse(site="elbow")
    for age in ("-1", "130", "old"):
        with pytest.raises(MetadataError, match="age"):
            PatientMetadata.parse(age=age)


def test_ham_metadata_csv_reads_as_it_is(tmp_path):
    table = read_metadata_csv(MINI / "HAM10000_metadata.csv")
    assert table["ISIC_0027419"] == PatientMetadata(80.0, "male", "scalp")
    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,sex\na,male\nb,robot\n")
    with pytest.raises(MetadataError, match="line 3"):
        read_metadata_csv(bad)


def test_a_metadata_file_is_read_as_a_spreadsheet_saves_it(tmp_path):
    """cp1252 (with a warning naming the file), ';' or tab separators with a decimal comma, column names in any
    case; a file whose columns fit no separator says which one it seems to use."""
    meta = tmp_path / "excel.csv"
    meta.write_bytes("Image_ID;Age;Sex;Localization;note\nISIC_1;55,5;female;back;lèvre\n".encode("cp1252"))
    said = []
    table = read_metadata_csv(meta, warn=said.append)
    assert table["ISIC_1"] == PatientMetadata(55.5, "female", "back")
    assert len(said) == 1 and str(meta) in said[0] and "cp1252" in said[0]
    meta.write_text("image_id\tage\nISIC_2\t70\n")
    assert read_metadata_csv(meta)["ISIC_2"].age == 70
    meta.write_text("image_id|age\nISIC_3|70\n")
    with pytest.raises(MetadataError, match="needs an image_id column"):
        read_metadata_csv(meta)
    meta.write_text("id;age\nISIC_3;70\n")
    with pytest.raises(MetadataError, match="seems to be separated by ';'"):
        read_metadata_csv(meta)


def test_missing_fields_are_marginalised_by_the_subset_model(tiny_bundle):
    model = Predictor(tiny_bundle).bundle.metadata
    assert model is not None, "a bundle exported from data with metadata carries a metadata model"
    probs = np.full((3, 7), 1 / 7, np.float32)
    metas = [None, PatientMetadata(), PatientMetadata(age=60.0)]
    ratio = model.log_ratio(metas, 7)
    assert np.all(ratio[:2] == 0), "nothing given: the image result stands"
    a = model.arrays
    z = a["coef_age"] @ np.eye(9)[6] + a["intercept_age"]  # age 60: the 60-69 band, by the age-only model
    assert np.allclose(ratio[2], z - np.log(np.exp(z).sum()) - a["log_prior_age"])
    fused, used = model.fuse(probs, metas)
    assert used.tolist() == [False, False, True] and np.allclose(fused[:2], probs[:2], atol=1e-6)
    assert np.allclose(fuse(probs, ratio, 0.0), probs, atol=1e-6)


def test_bundle_holds_no_pickle(ensemble_bundle):
    with np.load(ensemble_bundle / "metadata.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


# ---- the ensemble ----------------------------------------------------------------------------
def test_ensemble_is_the_mean_of_calibrated_members_then_one_temperature(ensemble_bundle):
    card = json.loads((ensemble_bundle / "card.json").read_text())
    members = card["members"]
    assert len(members) == 2 and members[0]["input_size"] != members[1]["input_size"]
    assert card["ensemble"]["features_member"] == members[0]["name"] == card["ood"]["features_member"]
    pred = Predictor(ensemble_bundle)
    px = pred.load(LESION)[None]
    got, _, maps = pred.forward(px)
    from PIL import Image
    member_probs = []
    for m in members:
        view = np.asarray(Image.fromarray(px[0]).resize(m["input_size"][::-1], Image.Resampling.BILINEAR))
        x = ((view.astype(np.float32) / 255 - m["mean"]) / m["std"]).transpose(2, 0, 1)[None].astype(np.float32)
        logits = ort.InferenceSession(str(ensemble_bundle / m["graph"])).run(["logits"], {"image": x})[0]
        member_probs.append(softmax(logits, m["temperature"]))
    want = softmax(np.log(np.mean(member_probs, axis=0)), card["temperature"])
    assert np.allclose(got, want, atol=1e-5)
    # Grad-CAM's maps come from the features member, at its own resolution
    feats = ort.InferenceSession(str(ensemble_bundle / members[0]["graph"])).run(
        ["features"], {"image": pred.bundle.spec.normalize(px)})[0]
    assert np.allclose(maps, feats, atol=1e-5)
    p = pred.predict(LESION, explain=True)
    assert p.cam is not None and p.cam.shape == tuple(pred.bundle.spec.input_size)


def test_single_network_cards_still_load_as_one_member(tiny_bundle):
    card = json.loads((tiny_bundle / "card.json").read_text())
    assert "members" not in card and (tiny_bundle / "model.onnx").is_file()
    b = Predictor(tiny_bundle).bundle
    assert len(b.members) == 1 and b.members[0].temperature == 1.0


def test_card_has_both_modes_and_the_margin_rule(ensemble_bundle):
    card = json.loads((ensemble_bundle / "card.json").read_text())
    assert {"validation", "validation_with_metadata", "test", "test_with_metadata"} <= set(card["metrics"])
    assert "lower end >= 0.90" in card["threshold_rules"]["malignant"]
    assert card["metadata"]["thresholds"]["malignant"] <= card["metadata"]["thresholds"]["high_risk"]
    assert card["metrics"]["test"]["subgroups"]["groups"]["sex"]
    assert "Patient metadata" in (ensemble_bundle / "MODEL_CARD.md").read_text()


def test_threshold_with_margin_keeps_the_lower_bound_above_the_target():
    from dermalens.evaluate.metrics import threshold_for_sensitivity
    from dermalens.export.calibrate import threshold_with_margin
    rng = np.random.default_rng(0)
    is_mal = rng.random(600) < 0.25
    score = np.clip(rng.normal(np.where(is_mal, 0.65, 0.3), 0.18), 0, 1)
    groups = np.arange(600) // 2  # two images per lesion
    t, info = threshold_with_margin(score, is_mal, groups)
    assert info["validation_sensitivity_lower_bound"] >= 0.90
    assert t < threshold_for_sensitivity(score, is_mal, 0.90), "the margin asks for more than the point estimate"
    assert info["validation_sensitivity"] == pytest.approx((score[is_mal] >= t).mean())


# ---- metadata everywhere ---------------------------------------------------------------------
def test_predict_says_whether_metadata_was_used(ensemble_bundle):
    pred = Predictor(ensemble_bundle)
    plain = pred.predict(LESION).to_dict()
    meta = pred.predict(LESION, metadata=PatientMetadata(70.0, "male", "back")).to_dict()
    assert plain["metadata"] == {"used": False, "given": None}
    assert meta["metadata"]["used"] and meta["metadata"]["given"]["site"] == "back"
    assert meta["malignancy"]["threshold"] == pytest.approx(
        json.loads((ensemble_bundle / "card.json").read_text())["metadata"]["thresholds"]["malignant"])
    assert plain["prediction"]["all_probabilities"] != meta["prediction"]["all_probabilities"]


def test_api_takes_metadata_as_json_and_form_fields(tiny_bundle):
    image = base64.b64encode(LESION.read_bytes()).decode()
    with running_server(tiny_bundle) as url, httpx.Client(base_url=url, timeout=60) as api:
        r = api.post("/predict", json={"image": image, "metadata": {"age": 55, "sex": "female", "site": "back"}})
        assert r.status_code == 200, r.text
        assert r.json()["metadata"]["used"] is True
        assert api.post("/predict", json={"image": image}).json()["metadata"]["used"] is False
        r = api.post("/predict", json={"image": image, "metadata": {"sex": "robot"}})
        assert r.status_code == 422 and "'male'" in r.json()["error"]["message"]
        r = api.post("/predict", json={"image": image, "metadata": {"age": 300}})
        assert r.status_code == 422 and "age" in r.json()["error"]["message"]
        files = {"file": ("lesion.jpg", LESION.read_bytes(), "image/jpeg")}
        r = api.post("/predict/upload", files=files, data={"age": "40", "site": "face"})
        assert r.status_code == 200 and r.json()["metadata"]["given"]["site"] == "face"
        r = api.post("/predict/upload", files=files, data={"site": "elbow"})
        assert r.status_code == 422 and "upper extremity" in r.json()["error"]["message"]
        assert api.get("/model").json()["metadata"]["sites"] == list(SITES)


def test_cli_predict_and_evaluate_with_metadata(tiny_bundle, tmp_path, capsys):
    from dermalens.cli import main
    images = sorted((MINI / "images").iterdir())[:3]
    out = tmp_path / "p.json"
    assert main(["predict", *map(str, images), "--model", str(tiny_bundle), "--metadata",
                 str(MINI / "HAM10000_metadata.csv"), "--json", str(out)]) == 0
    assert all(r["metadata_used"] for r in json.loads(out.read_text())["results"])
    assert main(["predict", str(images[0]), "--model", str(tiny_bundle), "--age", "50", "--sex", "male",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["results"][0]["metadata_used"]
    assert main(["predict", *map(str, images[:2]), "--model", str(tiny_bundle), "--age", "50"]) == 2
    assert "exactly one image" in capsys.readouterr().err
    assert main(["predict", str(images[0]), "--model", str(tiny_bundle), "--sex", "robot"]) == 2
    assert "male, female, unknown" in capsys.readouterr().err
    report = tmp_path / "rep"
    assert main(["evaluate", "--model", str(tiny_bundle), "--data", str(MINI), "--split", "val",
                 "--out", str(report)]) == 0
    m = json.loads((report / "metrics.json").read_text())
    assert m["metadata_used"] is False and m["with_metadata"]["metadata_used"] is True
    assert set(m["subgroups"]["groups"]) == {"age", "sex", "site"}
    assert "Subgroups" in (report / "report.html").read_text()
    assert main(["evaluate", "--model", str(tiny_bundle), "--data", str(MINI), "--split", "val", "--no-metadata",
                 "--out", str(tmp_path / "rep2")]) == 0
    assert "with_metadata" not in json.loads((tmp_path / "rep2" / "metrics.json").read_text())


def test_gui_batch_reads_patient_columns_from_the_labels_csv(tiny_bundle, tmp_path):
    from dermalens.gui.backend import LocalBackend
    from dermalens.gui.batch import batch_items, run_batch
    labels = tmp_path / "labels.csv"
    rows = list(csv.DictReader(open(MINI / "HAM10000_metadata.csv")))[:4]
    with open(labels, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image_id", "dx", "age", "sex", "localization"])
        w.writeheader()
        w.writerows({k: r[k] for k in w.fieldnames} for r in rows)
    items = batch_items(MINI / "images", labels)
    assert items[0][3] == {"age": float(rows[0]["age"]), "sex": rows[0]["sex"], "site": rows[0]["localization"]}
    res = run_batch(LocalBackend(tiny_bundle), items)
    assert all(r["metadata_used"] for r in res.rows) and res.metrics["n"] == 4
