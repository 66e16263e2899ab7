"""The handoffs of data -> train -> evaluate -> export -> serve, as a user following docs/training.md meets them."""
import json
import shutil

import pytest

pytest.importorskip("torch")

from conftest import FIXTURES, MINI, SPLIT_FILE  # noqa: E402
from dermalens.cli import main  # noqa: E402
from dermalens.train.config import TrainConfig  # noqa: E402
from dermalens.train.loop import train  # noqa: E402


def test_a_run_started_with_relative_paths_resumes_from_another_folder(tmp_path, monkeypatch):
    """`train --resume --out RUN` reads RUN/config.json: its split file, data and init_from must not depend on
    the folder the run was started from."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(SPLIT_FILE, work / "split.csv")
    shutil.copytree(MINI, work / "mini")
    base = {"backbone": "custom_cnn", "pretrained": False, "input_size": [48, 64], "batch_size": 8,
            "data_root": "mini", "split_file": "split.csv", "cache_dir": "", "threads": 2}
    (work / "one.json").write_text(json.dumps({**base, "epochs": 1, "out_dir": "runs/one"}))
    (work / "two.json").write_text(json.dumps({**base, "epochs": 2, "out_dir": "runs/two",
                                               "init_from": "runs/one/best.pt"}))
    monkeypatch.chdir(work)
    assert main(["train", "--config", "one.json"]) == 0
    train(TrainConfig.load("two.json"), stop_after=1)  # a second stage, stopped after its first epoch
    run = work / "runs" / "two"
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--resume", "--out", str(run)]) == 0
    assert json.loads((run / "history.json").read_text())[-1]["epoch"] == 2


def test_a_split_of_another_data_set_says_which_flag_to_fix(tmp_path):
    """A user's own split with export's or evaluate's default --data (the full HAM10000) must say what to do."""
    from dermalens.data import DatasetError, load_ham10000, select_split
    from dermalens.data.splits import make_split, write_split
    records = load_ham10000(MINI)
    small = records[:20]
    write_split(small, make_split(small), tmp_path / "split.csv")
    with pytest.raises(DatasetError, match=r"not in split file .*--data.*dermalens split"):
        select_split(records, "val", tmp_path / "split.csv")


def test_a_training_run_given_as_model_says_to_export_it(tmp_path, capsys):
    from dermalens.cli import main
    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    (run / "best.pt").write_bytes(b"weights")  # what `dermalens train` leaves, without a card
    assert main(["predict", str(FIXTURES / "fullres" / "ISIC_0024311.jpg"), "--model", str(run)]) == 2
    err = capsys.readouterr().err
    assert "a training run, not a model bundle" in err and f"dermalens export {run}" in err
