"""The command line: predict (with a bad file among good ones), evaluate, help texts."""
import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
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
    assessed = [r for r in rows if r["in_distribution"] == "True"]
    assert sorted(map(str, explain.iterdir())) == sorted(r["gradcam"] for r in assessed)  # none of the grey image
    assert grey["gradcam"] == "" and len(assessed) < len(rows)
    assert "not a medical device" in captured.out


def test_the_pixel_limit_setting_reaches_predict_and_a_bad_one_is_named(tiny_bundle, tmp_path, monkeypatch, capsys):
    """DERMALENS_MAX_PIXELS was read by the server only: dermalens predict kept 40 M whatever it said."""
    image = tmp_path / "lesion.png"  # a PNG is decoded whole (a JPEG this size would be read at reduced scale)
    Image.open(FIXTURES / "fullres" / "ISIC_0024311.jpg").save(image)
    monkeypatch.setenv("DERMALENS_MAX_PIXELS", "100000")
    assert main(["predict", str(image), "--model", str(tiny_bundle)]) == 2
    assert "600x450 = 270,000 pixels (limit 100,000)" in capsys.readouterr().err
    monkeypatch.setenv("DERMALENS_MAX_PIXELS", "lots")
    assert main(["predict", str(image), "--model", str(tiny_bundle)]) == 2
    assert "DERMALENS_MAX_PIXELS must be a whole number of pixels" in capsys.readouterr().err


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
    assert "no HAM10000_metadata.csv in this folder" in capsys.readouterr().err
    # the data folder is read before the model is loaded: a wrong --data costs no load
    assert main(["evaluate", "--model", str(tmp_path / "nope"), "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "data folder not found" in err and "DERMALENS_DATA" in err and "model bundle" not in err, err


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


def _two_images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted((MINI / "images").iterdir())[:2]:
        shutil.copy(p, folder)
    return folder, sorted(folder.iterdir())


def test_outputs_that_would_replace_an_input_or_fail_late_are_refused_first(tiny_bundle, tmp_path, capsys):
    folder, images = _two_images(tmp_path)
    before = images[0].read_bytes()
    cases = [(["--csv", str(images[0])], "is one of the input images"),
             (["--json", str(tmp_path)], "is a folder"),
             (["--csv", str(tmp_path / "no-such" / "r.csv")], "does not exist"),
             (["--csv", str(tmp_path / "r.out"), "--json", str(tmp_path / "r.out")], "name the same file"),
             (["--explain", str(folder)], "among the input folders")]
    for extra, message in cases:
        assert main(["predict", str(folder), "--model", str(tiny_bundle), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
    assert images[0].read_bytes() == before and sorted(folder.iterdir()) == images  # nothing written


def test_overlays_of_images_with_the_same_name_do_not_replace_each_other(tiny_bundle, tmp_path, capsys):
    from dermalens.predict import overlay_names
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    src = sorted((MINI / "images").iterdir())[0]
    shutil.copy(src, a / "x.jpg")
    shutil.copy(src, b / "x.jpg")
    Image.open(src).save(a / "x.png")
    paths = [a / "x.jpg", a / "x.png", b / "x.jpg"]
    assert list(overlay_names(paths).values()) == ["x_gradcam.png", "x_2_gradcam.png", "x_3_gradcam.png"]
    out, cams = tmp_path / "r.csv", tmp_path / "cams"
    assert main(["predict", *map(str, paths), "--model", str(tiny_bundle), "--explain", str(cams), "--csv", str(out)]) == 0
    rows = list(csv.DictReader(open(out)))
    assert len(list(cams.iterdir())) == 3 and sorted(r["gradcam"] for r in rows) == sorted(map(str, cams.iterdir()))
    # the printed table says which overlay is whose too, not only --csv / --json
    table = capsys.readouterr().out.splitlines()
    assert "heat-map" in next(line for line in table if line.startswith("file "))
    # long paths are shown from the folder they share, which is named above the table
    assert f"files under {tmp_path}" in table
    for r in rows:
        line = next(line for line in table if line.startswith(os.path.relpath(r["file"], tmp_path) + " "))
        assert line.endswith("  " + os.path.basename(r["gradcam"])), line
    assert f"heat-maps (Grad-CAM) written to {cams}" in table


def test_an_input_name_near_the_systems_limit_still_gets_its_overlay(tiny_bundle, tmp_path):
    """A legal 252-character name plus `_gradcam.png` was too long to write: the run stopped after all the work
    with no table, CSV or JSON."""
    folder = tmp_path / "in"
    folder.mkdir()
    src = sorted((MINI / "images").iterdir())[0]
    shutil.copy(src, folder / "a.jpg")
    shutil.copy(src, folder / ("z" * 248 + ".jpg"))
    shutil.copy(src, folder / ("z" * 248 + ".png"))  # cut to the same stem: numbered, not replaced
    out, cams = tmp_path / "r.csv", tmp_path / "cams"
    assert main(["predict", str(folder), "--model", str(tiny_bundle), "--explain", str(cams), "--csv", str(out)]) == 0
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 3 and len({r["gradcam"] for r in rows}) == 3
    assert all(os.path.isfile(r["gradcam"]) and len(os.path.basename(r["gradcam"])) <= 255 for r in rows)


def test_an_overlay_that_cannot_be_written_costs_only_itself(tiny_bundle, tmp_path, monkeypatch, capsys):
    import errno
    import pathlib

    def full_disk(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(pathlib.Path, "write_bytes", full_disk)
    src = sorted((MINI / "images").iterdir())[0]
    out = tmp_path / "r.csv"
    assert main(["predict", str(src), "--model", str(tiny_bundle), "--explain", str(tmp_path / "cams"),
                 "--csv", str(out)]) == 0
    assert [r["gradcam"] for r in csv.DictReader(open(out))] == [""]
    assert "heat-map not written (No space left on device)" in capsys.readouterr().err


def test_the_table_tells_apart_files_whose_long_names_differ_only_in_their_folder(tiny_bundle, tmp_path, capsys):
    """Paths cut from the left to the column's width lost the folder: two patients' files read as the same row."""
    name = "dermoscopy_left_forearm_lesion_follow_up_visit_3.jpg"
    src = sorted((MINI / "images").iterdir())[0]
    for patient in ("patient_A", "patient_B"):
        (tmp_path / patient).mkdir()
        shutil.copy(src, tmp_path / patient / name)
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "patient_A"), str(tmp_path / "patient_B"), "--model", str(tiny_bundle)]) == 0
    table = capsys.readouterr().out.splitlines()
    rows = [line for line in table if line.startswith("patient_")]
    assert [r[:9] for r in rows] == ["patient_A", "patient_B"] and all(len(r.split()[0]) <= 48 for r in rows)
    assert f"files under {tmp_path}" in table


def test_table_columns_line_up_after_names_in_wide_characters(tiny_bundle, tmp_path, capsys):
    import unicodedata
    src = sorted((MINI / "images").iterdir())[0]
    for name in ("病変写真.jpg", "lesion.jpg"):
        shutil.copy(src, tmp_path / name)
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "病変写真.jpg"), str(tmp_path / "lesion.jpg"), "--model", str(tiny_bundle)]) == 0
    out = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(out) if line.startswith("file "))
    lines = out[start:start + 3]

    def column_of_class(line):  # in terminal columns, where a wide character takes two
        first, second = line.split()[:2]
        start = line.index(second, len(first))
        return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line[:start])
    assert len(lines) == 3 and len({column_of_class(line) for line in lines[1:]}) == 1


def test_a_broken_link_in_a_folder_is_reported_as_skipped_not_dropped(tiny_bundle, tmp_path, capsys):
    """It vanished from the folder's results without a word, and the run said every input was predicted (exit 0)."""
    from dermalens.gui.batch import list_images
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(sorted((MINI / "images").iterdir())[0], folder / "a.jpg")
    (folder / "moved.jpg").symlink_to(tmp_path / "gone.jpg")
    (folder / "notes.txt").symlink_to(tmp_path / "gone.txt")  # not named like an image: not ours to report
    out = tmp_path / "r.json"
    assert main(["predict", str(folder), "--model", str(tiny_bundle), "--json", str(out)]) == 1
    errors = json.loads(out.read_text())["errors"]
    assert [e["file"] for e in errors] == [str(folder / "moved.jpg")] and "which does not exist" in errors[0]["error"]
    assert list_images(folder) == [folder / "a.jpg", folder / "moved.jpg"]  # the desktop batch lists it too


def test_overlays_in_a_folder_are_not_read_as_lesions(tiny_bundle, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    src = sorted((MINI / "images").iterdir())[0]
    shutil.copy(src, folder / "a.jpg")
    assert main(["predict", str(folder / "a.jpg"), "--model", str(tiny_bundle), "--explain", str(tmp_path / "cams")]) == 0
    shutil.copy(tmp_path / "cams" / "a_gradcam.png", folder)
    capsys.readouterr()
    out = tmp_path / "r.csv"
    assert main(["predict", str(folder), "--model", str(tiny_bundle), "--csv", str(out)]) == 0
    assert "left out 1 Grad-CAM overlay" in capsys.readouterr().err
    assert [r["file"] for r in csv.DictReader(open(out))] == [str(folder / "a.jpg")]


def test_a_folder_with_images_only_below_it_suggests_recursive(tiny_bundle, tmp_path, capsys):
    folder, _ = _two_images(tmp_path)
    top = tmp_path
    assert main(["predict", str(top), "--model", str(tiny_bundle)]) == 2
    assert "add --recursive" in capsys.readouterr().err
    assert main(["predict", str(top), "--recursive", "--model", str(tiny_bundle)]) == 0


def test_a_metadata_file_that_matches_no_image_or_is_not_text_says_so(tiny_bundle, tmp_path, capsys):
    folder, images = _two_images(tmp_path)
    meta = tmp_path / "meta.csv"
    meta.write_text("image_id,age,sex,localization\nISIC_0000000,50,male,back\n")
    assert main(["predict", str(folder), "--model", str(tiny_bundle), "--metadata", str(meta)]) == 0
    assert "lists 0 of the 2 images" in capsys.readouterr().err
    meta.write_text(f"image_id,age\n{images[0].stem},50\n{images[0].stem},60\n")
    assert main(["predict", str(folder), "--model", str(tiny_bundle), "--metadata", str(meta)]) == 2
    assert "also on line 2" in capsys.readouterr().err
    meta.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)))
    assert main(["predict", str(folder), "--model", str(tiny_bundle), "--metadata", str(meta)]) == 2
    assert "not a text CSV file" in capsys.readouterr().err


def test_a_bad_port_setting_fails_serve_alone_with_a_message():
    env = {**os.environ, "DERMALENS_PORT": "abc"}
    ok = subprocess.run([sys.executable, "-m", "dermalens.cli", "predict", "--help"], env=env, capture_output=True,
                        text=True, cwd=REPO)
    assert ok.returncode == 0
    for args, env_ in ((["serve"], env), (["serve", "--port", "99999"], None)):
        r = subprocess.run([sys.executable, "-m", "dermalens.cli", *args], env=env_, capture_output=True, text=True,
                           cwd=REPO, timeout=60)
        assert r.returncode == 2 and "1 to 65535" in r.stderr and "Traceback" not in r.stderr


def test_a_run_with_nothing_predicted_leaves_no_older_csv_behind(tiny_bundle, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a JPEG")
    old = tmp_path / "results.csv"
    old.write_text("file,prediction\nlast_week.jpg,mel\n")
    assert main(["predict", str(bad), "--model", str(tiny_bundle), "--csv", str(old)]) == 2
    reader = csv.DictReader(open(old))  # an older run's rows would read as this run's
    assert list(reader) == [] and reader.fieldnames[:2] == ["file", "prediction"] and "gradcam" not in reader.fieldnames
    # the header stays: a 0-byte file is refused by CSV readers ("no columns") where an empty table is read


def test_partition_size_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "x.jpg", "--cluster", "local:1", "--out", "o", "--partition-size", "0"])
    assert "at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--repeat", "--batch-size", "--threads"])
@pytest.mark.parametrize("value", ["0", "-1", "two", ""])
def test_bench_counts_must_be_whole_numbers_of_at_least_one(flag, value, tmp_path, capsys):
    from dermalens.bench import main as bench_main
    with pytest.raises(SystemExit) as e:  # refused by argparse, before the bundle (absent here) is loaded
        bench_main(["--model", str(tmp_path / "no-model"), "--images", str(tmp_path), flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected a whole number of at least 1, got {value!r}" in err, err


@pytest.mark.slow
def test_bench_leaves_out_an_unreadable_image_and_runs_once_per_step(tiny_bundle, tmp_path, capsys):
    from dermalens.bench import main as bench_main
    images = tmp_path / "imgs"
    images.mkdir()
    shutil.copy(FIXTURES / "fullres" / "ISIC_0024311.jpg", images)
    (images / "000_broken.jpg").write_bytes(b"not a JPEG")
    bench_main(["--model", str(tiny_bundle), "--images", str(images), "--repeat", "1"])
    out = capsys.readouterr()
    assert "left out" in out.err and "000_broken.jpg" in out.err and "end to end" in out.out
    with pytest.raises(SystemExit, match="not a folder"):
        bench_main(["--model", str(tiny_bundle), "--images", str(images / "000_broken.jpg")])


def test_evaluate_labels_notes_a_repeated_row_and_names_skip_missing(tiny_bundle, tmp_path, capsys):
    rows = (MINI / "HAM10000_metadata.csv").read_text().splitlines()
    header, first = rows[0], rows[1]
    (tmp_path / "images").symlink_to(MINI / "images")
    (tmp_path / "twice.csv").write_text("\n".join([header, *rows[1:6], first]) + "\n")
    assert main(["evaluate", "--model", str(tiny_bundle), "--labels", str(tmp_path / "twice.csv"),
                 "--out", str(tmp_path / "r1")]) == 0
    assert "note: line 2 (" in capsys.readouterr().err
    (tmp_path / "gone.csv").write_text("\n".join([header, *rows[1:6], first.replace("ISIC_", "ISIC_9")]) + "\n")
    assert main(["evaluate", "--model", str(tiny_bundle), "--labels", str(tmp_path / "gone.csv"),
                 "--out", str(tmp_path / "r2")]) == 2
    assert "--skip-missing evaluates the images that are there" in capsys.readouterr().err


def test_a_metadata_file_naming_one_image_with_and_without_its_extension_must_agree(tmp_path):
    from dermalens.inference.metadata import MetadataError, read_metadata_csv
    meta = tmp_path / "meta.csv"
    meta.write_text("image_id,age\nlesion.jpg,50\n\nlesion,60\n")  # the blank line is the file's line 3
    with pytest.raises(MetadataError, match="line 4: image_id 'lesion' is also on line 2 as 'lesion.jpg'"):
        read_metadata_csv(meta)
    meta.write_text("image_id,age\nlesion,60\nlesion.jpg,50\n")
    with pytest.raises(MetadataError, match="line 3: image_id 'lesion.jpg' is also on line 2 as 'lesion'"):
        read_metadata_csv(meta)
    meta.write_text("image_id,age\nx.jpg,50\nx.png,60\nlesion,40\nlesion.jpg,40\n")  # two files; one image twice alike
    table = read_metadata_csv(meta)
    assert (table["x.jpg"].age, table["x.png"].age, table["lesion.jpg"].age) == (50, 60, 40)


@pytest.mark.parametrize("rank, says", [(None, True), ("0", True), ("1", False), ("3", False)])
def test_ctrl_c_is_said_once_for_a_distributed_run(rank, says, monkeypatch, capsys):
    """Under torchrun every rank gets Ctrl-C: rank 0 alone says "interrupted" (each rank said it once), and each
    still exits 130."""
    import dermalens.cli as cli

    def interrupted(a):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "cmd_train", interrupted)
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    assert main(["train"]) == 130
    assert ("interrupted" in capsys.readouterr().err) == says
