"""`dermalens export --out`: an existing bundle is replaced only with --force, whole, and never by mistake."""
import json
import shutil

import pytest

from dermalens.cli import main
from conftest import MINI, SPLIT_FILE


def _export(run, out, *flags):
    return main(["export", str(run), "--out", str(out), "--data", str(MINI), "--split-file", str(SPLIT_FILE),
                 "--no-test", "--no-metadata", *flags])


def _served(tiny_bundle, tmp_path):
    """A copy of a bundle with what a later fit-gate and evaluate add: files no new export writes."""
    target = tmp_path / "served"
    shutil.copytree(tiny_bundle, target)
    (target / "gate.onnx").write_bytes(b"old check")
    (target / "report").mkdir()
    (target / "report" / "gate_scores.csv").write_text("old")
    return target


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_refuses_a_bundle_folder_without_force_and_changes_nothing(tiny_run, tiny_bundle, tmp_path, capsys):
    target = _served(tiny_bundle, tmp_path)
    before = _files(target)
    assert _export(tiny_run, target, "--version", "5.0.0") == 2
    err = capsys.readouterr().err
    assert "already holds a bundle (tiny-test-model 0.0.1)" in err and "--force" in err
    assert "not newer" not in err
    assert _export(tiny_run, target, "--version", "0.0.1") == 2  # the same version: said too
    assert "--version 0.0.1 is not newer than the 0.0.1 it would replace" in capsys.readouterr().err
    assert _files(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["served"]


def test_export_with_force_replaces_the_bundle_whole(tiny_run, tiny_bundle, tmp_path, capsys):
    target = _served(tiny_bundle, tmp_path)
    assert _export(tiny_run, target, "--version", "0.0.1", "--force", "--name", "other") == 0
    card = json.loads((target / "card.json").read_text())
    assert card["name"] == "other" and card["version"] == "0.0.1"
    assert not (target / "gate.onnx").exists() and not (target / "report").exists(), "old bundle's files left"
    assert not (target / "metadata.npz").exists()  # --no-metadata: the old bundle's metadata model is gone too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["served"], "no staging or old folder left behind"


def test_export_never_writes_into_a_folder_of_other_files(tiny_run, tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    for flags in ([], ["--force"]):
        assert _export(tiny_run, notes, *flags) == 2
        assert "holds files but no bundle" in capsys.readouterr().err
    assert (notes / "todo.txt").read_text() == "mine" and [p.name for p in notes.iterdir()] == ["todo.txt"]
    (tmp_path / "file").write_text("x")
    assert _export(tiny_run, tmp_path / "file" / "b") == 2
    assert "lies inside a file" in capsys.readouterr().err


@pytest.mark.parametrize("version", ["v4", "4", "3.0", "3.0.0-rc1", "03.0.0", ""])
def test_export_version_must_be_major_minor_patch(version, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", "run", "--out", str(tmp_path / "b"), "--version", version])
    assert "MAJOR.MINOR.PATCH" in capsys.readouterr().err


def test_export_warns_that_a_capped_bundle_is_not_a_release(tiny_run, tmp_path, capsys):
    assert _export(tiny_run, tmp_path / "quick", "--max-images-per-split", "8") == 0
    assert "not a release" in capsys.readouterr().err


def test_a_folder_that_cannot_be_renamed_gets_its_contents_replaced(tiny_run, tiny_bundle, tmp_path, monkeypatch):
    """A container's mounted volume cannot be renamed; the bundle in it is still replaced whole."""
    from dermalens.export import target as target_mod
    served = _served(tiny_bundle, tmp_path)
    real = target_mod.os.replace

    def no_rename_of(path):
        def replace(src, dst):
            if str(src) == str(path):
                raise OSError(16, "Device or resource busy")
            return real(src, dst)
        return replace
    monkeypatch.setattr(target_mod.os, "replace", no_rename_of(served))
    assert _export(tiny_run, served, "--version", "1.0.0", "--force") == 0
    monkeypatch.undo()
    assert json.loads((served / "card.json").read_text())["version"] == "1.0.0"
    assert not (served / "gate.onnx").exists() and not (served / "report").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["served"]


def test_a_volume_that_fills_up_keeps_its_old_bundle(tiny_run, tiny_bundle, tmp_path, monkeypatch):
    """On a mounted volume the new bundle is copied in before anything old is removed: a copy that fails (a full
    disk) leaves the served bundle as it was."""
    from dermalens.export import target as target_mod
    served = _served(tiny_bundle, tmp_path)
    before = _files(served)
    real = target_mod.os.replace
    monkeypatch.setattr(target_mod.os, "replace",
                        lambda src, dst: (_ for _ in ()).throw(OSError(16, "Device or resource busy"))
                        if str(src) == str(served) else real(src, dst))

    def full_disk(src, dst, **kw):
        (dst / "half").mkdir(parents=True)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(target_mod.shutil, "copytree", full_disk)
    assert _export(tiny_run, served, "--version", "1.0.0", "--force") != 0
    monkeypatch.undo()
    assert _files(served) == before and sorted(p.name for p in tmp_path.iterdir()) == ["served"]


def test_force_on_the_current_folder_replaces_the_bundle_there(tiny_run, tiny_bundle, tmp_path, monkeypatch):
    served = _served(tiny_bundle, tmp_path)
    monkeypatch.chdir(served)
    assert _export(tiny_run, ".", "--version", "1.0.0", "--force") == 0
    assert json.loads((served / "card.json").read_text())["version"] == "1.0.0"
    assert not (served / "gate.onnx").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["served"]
