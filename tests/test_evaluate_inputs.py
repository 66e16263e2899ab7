"""`dermalens evaluate`: inputs a user can get wrong get one clear line (exit 2) before any work, and sets
the figures cannot all be computed on still give a summary (exit 0)."""
import csv
import json
import shutil
from pathlib import Path

import pytest

from dermalens.cli import main
from conftest import MINI, SPLIT_FILE


def _labelled_set(folder: Path, classes: set[str]) -> Path:
    """The fixture images of `classes` with a labels.csv beside them."""
    (folder / "images").mkdir(parents=True)
    lines = ["image_id,dx"]
    for row in csv.DictReader(open(MINI / "HAM10000_metadata.csv")):
        if row["dx"] in classes:
            shutil.copy(MINI / "images" / f"{row['image_id']}.jpg", folder / "images")
            lines.append(f"{row['image_id']},{row['dx']}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize("classes, reasons", [
    ({"nv"}, ["macro AUROC needs images of at least two classes", "need malignant images"]),
    ({"nv", "bkl"}, ["need malignant images"]),
    ({"mel", "bcc"}, ["need benign images"]),
])
def test_a_set_without_both_benign_and_malignant_images_gets_a_summary(tiny_bundle, tmp_path, capsys,
                                                                       classes, reasons):
    labels = _labelled_set(tmp_path / "set", classes)
    out = tmp_path / "r"
    assert main(["evaluate", "--model", str(tiny_bundle), "--labels", str(labels), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "n/a" in captured.out
    for reason in reasons:
        assert reason in captured.out
    m = json.loads((out / "metrics.json").read_text(), parse_constant=pytest.fail)  # no NaN: strict JSON
    assert m["classes_present"] == sorted(classes) and "auroc" not in m["malignant"]
    html = (out / "report.html").read_text()
    assert all(reason in html for reason in reasons)


def test_a_bad_out_is_refused_before_the_model_is_loaded(tmp_path, capsys):
    """A missing --model would fail at once: the --out message proves --out was checked first."""
    taken = tmp_path / "taken.txt"
    taken.write_text("keep me")
    cases = [(taken, "is a file"), (taken / "sub", f"{taken} is a file")]
    for out, message in cases:
        assert main(["evaluate", "--model", str(tmp_path / "no-model"), "--labels", str(MINI / "HAM10000_metadata.csv"),
                     "--out", str(out)]) == 2, out
        err = capsys.readouterr().err
        assert message in err and "--out" in err and "model bundle folder not found" not in err, (out, err)
        assert "Traceback" not in err
    assert taken.read_text() == "keep me"


def test_an_out_in_a_read_only_folder_is_one_line_before_the_model_is_loaded(tmp_path, capsys, monkeypatch):
    """A read-only mount (where even root cannot write, so os.access would not tell) is found by a real write
    into the folder --out would be made in; simulated here, as no folder is read-only on every host."""
    import errno
    import tempfile
    read_only = tmp_path / "mounted"
    read_only.mkdir()
    real, tried = tempfile.TemporaryFile, []

    def temporary_file(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == read_only:
            tried.append(dir)
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)
    monkeypatch.setattr(tempfile, "TemporaryFile", temporary_file)
    out = read_only / "reports" / "run1"
    assert main(["evaluate", "--model", str(tmp_path / "no-model"), "--labels", str(MINI / "HAM10000_metadata.csv"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert tried, "the folder was not tried with a real write"
    assert f"--out {out}: cannot write in {read_only} (Read-only file system)" in err, err
    assert len(err.strip().splitlines()) == 1 and "model bundle folder not found" not in err, err
    assert not (read_only / "reports").exists()


def test_split_and_labels_together_are_refused(tmp_path, capsys):
    for extra in (["--split", "val"], ["--split-file", str(SPLIT_FILE)], ["--allow-split-mismatch"]):
        assert main(["evaluate", "--model", str(tmp_path / "no-model"), "--labels", str(MINI / "HAM10000_metadata.csv"),
                     "--out", str(tmp_path / "r"), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert f"{extra[0]} goes with a HAM10000 split" in err and "--labels evaluates the images it lists" in err
    assert not (tmp_path / "r").exists()


def test_a_split_file_with_an_image_in_two_splits_is_refused_even_with_allow_mismatch(tiny_bundle, tmp_path, capsys):
    rows = list(csv.DictReader(open(SPLIT_FILE)))
    twice = [r for r in rows if r["split"] == "train"][:3]
    broken = tmp_path / "overlap.csv"
    with open(broken, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows + [dict(r, split="test") for r in twice])
    assert main(["evaluate", "--model", str(tiny_bundle), "--data", str(MINI), "--split-file", str(broken),
                 "--allow-split-mismatch", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "3 image(s) in more than one split" in err and twice[0]["image_id"] in err
    assert not (tmp_path / "r").exists()


def test_external_check_names_the_folders_its_help_names(tmp_path, capsys):
    """--help said isic_archive/ while the error named isic2017_sample/labels.csv: both now name both."""
    from dermalens.cli import build_parser
    ex = build_parser()._subparsers._group_actions[0].choices["external-check"]
    assert "isic_archive/ and isic2017_sample/" in " ".join(ex.format_help().split())
    (tmp_path / "isic_archive").mkdir()
    (tmp_path / "isic_archive" / "labels.csv").write_text("image_id,dx,source,patient_id\n")
    for data, missing in ((tmp_path / "none", "isic_archive/labels.csv and isic2017_sample/labels.csv"),
                          (tmp_path, "isic2017_sample/labels.csv")):
        assert main(["external-check", "--data", str(data), "--model", str(tmp_path / "no-bundle")]) == 2
        err = capsys.readouterr().err
        assert f"{data}: missing {missing} (--data is the folder holding isic_archive/ and isic2017_sample/" in err
        assert "model bundle" not in err  # named before the bundle is loaded


def test_the_assessed_share_is_what_a_user_gets(shipped_bundle):
    """metrics["assessed_rate"] (the external check's 'assessed (every check)') counts the images that
    predict_pixels answers: every check passed, as the API decides it."""
    from dermalens.data.datasets import Record
    from dermalens.evaluate.run import evaluate_records
    from dermalens.inference import Predictor
    from conftest import FIXTURES
    rows = list(csv.DictReader(open(MINI / "HAM10000_metadata.csv")))[:12]
    records = [Record(r["image_id"], r["dx"], MINI / "images" / f"{r['image_id']}.jpg", r["lesion_id"]) for r in rows]
    records += [Record(p.stem, "nv", p, p.stem) for p in sorted((FIXTURES / "modality").rglob("*.jpg"))]
    predictor = Predictor(shipped_bundle, share_cores=False)
    res = evaluate_records(predictor, records, progress=False, subgroups=False)
    preds = predictor.predict_pixels(res["pixels"])
    answered = [p.in_distribution for p in preds]
    assert list(res["assessed"]) == answered and 0 < sum(answered) < len(answered)
    assert res["metrics"]["assessed_rate"] == pytest.approx(sum(answered) / len(answered))
    codes = [{r.code for r in p.ood_reasons} for p in preds]
    assert res["metrics"]["refused_by"] == pytest.approx(
        {c: sum(c in cs for cs in codes) / len(codes) for c in set().union(*codes)})
