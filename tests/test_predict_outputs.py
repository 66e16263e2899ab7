"""`dermalens predict` in-process: its inputs, its output paths and what it leaves on disk."""
import csv
import os
import shutil
from pathlib import Path

import pytest

from dermalens.cli import main
from conftest import FIXTURES

LESION = FIXTURES / "fullres" / "ISIC_0024311.jpg"


def _lesion(folder: Path, name: str = "a.jpg") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(LESION, folder / name))


def test_an_existing_file_whose_name_looks_like_a_pattern_is_read_as_that_file(tmp_path):
    from dermalens.predict import expand_inputs
    img = _lesion(tmp_path, "scan[1].jpg")
    assert expand_inputs([str(img)]) == ([img], [])


def test_one_image_named_two_ways_is_predicted_once(tmp_path, monkeypatch):
    from dermalens.predict import expand_inputs
    img = _lesion(tmp_path / "in")
    monkeypatch.chdir(tmp_path)
    paths, _ = expand_inputs(["in/a.jpg", str(img), "in", "in/../in/*.jpg"])
    assert paths == [Path("in/a.jpg")]


def _refused(args, capsys) -> str:
    """Run predict, expect a refusal before any image is read, return its message."""
    assert main(["predict", *map(str, args)]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "predicted" not in err and "not a medical device" not in out, (out, err)
    return err


def test_an_output_file_named_like_the_overlay_folder_is_refused_first(shipped_bundle, tmp_path, capsys):
    img = _lesion(tmp_path / "in")
    for flag in ("--csv", "--json"):
        err = _refused([img, "--model", shipped_bundle, flag, tmp_path / "out", "--explain", tmp_path / "out"], capsys)
        assert f"{flag} {tmp_path / 'out'}" in err and "--explain" in err


def test_an_output_file_that_is_the_metadata_file_is_refused_first(shipped_bundle, tmp_path, capsys):
    img = _lesion(tmp_path / "in")
    meta = tmp_path / "meta.csv"
    meta.write_text("image_id,age\na,50\n")
    for flag in ("--csv", "--json"):
        err = _refused([img, "--model", shipped_bundle, "--metadata", meta, flag, meta], capsys)
        assert "--metadata" in err
    assert meta.read_text() == "image_id,age\na,50\n"


def _unwritable_folder(tmp_path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
    else:  # root writes through permission bits; sysfs refuses new files even to root
        folder = Path("/sys")
    try:
        (folder / "dermalens-probe").touch()
    except OSError:
        return folder
    pytest.skip(f"{folder} can be written here")


def test_outputs_in_a_folder_that_cannot_be_written_are_refused_first(shipped_bundle, tmp_path, capsys):
    img = _lesion(tmp_path / "in")
    ro = _unwritable_folder(tmp_path)
    for extra in (["--csv", ro / "r.csv"], ["--json", ro / "r.json"], ["--explain", ro],
                  ["--explain", ro / "cams" / "deeper"]):
        err = _refused([img, "--model", shipped_bundle, *extra], capsys)
        assert "cannot be written" in err, (extra, err)


def test_an_overlay_never_replaces_an_input_image_in_the_overlay_folder(shipped_bundle, tmp_path):
    cams = tmp_path / "cams"
    a, b = _lesion(cams, "a.jpg"), _lesion(cams, "a_gradcam.png")  # b: what a's overlay would be called
    before = b.read_bytes()
    out = tmp_path / "r.csv"
    assert main(["predict", str(a), str(b), "--model", str(shipped_bundle), "--explain", str(cams),
                 "--csv", str(out)]) == 0
    assert b.read_bytes() == before
    rows = list(csv.DictReader(open(out)))
    assert len({r["gradcam"] for r in rows} | {str(a), str(b)}) == 4  # two overlays, neither an input


def test_an_interrupted_write_leaves_no_half_written_csv(shipped_bundle, tmp_path, monkeypatch):
    old = tmp_path / "results.csv"
    old.write_text("file,prediction\nlast_week.jpg,mel\n")
    real = csv.DictWriter.writerow

    def interrupted(self, row):  # Ctrl-C after the first row has gone out
        if getattr(self, "_rows", 0):
            raise KeyboardInterrupt
        self._rows = 1
        return real(self, row)
    monkeypatch.setattr(csv.DictWriter, "writerow", interrupted)
    monkeypatch.setattr(csv.DictWriter, "writerows", lambda self, rows: [self.writerow(r) for r in rows])
    imgs = [_lesion(tmp_path / "in", n) for n in ("a.jpg", "b.jpg", "c.jpg")]
    assert main(["predict", *map(str, imgs), "--model", str(shipped_bundle), "--csv", str(old)]) == 130
    assert old.read_text() == "file,prediction\nlast_week.jpg,mel\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "results.csv"]  # no temporary file left


def test_a_pattern_too_long_for_the_system_matches_nothing_and_is_no_crash(tmp_path):
    from dermalens.predict import expand_inputs
    pattern = str(tmp_path / ("b" * 300 + "*.jpg"))
    assert expand_inputs([pattern]) == ([], [f"{pattern}: pattern matched no file"])


def test_an_input_name_too_long_for_the_system_does_not_stop_an_explain_run_before_it_starts(tmp_path):
    from dermalens.predict import check_outputs, expand_inputs
    too_long = str(tmp_path / ("b" * 300 + ".jpg"))  # without --explain it is that file's error, the rest predicted
    inputs = [str(_lesion(tmp_path / "in")), too_long]
    paths, _ = expand_inputs(inputs)
    check_outputs(inputs, paths, None, None, str(tmp_path / "overlays"))


@pytest.mark.parametrize("flag", ["--csv", "--json", "--explain", "--metadata"])
def test_a_file_flag_given_twice_is_refused_not_half_ignored(flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # the first would be silently dropped, leaving an older file there
        main(["predict", str(LESION), flag, str(tmp_path / "a"), flag, str(tmp_path / "b")])
    assert e.value.code == 2 and f"{flag}: given twice" in capsys.readouterr().err


def test_a_replaced_csv_keeps_its_permissions(shipped_bundle, tmp_path):
    """The CSV is written to a temporary file and renamed over the old one; the old one's mode stays."""
    img = _lesion(tmp_path)
    out = tmp_path / "results.csv"
    out.write_text("old\n")
    out.chmod(0o640)
    assert main(["predict", str(img), "--model", str(shipped_bundle), "--csv", str(out)]) == 0
    assert out.read_text() != "old\n" and (out.stat().st_mode & 0o777) == 0o640


def test_images_after_a_flag_are_inputs_too(tmp_path, capsys):
    """argparse ended the list of inputs at the first flag and refused the rest as unrecognized arguments."""
    a, b = _lesion(tmp_path, "a.jpg"), _lesion(tmp_path, "b.jpg")
    assert main(["predict", str(a), "--tta", str(b), "--json", str(tmp_path / "r.json")]) == 0
    import json
    assert [Path(r["file"]).name for r in json.loads((tmp_path / "r.json").read_text())["results"]] == ["a.jpg", "b.jpg"]
    with pytest.raises(SystemExit):
        main(["predict", str(a), "--no-such-flag"])
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_an_input_that_matches_nothing_is_reported_in_the_exit_status_and_the_rest_predicted(shipped_bundle, tmp_path,
                                                                                             capsys):
    """A shell pattern that matched nothing, or a mistyped folder, used to be a warning only (exit 0)."""
    img = _lesion(tmp_path / "in")
    (tmp_path / "empty").mkdir()
    pattern = str(tmp_path / "in" / "*.jpeg")
    out_csv, out_json = tmp_path / "r.csv", tmp_path / "r.json"
    rc = main(["predict", str(img), pattern, str(tmp_path / "empty"), "--model", str(shipped_bundle),
               "--csv", str(out_csv), "--json", str(out_json)])
    err = capsys.readouterr().err
    assert rc == 1, err  # as for an unreadable file: some inputs gave nothing
    assert f"{pattern}: pattern matched no file" in err and f"{tmp_path / 'empty'}: folder holds no images" in err
    assert [r["file"] for r in csv.DictReader(open(out_csv))] == [str(img)]  # the image that exists is predicted
    import json
    data = json.loads(out_json.read_text())
    assert [r["file"] for r in data["results"]] == [str(img)]
    assert [e["file"] for e in data["errors"]] == [pattern, str(tmp_path / "empty")]
    assert "1 predicted, 2 skipped" in err


def test_when_no_input_exists_predict_fails_before_loading_the_model(tmp_path, capsys, monkeypatch):
    import dermalens.inference

    def no_load(*a, **k):
        raise AssertionError("the model was loaded although there was nothing to predict")
    monkeypatch.setattr(dermalens.inference, "Predictor", no_load)
    pattern, missing = str(tmp_path / "nothing-*.jpg"), str(tmp_path / "mistyped-folder")
    assert main(["predict", pattern, missing, "--csv", str(tmp_path / "r.csv")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "nothing to predict" in err
    assert f"{pattern}: pattern matched no file" in err and f"{missing}: no such file or folder" in err
    assert not (tmp_path / "r.csv").exists()
