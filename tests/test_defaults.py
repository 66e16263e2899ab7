"""Defaults from one module, found from the package's location: any working directory, env overrides,
the installed layout, and benchmarks without the shared data folder."""
import fnmatch
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from dermalens import defaults
from conftest import FIXTURES, REPO, SHIPPED, SPLIT_FILE

SRC = REPO / "src"


def run_from(folder: Path, *args, env=None):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DERMALENS_")},
           "PYTHONPATH": str(SRC), **(env or {})}
    return subprocess.run([sys.executable, "-m", "dermalens.cli", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)


def test_checkout_defaults_are_absolute_and_point_into_the_repository():
    assert defaults.repo_root() == REPO
    assert Path(defaults.DEFAULT_MODEL) == SHIPPED and Path(defaults.DEFAULT_MODEL).is_absolute()
    assert defaults.DEFAULT_SPLIT_FILE == SPLIT_FILE
    assert Path(defaults.DEFAULT_DATA) == REPO.parent / "shared" / "data" / "ham10000"


def test_predict_from_another_folder_finds_the_shipped_bundle(tmp_path):
    r = run_from(tmp_path, "predict", str(FIXTURES / "fullres" / "ISIC_0024311.jpg"))
    assert r.returncode == 0, r.stderr
    assert "ISIC_0024311.jpg" in r.stdout and "not a medical device" in r.stdout


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("DERMALENS_MODEL", str(tmp_path / "my-bundle"))
    monkeypatch.setenv("DERMALENS_DATA", str(tmp_path / "data" / "ham"))
    monkeypatch.setenv("DERMALENS_SPLIT", str(tmp_path / "s.csv"))
    assert defaults.default_model() == tmp_path / "my-bundle"
    assert defaults.default_data() == tmp_path / "data" / "ham"
    assert defaults.shared_data() == tmp_path / "data"
    assert defaults.default_split_file() == tmp_path / "s.csv"
    r = run_from(tmp_path, "predict", str(FIXTURES / "fullres" / "ISIC_0024311.jpg"),
                 env={"DERMALENS_MODEL": str(tmp_path / "my-bundle")})
    assert r.returncode == 2 and "my-bundle: model bundle folder not found" in r.stderr


def test_an_installed_copy_looks_under_the_prefix_share_folder(monkeypatch, tmp_path):
    for k in ("DERMALENS_MODEL", "DERMALENS_SPLIT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(defaults, "repo_root", lambda: None)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    bundle = tmp_path / "venv" / "share" / "dermalens" / "models" / defaults.SHIPPED_BUNDLE
    assert defaults.default_model() == bundle  # named even before it exists, for the error message
    bundle.mkdir(parents=True)
    (bundle.parents[1] / "splits").mkdir()
    (bundle.parents[1] / "splits" / defaults.SPLIT_NAME).write_text("image_id,split\n")
    assert defaults.default_model() == bundle
    assert defaults.default_split_file() == bundle.parents[1] / "splits" / defaults.SPLIT_NAME


def test_pip_install_ships_every_serving_file_of_the_bundle():
    """pyproject.toml's data-files must cover what the bundle needs to serve (everything but training
    curves and reports), so a file added to the bundle is not silently left out of `pip install .`."""
    data_files = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    patterns = data_files[f"share/dermalens/models/{defaults.SHIPPED_BUNDLE}"]
    not_served = {"curves.png", "history.csv"}
    for f in SHIPPED.iterdir():
        if f.is_file() and f.name not in not_served:
            rel = f"models/{defaults.SHIPPED_BUNDLE}/{f.name}"
            assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"{rel} is not installed by pip install ."
    assert "splits/ham10000_split.csv" in data_files["share/dermalens/splits"]


def test_bench_images_fall_back_to_the_fixtures(monkeypatch, tmp_path):
    monkeypatch.setenv("DERMALENS_DATA", str(tmp_path / "nowhere" / "ham10000"))
    found, where = defaults.bench_images()
    assert found == FIXTURES / "fullres"
    assert "3 fixture images" in where and "ham10000_fullres_sample not found" in where and "--images" in where
