"""`dermalens evaluate --labels` on a researcher's own labelled folder: what the reader leaves out is named on
stderr, in metrics.json and in the report; metadata is matched to the images however the labels CSV names them;
figures a set cannot define are n/a with the reason, never a number."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from dermalens.cli import main
from conftest import MINI, REPO

ROWS = list(csv.DictReader(open(MINI / "HAM10000_metadata.csv")))


def _labelled_set(folder: Path, rows, id_of=lambda r: r["image_id"]) -> Path:
    (folder / "images").mkdir(parents=True)
    lines = ["image_id,dx"]
    for r in rows:
        shutil.copy(MINI / "images" / f"{r['image_id']}.jpg", folder / "images")
        lines.append(f"{id_of(r)},{r['dx']}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


def _add_phone_photos(labels: Path, photos) -> None:
    """Phone photos (refused by the image-type check) added to a labelled set, labelled nv."""
    with open(labels, "a") as f:
        for p in photos:
            shutil.copy(p, labels.parent / "images")
            f.write(f"{p.stem},nv\n")


def _metadata(path: Path, rows, id_of=lambda r: r["image_id"]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["image_id", "age", "sex", "localization"])
        for r in rows:
            w.writerow([id_of(r), r["age"], r["sex"], r["localization"]])
    return path


def test_skip_missing_names_every_listed_image_it_leaves_out(tiny_bundle, tmp_path, capsys):
    """Before: with --skip-missing the listed images that were not there vanished without a word: not on the
    terminal, not in metrics.json, not in the report (only 'skipped (unreadable) 0')."""
    labels = _labelled_set(tmp_path / "set", ROWS[:10])
    with open(labels, "a") as f:
        f.write("ISIC_gone_1,nv\nISIC_gone_2,mel\n")
    out = tmp_path / "r"
    assert main(["evaluate", "--model", str(tiny_bundle), "--labels", str(labels), "--skip-missing",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "ISIC_gone_1" in err and "ISIC_gone_2" in err and "not found" in err, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 10
    assert sorted(s["image_id"] for s in m["skipped"]) == ["ISIC_gone_1", "ISIC_gone_2"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "ISIC_gone_1" in html and "ISIC_gone_2" in html
    assert "listed but not found" in html


def test_an_unreadable_image_is_named_in_the_report(tiny_bundle, tmp_path, capsys):
    labels = _labelled_set(tmp_path / "set", ROWS[:8])
    broken = ROWS[0]["image_id"]
    (labels.parent / "images" / f"{broken}.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "r"
    assert main(["evaluate", "--model", str(tiny_bundle), "--labels", str(labels), "--out", str(out)]) == 0
    assert broken in capsys.readouterr().err
    html = (out / "report.html").read_text(encoding="utf-8")
    assert broken in html and "unreadable" in html


def test_no_readable_image_names_the_files_and_why(tiny_bundle, tmp_path, capsys):
    """Before: 'error: no readable images to evaluate', naming no file."""
    labels = _labelled_set(tmp_path / "set", ROWS[:3])
    for p in (labels.parent / "images").iterdir():
        p.write_bytes(b"x")
    assert main(["evaluate", "--model", str(tiny_bundle), "--labels", str(labels), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "none of the 3 images could be read" in err and ROWS[0]["image_id"] in err, err
    assert "not a recognised image" in err and "Traceback" not in err


def test_metadata_is_found_when_the_labels_name_images_with_their_extension(tiny_bundle, tmp_path, capsys):
    """Before: labels 'ISIC_1.jpg' and metadata 'ISIC_1' matched no image: every subgroup was 'not given' and the
    figures 'with metadata' were the image-only ones, silently."""
    rows = ROWS[:14]
    labels = _labelled_set(tmp_path / "set", rows, id_of=lambda r: f"{r['image_id']}.jpg")
    meta = _metadata(tmp_path / "meta.csv", rows)
    out = tmp_path / "r"
    assert main(["evaluate", "--model", str(tiny_bundle), "--labels", str(labels), "--metadata", str(meta),
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "gives no details" not in err, err
    m = json.loads((out / "metrics.json").read_text())
    sexes = m["subgroups"]["groups"]["sex"]
    assert "not given" not in sexes and sum(e["n"] for e in sexes.values()) == 14, sexes


def test_metadata_that_names_none_of_the_images_is_a_warning(tiny_bundle, tmp_path, capsys):
    """Before: a metadata file for other images gave 'with metadata' figures equal to the image-only ones and
    subgroups all 'not given', without a word on the terminal."""
    labels = _labelled_set(tmp_path / "set", ROWS[:6])
    meta = _metadata(tmp_path / "meta.csv", ROWS[20:26])
    out = tmp_path / "r"
    assert main(["evaluate", "--model", str(tiny_bundle), "--labels", str(labels), "--metadata", str(meta),
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: the metadata gives no details for 6 of the 6 images" in err, err
    assert ROWS[0]["image_id"] in err
    m = json.loads((out / "metrics.json").read_text())
    assert m["metadata_missing"]["count"] == 6
    assert "gives no details for 6 of the 6 images" in (out / "report.html").read_text(encoding="utf-8")


def test_the_report_is_utf8_whatever_the_locale(tiny_bundle, tmp_path):
    """Before: report.html (which declares charset utf-8) was written in the locale's encoding: under an ASCII
    locale a labels file in a folder named 'séance' crashed after every prediction ('ascii' codec can't encode
    ..., no file named) and left an empty report.html; under cp1252 the page would be mis-decoded."""
    labels = _labelled_set(tmp_path / "séance", ROWS[:6])
    out = tmp_path / "r"
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0",
               PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run([sys.executable, "-m", "dermalens.cli", "evaluate", "--model", str(tiny_bundle),
                           "--labels", str(labels), "--out", str(out)], env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    html = (out / "report.html").read_bytes().decode("utf-8")
    assert "séance" in html


def test_per_class_figures_a_set_cannot_define_are_na_with_the_reason():
    """Before: a class the set does not hold and the model never predicted showed precision 0.000 (0 of 0), and
    undefined recall, F1 and AUROC were blank cells without a word."""
    from dermalens.classes import CODES
    from dermalens.evaluate.metrics import classification_metrics
    from dermalens.evaluate.report import per_class_table
    y = np.array([CODES.index("nv")] * 4)
    probs = np.full((4, 7), 0.01)
    probs[:3, CODES.index("nv")] = 0.94
    probs[3, CODES.index("bkl")] = 0.94
    m = classification_metrics(y, probs, CODES)
    assert m["per_class"]["mel"]["predicted"] == 0 and m["per_class"]["bkl"]["predicted"] == 1
    html = per_class_table(m)
    mel = next(r for r in html.split("<tr>") if r.startswith("<td>mel</td>"))
    assert "0.000" not in mel and "n/a" in mel, mel
    bkl = next(r for r in html.split("<tr>") if r.startswith("<td>bkl</td>"))
    assert "<td>0.000</td>" in bkl  # predicted once, wrongly: a real 0
    assert "nan" not in html.lower()
    for why in ("no image of the class", "predicted the class for no image", "images of the class and of others"):
        assert why in html, why


def test_sklearn_warnings_about_absent_classes_do_not_reach_the_user(recwarn):
    """Before: a set of one class printed sklearn's 'y_pred contains classes not in y_true' with a site-packages
    path, once per figure set."""
    from dermalens.classes import CODES
    from dermalens.evaluate.metrics import classification_metrics
    y = np.array([CODES.index("nv")] * 3)
    probs = np.full((3, 7), 0.1)
    probs[0, CODES.index("mel")] = 0.9
    classification_metrics(y[:1], probs[:1], CODES, malignant_threshold=0.5, groups=["a"])
    classification_metrics(y, probs, CODES, malignant_threshold=0.5, groups=["a", "b", "c"])
    assert not [w for w in recwarn if "sklearn" in (w.filename or "")], [str(w.message) for w in recwarn]


def test_one_lesion_has_no_interval():
    """Before: one image (one lesion) got '95 % CI 1.000-1.000': a bootstrap of one lesion always redraws it, so
    the 'interval' claimed certainty."""
    from dermalens.classes import CODES
    from dermalens.evaluate.metrics import classification_metrics
    from dermalens.evaluate.report import _summary_rows
    probs = np.full((2, 7), 0.1)
    probs[:, CODES.index("nv")] = 0.4
    m = classification_metrics(np.array([CODES.index("nv")] * 2), probs, CODES, malignant_threshold=0.5,
                               groups=["HAM_1", "HAM_1"])
    ci = m["intervals"]
    assert all(ci[f] is None for f in ("accuracy", "balanced_accuracy", "ece", "malignant_specificity"))
    assert "one lesion" in ci["why_none"]
    assert all("CI" not in v for _, v in _summary_rows(m))


def test_the_report_says_how_many_images_a_user_would_get_no_answer_for(shipped_bundle, tmp_path, capsys):
    """Before: the report gave only 'passes the OOD gate'; that phone photos in a user's set are refused by the
    image-type check, and what share of the set the app would assess at all (metrics.json assessed_rate), was
    nowhere in it, while every figure counts those images."""
    from conftest import FIXTURES
    labels = _labelled_set(tmp_path / "set", ROWS[:10])
    _add_phone_photos(labels, sorted((FIXTURES / "modality" / "pad_ufes_20").glob("*.jpg"))[:3])
    out = tmp_path / "r"
    assert main(["evaluate", "--model", str(shipped_bundle), "--labels", str(labels), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["assessed_rate"] < 1
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "assessed (every check passed)" in html and "passes the image-type check" in html
    refused = round((1 - m["assessed_rate"]) * m["n"])
    assert f"{refused} of the {m['n']} images would not be assessed" in html
    assert "not dermoscopic" in html
    out = capsys.readouterr().out  # the terminal says it too: the desktop app's batch figures leave them out
    assert f"not assessed: {refused} of the {m['n']} images would not be assessed" in out, out


def test_a_bad_labels_csv_or_metadata_is_refused_before_the_model_is_loaded(tmp_path, capsys):
    """Before: the model was loaded (seconds to minutes) and only then the labels CSV read; a missing --model
    fails at once, so its message in place of the CSV's shows the order."""
    labels = _labelled_set(tmp_path / "set", ROWS[:3])
    labels.write_text(labels.read_text().replace(f",{ROWS[0]['dx']}\n", ",melanomaa\n", 1))
    assert main(["evaluate", "--model", str(tmp_path / "no-model"), "--labels", str(labels)]) == 2
    err = capsys.readouterr().err
    assert f"{labels}: 1 unknown diagnosis label" in err and "model bundle folder not found" not in err, err
    good = _labelled_set(tmp_path / "good", ROWS[:3])
    assert main(["evaluate", "--model", str(tmp_path / "no-model"), "--labels", str(good),
                 "--metadata", str(tmp_path / "nope.csv")]) == 2
    err = capsys.readouterr().err
    assert "nope.csv: metadata file not found" in err and "model bundle folder not found" not in err, err


def test_the_default_report_folder_is_named_after_the_labels_and_keeps_another_sets_report(
        tiny_bundle, tmp_path, capsys, monkeypatch):
    """Before: every labelled set went to reports/NAME-labels, so evaluating a second set silently replaced the
    first set's report."""
    monkeypatch.chdir(tmp_path)
    a = _labelled_set(tmp_path / "clinic_a", ROWS[:6])
    b = _labelled_set(tmp_path / "b", ROWS[6:10]).rename(tmp_path / "b" / "clinic_b.csv")
    other_a = _labelled_set(tmp_path / "elsewhere" / "clinic_a", ROWS[10:13])
    reports = tmp_path / "reports"
    for labels in (a, b):
        assert main(["evaluate", "--model", str(tiny_bundle), "--labels", str(labels)]) == 0
    assert sorted(p.name for p in reports.iterdir()) == ["tiny-test-model-labels-clinic_a",
                                                          "tiny-test-model-labels-clinic_b"]
    capsys.readouterr()
    # another set whose folder has the same name: a new folder, said so; the first set's report stays
    assert main(["evaluate", "--model", str(tiny_bundle), "--labels", str(other_a)]) == 0
    err = capsys.readouterr().err
    first, second = reports / "tiny-test-model-labels-clinic_a", reports / "tiny-test-model-labels-clinic_a-2"
    said = f"note: {first.relative_to(tmp_path)} holds the report of {a.resolve()}; this one goes to " \
           f"{second.relative_to(tmp_path)}"
    assert said in err and "--out" in err, err
    assert json.loads((first / "metrics.json").read_text())["n"] == 6
    assert json.loads((second / "metrics.json").read_text())["n"] == 3
    # the same set again: its own folder, replaced
    assert main(["evaluate", "--model", str(tiny_bundle), "--labels", str(a)]) == 0
    assert "holds the report" not in capsys.readouterr().err
    assert len(list(reports.iterdir())) == 3
    # --out naming another set's report: replaced, as asked, but not without a word
    assert main(["evaluate", "--model", str(tiny_bundle), "--labels", str(b), "--out", str(first)]) == 0
    assert f"warning: --out {first} held the report of {a.resolve()}; it is replaced" in capsys.readouterr().err
    assert json.loads((first / "metrics.json").read_text())["n"] == 4


def test_patient_columns_of_the_labels_csv_are_used_as_its_metadata(tiny_bundle, tmp_path, capsys):
    """Before: a labels CSV with age, sex and localization (HAM10000_metadata.csv has them) gave no subgroups
    unless the same file was given again as --metadata, and nothing said so."""
    rows = ROWS[:12]
    folder = tmp_path / "set"
    _labelled_set(folder, rows)
    with open(folder / "labels.csv", "w", newline="") as f:
        w = csv.writer(f, delimiter=";", lineterminator="\n")  # as Excel saves it in many European locales
        w.writerow(["Image_ID", "DX", "Age", "Sex", "Localization"])
        for r in rows:
            w.writerow([r["image_id"], r["dx"], r["age"].replace(".", ","), r["sex"], r["localization"]])
    out = tmp_path / "r"
    assert main(["evaluate", "--model", str(tiny_bundle), "--labels", str(folder), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"metadata: the age, sex, localization columns of {folder / 'labels.csv'}" in err, err
    assert "--no-metadata" in err
    sexes = json.loads((out / "metrics.json").read_text())["subgroups"]["groups"]["sex"]
    assert "not given" not in sexes and sum(e["n"] for e in sexes.values()) == 12, sexes
    # a value dermalens does not read (a site in French) is left out with a warning, not an error: the user gave
    # labels, and these columns came with them
    text = (folder / "labels.csv").read_text().splitlines()
    text[1] = ";".join(text[1].split(";")[:4] + ["lèvre"])
    (folder / "labels.csv").write_text("\n".join(text) + "\n")
    assert main(["evaluate", "--model", str(tiny_bundle), "--labels", str(folder), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "1 patient detail(s) that dermalens does not read are left out as not given (line 2: site must be" in err
    assert main(["evaluate", "--model", str(tiny_bundle), "--labels", str(folder), "--out", str(out),
                 "--no-metadata"]) == 0
    assert "metadata:" not in capsys.readouterr().err
    assert "subgroups" not in json.loads((out / "metrics.json").read_text())


def test_what_the_reader_has_to_say_about_a_labels_csv_reaches_the_terminal(tiny_bundle, tmp_path, capsys):
    """A cp1252 file, full diagnosis names, a listed ISIC_x.JPG for ISIC_x.jpg and images the CSV does not list:
    each read as meant, and each said on stderr."""
    folder = tmp_path / "set"
    _labelled_set(folder, ROWS[:8])
    names = {"mel": "Melanoma", "nv": "melanocytic nevi"}
    lines = ["image_id,dx,comment"] + [f"{r['image_id']}.JPG,{names.get(r['dx'], r['dx'])},vu à Genève"
                                       for r in ROWS[:6]]
    (folder / "labels.csv").write_bytes(("\n".join(lines) + "\n").encode("cp1252"))
    out = tmp_path / "r"
    assert main(["evaluate", "--model", str(tiny_bundle), "--labels", str(folder), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {folder / 'labels.csv'} is not UTF-8" in err, err
    assert "warning: 2 image(s) in" in err and ROWS[7]["image_id"] in err
    assert f"{ROWS[0]['image_id']}.JPG" in err and "warning:" in err
    assert json.loads((out / "metrics.json").read_text())["n"] == 6


def test_the_reports_heat_maps_are_of_assessed_images_only(shipped_bundle, tmp_path):
    """A set of phone photos, refused by the image-type check: the report still showed a class, a confidence and a
    heat-map for some of them, as a diagnosis, which no surface of dermalens gives for an image it refuses."""
    from conftest import FIXTURES
    labels = _labelled_set(tmp_path / "set", ROWS[:2])
    photos = sorted((FIXTURES / "modality" / "pad_ufes_20").glob("*.jpg"))
    _add_phone_photos(labels, photos)
    out = tmp_path / "r"
    assert main(["evaluate", "--model", str(shipped_bundle), "--labels", str(labels), "--out", str(out)]) == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    examples = html.split("Example heat-maps")[1]
    assert not any(p.stem in examples for p in photos), "a refused phone photo shown with a class and a heat-map"
    runtime = json.loads((out / "metrics.json").read_text())["runtime"]  # figures depend on the precision
    assert runtime["precision"] in ("fp32", "bf16") and f"{runtime['runtime']} {runtime['precision']}" in html


def test_images_too_small_to_read_are_counted_as_not_assessed(shipped_bundle, tmp_path):
    """evaluate skipped the size check that predict, the API and the apps apply: 80x60 thumbnails, all refused by
    them, were counted as assessed."""
    from PIL import Image
    labels = _labelled_set(tmp_path / "set", ROWS[:4])
    for f in (labels.parent / "images").iterdir():
        Image.open(f).resize((80, 60)).save(f)
    out = tmp_path / "r"
    assert main(["evaluate", "--model", str(shipped_bundle), "--labels", str(labels), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["assessed_rate"] == 0 and "too_small" in json.dumps(m.get("refused_by", m))
