"""`dermalens fit-gate`: every input is checked before the bundle is touched, and its cache default is absolute."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dermalens.cli import main
from conftest import REPO, SHARED, SPLIT_FILE

pytest.importorskip("torch")  # the fit side (export.gate_graph) needs the training install


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def bundle(tiny_bundle, tmp_path):
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    return out


def _fit_gate(bundle, *flags):
    return main(["fit-gate", "--model", str(bundle), "--split-file", str(SPLIT_FILE), "--version", "0.1.0", *flags])


def test_a_missing_data_folder_leaves_the_bundle_untouched(bundle, tmp_path, capsys):
    before = _files(bundle)
    assert _fit_gate(bundle, "--data", str(tmp_path / "nowhere"), "--cache", "") == 2
    assert "missing ham10000" in capsys.readouterr().err
    assert _files(bundle) == before and sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


@pytest.mark.skipif(not (SHARED / "isic_archive").is_dir(), reason="needs ../shared/data's five collections")
def test_a_cache_that_is_a_file_is_named_before_any_work(bundle, tmp_path, capsys):
    fake = tmp_path / "fake.pt"
    fake.write_text("not a folder")
    before = _files(bundle)
    for cache, words in ((fake, "is a file; give a folder"), (fake / "sub", "lies inside a file")):
        assert _fit_gate(bundle, "--data", str(SHARED), "--cache", str(cache)) == 2
        assert f"--cache {cache} {words}" in capsys.readouterr().err
    assert _files(bundle) == before and fake.read_text() == "not a folder"


@pytest.mark.skipif(not (SHARED / "isic_archive").is_dir(), reason="needs ../shared/data's five collections")
def test_a_fit_that_fails_half_way_leaves_the_bundle_as_it_was(bundle, tmp_path, monkeypatch):
    from dermalens.export import modality_bundle as mb

    def broken(*a, **k):
        raise RuntimeError("feature extraction failed")
    monkeypatch.setattr(mb.fit, "extract", broken)
    before = _files(bundle)
    with pytest.raises(RuntimeError, match="feature extraction failed"):
        _fit_gate(bundle, "--data", str(SHARED), "--cache", "")
    assert _files(bundle) == before, "the check's graph was written before the fit"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    assert not (bundle / ".fit-gate-partial").exists(), "the staging folder must be cleaned up"


def test_fit_gate_version_must_be_major_minor_patch(capsys):
    with pytest.raises(SystemExit):
        main(["fit-gate", "--version", "v4"])
    assert "MAJOR.MINOR.PATCH" in capsys.readouterr().err


def _cache_default_in(cwd, **env):
    """fit-gate's --cache default as a fresh interpreter started in `cwd` sees it, with only the DERMALENS_*
    variables given (the default is computed when dermalens.cli is imported: monkeypatching this process's
    environment would not change it)."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DERMALENS_")},
           "PYTHONPATH": str(REPO / "src"), **env}
    r = subprocess.run([sys.executable, "-c", "from dermalens.cli import build_parser; "
                        "print(build_parser().parse_args(['fit-gate', '--version', '1.0.0']).cache)"],
                       cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    return Path(r.stdout.strip())


def test_the_cache_default_does_not_depend_on_the_working_directory(tmp_path):
    """In a fresh interpreter whose environment has no DERMALENS_* (a runner's DERMALENS_CACHE must not
    decide the answer); paths compared resolved, as REPO and the package's repo_root() may be spelled apart."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    default = _cache_default_in(elsewhere)
    assert default.is_absolute() and default.resolve() == (REPO / "cache" / "gate").resolve(), default
    assert _cache_default_in(REPO).resolve() == default.resolve()
    set_by_env = _cache_default_in(elsewhere, DERMALENS_CACHE=str(tmp_path / "c"))
    assert set_by_env.resolve() == (tmp_path / "c" / "gate").resolve(), set_by_env


def test_a_split_file_other_than_the_bundles_is_refused_first(bundle, tmp_path, capsys):
    """The check's HAM10000 fit and check parts come from the split: another split would fit it on the model's
    own test images and measure it on its training images."""
    other = tmp_path / "other_split.csv"
    lines = SPLIT_FILE.read_text().splitlines()
    other.write_text("\n".join(lines[:1] + lines[2:] + lines[1:2]) + "\n")  # same images, another file
    before = _files(bundle)
    assert main(["fit-gate", "--model", str(bundle), "--split-file", str(other), "--version", "0.1.0",
                 "--data", str(tmp_path / "nowhere"), "--cache", ""]) == 2
    assert "not the split the bundle was trained with" in capsys.readouterr().err
    assert _files(bundle) == before


@pytest.mark.skipif(not (SHARED / "isic_archive").is_dir(), reason="needs ../shared/data's five collections")
def test_the_check_is_fitted_on_frames_as_they_come_even_where_the_bundle_trims_them(bundle, monkeypatch):
    """Refitted on trimmed views the check let more phone photos through (docs/decisions/dark-margins.md)."""
    import json

    from dermalens.export import modality_bundle as mb
    card = json.loads((bundle / "card.json").read_text())
    card["preprocessing"]["trim_dark_margins"] = True
    (bundle / "card.json").write_text(json.dumps(card))
    seen = []

    def stop(items, net_spec, *a, **k):
        seen.append(net_spec)
        raise RuntimeError("seen")
    monkeypatch.setattr(mb.fit, "extract", stop)
    with pytest.raises(RuntimeError, match="seen"):
        _fit_gate(bundle, "--data", str(SHARED), "--cache", "")
    assert seen and seen[0].trim_dark_margins is False
    assert seen[0].input_size == tuple(card["preprocessing"]["test_input_size"][1:] if "test_input_size" in
                                       card["preprocessing"] else card["preprocessing"]["input_size"])
