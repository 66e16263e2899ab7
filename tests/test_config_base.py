"""Configs hold only what differs from the config they build on ("base")."""
import json

import pytest

pytest.importorskip("torch")  # TrainConfig checks backbones against the model factory

from dermalens.train.config import TrainConfig  # noqa: E402
from conftest import REPO  # noqa: E402


def test_a_config_takes_its_base_settings_and_replaces_its_own(tmp_path):
    (tmp_path / "base.json").write_text(json.dumps({"backbone": "efficientnet_lite2", "epochs": 20, "lr": 4e-4}))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "stage2.json").write_text(json.dumps({"base": "../base.json", "epochs": 2}))
    cfg = TrainConfig.load(tmp_path / "sub" / "stage2.json")
    assert (cfg.backbone, cfg.epochs, cfg.lr) == ("efficientnet_lite2", 2, 4e-4)
    assert "base" not in cfg.to_dict()  # the run's config.json is the full, flat result


def test_base_mistakes_are_named(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"base": "b.json"}))
    (tmp_path / "b.json").write_text(json.dumps({"base": "a.json"}))
    with pytest.raises(ValueError, match="in a loop"):
        TrainConfig.load(tmp_path / "a.json")
    (tmp_path / "c.json").write_text(json.dumps({"base": "gone.json"}))
    with pytest.raises(FileNotFoundError, match='its "base" gone.json'):
        TrainConfig.load(tmp_path / "c.json")
    (tmp_path / "d.json").write_text(json.dumps({"base": 3}))
    with pytest.raises(ValueError, match='"base" must be the path'):
        TrainConfig.load(tmp_path / "d.json")
    (tmp_path / "e.json").write_text(json.dumps({"base": "f.json"}))
    (tmp_path / "f.json").write_text(json.dumps({"epochz": 3}))
    with pytest.raises(ValueError, match="unknown config key"):
        TrainConfig.load(tmp_path / "e.json")


def test_the_shipped_second_stage_matches_its_checkpoint():
    """configs/lite2_224x300_distill_cpu.json (base + differences) gives the settings the shipped weights were
    trained with, as the checkpoint's own config.json recorded them (paths aside)."""
    cfg = TrainConfig.load(REPO / "configs" / "lite2_224x300_distill_cpu.json").to_dict()
    recorded = json.loads((REPO / "checkpoints" / "lite2_224x300_distill_cpu" / "config.json").read_text())
    machine_local = {"data_root", "split_file", "cache_dir", "out_dir", "threads"}
    differ = {k: (recorded[k], cfg.get(k)) for k in recorded if k not in machine_local and recorded[k] != cfg.get(k)}
    assert not differ, differ


def test_every_committed_config_loads():
    for path in sorted((REPO / "configs").rglob("*.json")):
        TrainConfig.load(path)
