"""A train config value of the wrong type is named (key and value), not read by Python truthiness or
left to fail as a TypeError later."""
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")  # TrainConfig checks backbones against the model factory

from dermalens.cli import main  # noqa: E402
from dermalens.train.config import TrainConfig  # noqa: E402


@pytest.mark.parametrize("key, value, message", [
    ("pretrained", "false", "pretrained must be true or false (JSON, without quotes), got 'false'"),
    ("balanced_sampler", "yes", "balanced_sampler must be true or false (JSON, without quotes), got 'yes'"),
    ("pretrained", 0, "pretrained must be true or false (JSON, without quotes), got 0"),
    ("data_root", None, "data_root must be a folder path (text), got None"),
    ("out_dir", 5, "out_dir must be a folder path (text), got 5"),
    ("split_file", "", "split_file must be a file path (text), got ''"),
    ("cache_dir", None, "cache_dir must be a folder path (text; \"\" for no cache), got None"),
    ("teacher", False, "teacher must be a file path (text; \"\" for none), got False"),
    ("backbone", ["efficientnet_lite0"], "backbone must be one of"),
    ("extra", [], "extra must be a JSON object, got []"),
])
def test_a_value_of_the_wrong_type_is_named(tmp_path, key, value, message):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({key: value}))
    with pytest.raises(ValueError) as e:
        TrainConfig.load(path)
    assert message in str(e.value)


def test_real_booleans_load():
    assert TrainConfig(pretrained=False, balanced_sampler=True, cache_dir="", teacher="").problems() == []


def test_train_names_the_key_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"data_root": None, "pretrained": "no"}))
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "data_root must be" in err and "pretrained must be true or false" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_the_pixel_cache_default_does_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    from dermalens.defaults import default_cache
    monkeypatch.chdir(tmp_path)
    assert Path(TrainConfig().cache_dir).is_absolute() and Path(TrainConfig().cache_dir) == default_cache()
