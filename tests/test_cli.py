"""The command line: predict (with a bad file among good ones), evaluate, help texts."""
import csv
import json
import shutil
import subprocess
import sys

from PIL import Image

from dermalens.cli import main
from conftest import FIXTURES, MINI, REPO


def test_every_subcommand_has_help():
    for cmd in ("split", "train", "export", "evaluate", "predict", "serve", "gui", "bench"):
        r = subprocess.run([sys.executable, "-m", "dermalens.cli", cmd, "--help"], capture_output=True, text=True,
                           cwd=REPO)
        assert r.returncode == 0 and "usage: dermalens " + cmd in r.stdout


def test_predict_skips_a_bad_file_and_predicts_the_rest(tiny_bundle, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted((MINI / "images").iterdir())[:4]:
        shutil.copy(p, folder)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "empty.png").write_bytes(b"")
    Image.open(sorted((MINI / "images").iterdir())[0]).convert("L").save(folder / "grey.png")
    out_csv, out_json, explain = tmp_path / "r.csv", tmp_path / "r.json", tmp_path / "cams"
    rc = main(["predict", str(folder), str(FIXTURES / "fullres" / "*.jpg"), "--model", str(tiny_bundle),
               "--csv", str(out_csv), "--json", str(out_json), "--explain", str(explain), "--tta"])
    captured = capsys.readouterr()
    assert rc == 1  # some inputs were skipped
    assert "broken.jpg: not a recognised image" in captured.err and "empty.png" in captured.err
    rows = list(csv.DictReader(open(out_csv)))
    assert len(rows) == 8 and all(float(r["confidence"]) > 0 for r in rows if r["in_distribution"] == "True")
    grey = next(r for r in rows if r["file"].endswith("grey.png"))  # not assessed: why, and no diagnosis
    assert grey["in_distribution"] == "False" and grey["risk"] == "indeterminate"
    assert grey["prediction"] == grey["confidence"] == grey["p_mel"] == "" and "greyscale" in grey["not_assessed_codes"]
    assert "greyscale" in grey["not_assessed_because"] and f"grey.png: {grey['not_assessed_because']}" in captured.out
    data = json.loads(out_json.read_text())
    assert len(data["results"]) == 8 and len(data["errors"]) == 2
    assert len(list(explain.iterdir())) == 8
    assert "not a medical device" in captured.out


def test_predict_with_nothing_usable_fails(tiny_bundle, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nothing-*.jpg"), "--model", str(tiny_bundle)]) == 2
    assert "pattern matched no file" in capsys.readouterr().err


def test_evaluate_a_labelled_folder_writes_json_and_html(tiny_bundle, tmp_path):
    out = tmp_path / "report"
    rc = main(["evaluate", "--model", str(tiny_bundle), "--labels", str(MINI / "HAM10000_metadata.csv"),
               "--out", str(out)])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 49 and len(m["confusion_matrix"]) == 7
    html = (out / "report.html").read_text()
    assert "Confusion matrix" in html and "data:image/png;base64," in html and "not a medical device" in html
    # the OOD gate's pass rate per diagnosis, in metrics.json and in the per-class table
    assert set(m["ood_pass_rate_by_class"]) == set(m["per_class"]) and "passes OOD gate" in html


def test_evaluate_a_set_with_some_classes_only(tiny_bundle, tmp_path):
    (tmp_path / "images").mkdir()
    lines = ["image_id,dx"]
    for p in sorted((MINI / "images").iterdir()):
        row = next(r for r in csv.DictReader(open(MINI / "HAM10000_metadata.csv")) if r["image_id"] == p.stem)
        if row["dx"] in ("mel", "nv"):
            shutil.copy(p, tmp_path / "images")
            lines.append(f"{p.stem},{row['dx']}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    assert main(["evaluate", "--model", str(tiny_bundle), "--labels", str(tmp_path), "--out", str(tmp_path / "r")]) == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["classes_present"] == ["mel", "nv"] and m["per_class"]["df"]["recall"] is None


def test_clear_errors_for_wrong_paths(tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path / "nope")]) == 2
    assert "model bundle folder not found" in capsys.readouterr().err
    assert main(["split", "--data", str(tmp_path)]) == 2
    assert "metadata file not found" in capsys.readouterr().err


def test_evaluate_refuses_a_split_file_the_model_was_not_trained_on(tiny_bundle, leaky_split_file, tmp_path, capsys):
    from conftest import SPLIT_FILE
    other = leaky_split_file
    args = ["evaluate", "--model", str(tiny_bundle), "--split", "test", "--data", str(MINI), "--split-file", str(other)]
    assert main(args + ["--out", str(tmp_path / "r1")]) == 2
    assert "not the split this model was trained" in capsys.readouterr().err
    assert not (tmp_path / "r1").exists()
    assert main(args + ["--out", str(tmp_path / "r2"), "--allow-split-mismatch"]) == 0
    assert "NOT the model&#x27;s own split" in (tmp_path / "r2" / "report.html").read_text()
    assert json.loads((tmp_path / "r2" / "metrics.json").read_text())["split_file"]["is_the_models_split"] is False
    # the model's own split file passes without the flag
    assert main(["evaluate", "--model", str(tiny_bundle), "--split", "test", "--data", str(MINI), "--split-file",
                 str(SPLIT_FILE), "--out", str(tmp_path / "r3")]) == 0
    assert json.loads((tmp_path / "r3" / "metrics.json").read_text())["split_file"]["is_the_models_split"] is True
