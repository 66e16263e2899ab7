"""Training on the fixture images: runs, resumes exactly, survives kill -9, and DDP agrees."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dermalens.classes import CODES  # noqa: E402
from dermalens.train.config import TrainConfig  # noqa: E402
from dermalens.train.loop import train, weights_digest  # noqa: E402
from dermalens.train.models import BACKBONES, create_model  # noqa: E402
from conftest import FIXTURES, MINI, REPO, SPLIT_FILE  # noqa: E402


def tiny_config(out, **kw) -> TrainConfig:
    base = dict(backbone="custom_cnn", pretrained=False, input_size=(48, 64), epochs=2, batch_size=8,
                data_root=str(MINI), split_file=str(SPLIT_FILE), out_dir=str(out), cache_dir="", threads=2)
    base.update(kw)
    return TrainConfig(**base)


def _digest(run_dir):
    ck = torch.load(run_dir / "checkpoint_last.pt", weights_only=True)
    m = create_model("custom_cnn", pretrained=False)
    m.load_state_dict(ck["model"])
    return weights_digest(m), ck


def test_tiny_run_writes_checkpoints_history_and_curves(tiny_run):
    for f in ("best.pt", "checkpoint_last.pt", "history.csv", "history.json", "curves.png", "config.json"):
        assert (tiny_run / f).is_file(), f
    hist = json.loads((tiny_run / "history.json").read_text())
    assert hist[0]["epoch"] == 1 and 0 <= hist[0]["val_balanced_accuracy"] <= 1


@pytest.mark.parametrize("ema_decay,loader_workers", [(0.0, 0), (0.9, 0), (0.0, 2)])
def test_resume_continues_exactly_where_it_stopped(tmp_path, ema_decay, loader_workers):
    # loader_workers=2: batches augmented in worker processes must be as repeatable as in-process ones
    full = train(tiny_config(tmp_path / "full", ema_decay=ema_decay, loader_workers=loader_workers))
    part = tiny_config(tmp_path / "part", ema_decay=ema_decay, loader_workers=loader_workers)
    train(part, stop_after=1)
    assert _digest(tmp_path / "part")[1]["epoch"] == 0
    train(part, resume=True)
    (d_full, ck_full), (d_part, ck_part) = _digest(full), _digest(tmp_path / "part")
    assert ck_part["epoch"] == 1
    assert [h["train_loss"] for h in ck_part["history"]] == pytest.approx([h["train_loss"] for h in ck_full["history"]])
    assert d_part == d_full, "a resumed run must end with the same weights as an uninterrupted one"
    if ema_decay:
        assert ck_part["train_model"].keys() == ck_full["model"].keys()
        for k, v in ck_full["train_model"].items():
            assert torch.equal(v, ck_part["train_model"][k]), k


def test_ema_weights_are_what_is_validated_and_saved(tmp_path):
    ck = torch.load(train(tiny_config(tmp_path / "ema", epochs=1, ema_decay=0.5)) / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "ema" / "checkpoint_last.pt", weights_only=True)
    for k, v in ck["model"].items():
        assert torch.equal(v, last["model"][k]), k
    # the average lags the trained weights, so the two must differ
    w = "conv_head.weight" if "conv_head.weight" in ck["model"] else next(k for k in ck["model"] if k.endswith("weight"))
    assert not torch.equal(ck["model"][w], last["train_model"][w])


def test_resume_refuses_settings_that_would_make_it_another_run(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(run, epochs=2), stop_after=1)
    before = (run / "checkpoint_last.pt").read_bytes()
    with pytest.raises(ValueError, match=r"ema_decay: 0.0 -> 0.9.*epochs: 2 -> 3|epochs: 2 -> 3.*ema_decay: 0.0 -> 0.9"):
        train(tiny_config(run, epochs=3, ema_decay=0.9), resume=True)
    assert (run / "checkpoint_last.pt").read_bytes() == before
    # where things are and how fast they run may change
    train(tiny_config(run, epochs=2, threads=1, patience=9), resume=True)
    assert torch.load(run / "checkpoint_last.pt", weights_only=True)["epoch"] == 1


def test_resume_with_only_the_run_folder_reads_its_settings(tmp_path):
    """`dermalens train --resume --out RUN` needs nothing else: the run's config.json has the rest."""
    from dermalens.cli import main
    run = tmp_path / "run"
    train(tiny_config(run, epochs=2), stop_after=1)
    assert main(["train", "--resume", "--out", str(run)]) == 0
    assert json.loads((run / "history.json").read_text())[-1]["epoch"] == 2


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny_config(tmp_path / "none"), resume=True)


@pytest.mark.slow
def test_kill_9_loses_at_most_the_epoch_in_progress(tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "dermalens.cli", "train", "--backbone", "custom_cnn", "--input-size", "48", "64",
           "--epochs", "6", "--batch-size", "4", "--data", str(MINI), "--split-file", str(SPLIT_FILE),
           "--cache-dir", "", "--out", str(out), "--threads", "1"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "checkpoint_last.pt").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = torch.load(out / "checkpoint_last.pt", weights_only=True)["epoch"] + 1
    assert 1 <= done < 6
    rc = subprocess.run(cmd + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rc.returncode == 0, rc.stderr[-2000:]
    hist = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in hist] == list(range(1, 7))


@pytest.mark.slow
def test_ddp_two_processes_agree_on_the_weights(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           "-m", "dermalens.cli", "train", "--backbone", "custom_cnn", "--input-size", "48", "64",
           "--epochs", "1", "--batch-size", "4", "--data", str(MINI), "--split-file", str(SPLIT_FILE),
           "--cache-dir", "", "--out", str(out)]
    rc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert rc.returncode == 0, rc.stderr[-3000:]
    d0, d1 = ((out / f"weights_rank{r}.sha256").read_text() for r in (0, 1))
    assert d0 == d1
    assert (out / "best.pt").is_file()


@pytest.mark.parametrize("name", [n for n in BACKBONES if n != "custom_cnn"])
def test_pretrained_weights_load_strictly_and_are_verified(name):
    """Every backbone's ImageNet weights load (sha256 checked, strict), and the head is fresh."""
    model = create_model(name, num_classes=7, pretrained=True).eval()
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert model.forward_head(feats).shape == (1, 7)
    reference = create_model(name, num_classes=7, pretrained=False)
    first = next(iter(model.state_dict()))
    assert not torch.equal(model.state_dict()[first], reference.state_dict()[first])


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
def test_pretrained_lite_recognises_an_imagenet_photo(name):
    """A silently scrambled weight mapping would still load; a cat would not be a cat.
    Lite2 is the shipped backbone, Lite0 the CPU recipe's."""
    skimage = pytest.importorskip("skimage.data")
    import numpy as np
    import timm
    from PIL import Image
    from dermalens.train.models import load_verified
    b = BACKBONES[name]
    net = timm.create_model(b.timm_name, pretrained=False)
    net.load_state_dict(dict(zip(net.state_dict().keys(), load_verified(b).values())), strict=True)
    img = Image.fromarray(skimage.chelsea()).resize((224, 224))
    x = (torch.from_numpy(np.asarray(img, np.float32) / 255).permute(2, 0, 1)[None] - 0.5) / 0.5
    with torch.no_grad():
        top5 = net.eval()(x).topk(5).indices[0].tolist()
    assert set(top5) & set(range(281, 286)), top5  # ImageNet's domestic cat classes


def test_drop_path_rate_reaches_the_backbone():
    """Stochastic depth is on when asked for (training mode) and absent by default."""
    with_dp = create_model("efficientnet_lite0", pretrained=False, drop_path_rate=0.2)
    rates = [m.drop_prob for m in with_dp.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.2, abs=0.02)
    plain = create_model("efficientnet_lite0", pretrained=False)
    assert not [m for m in plain.modules() if type(m).__name__ == "DropPath"]


def test_weights_with_a_wrong_hash_are_refused(monkeypatch):
    from dataclasses import replace
    from dermalens.train import models
    bad = replace(models.BACKBONES["efficientnet_lite0"], sha256="0" * 64)
    monkeypatch.setitem(models.BACKBONES, "efficientnet_lite0", bad)
    with pytest.raises(models.WeightsError, match="expected 0000"):
        create_model("efficientnet_lite0")


def test_second_stage_starts_from_the_first_and_export_counts_both(tiny_run, tmp_path):
    from dermalens.export.bundle import _training_time
    first = torch.load(tiny_run / "best.pt", weights_only=True)
    stage2 = tiny_config(tmp_path / "stage2", epochs=1, lr=0.0, warmup_epochs=0.0, input_size=(64, 80),
                         init_from=str(tiny_run / "best.pt"))
    ck = torch.load(train(stage2) / "best.pt", weights_only=True)
    # lr 0: the second stage's weights are the first stage's, at a new input size
    for k, v in first["model"].items():
        if not k.endswith("num_batches_tracked") and "running_" not in k:
            assert torch.equal(v, ck["model"][k]), k
    t = _training_time(ck)
    assert [s["input_size"] for s in t["stages"]] == [[48, 64], [64, 80]]
    assert t["seconds"] == pytest.approx(round(first["train_seconds"], 1) + round(ck["train_seconds"], 1), abs=0.11)
    walked = {k: v for k, v in ck.items() if k != "earlier_stages"}  # from before that record, its files still there
    assert _training_time(walked) == t  # the chain walk (train.stages.init_chain) finds what train recorded
    ck["config"]["init_from"] = str(tmp_path / "gone.pt")
    assert _training_time(ck) == t  # the earlier stages are recorded in the checkpoint itself
    del ck["earlier_stages"]  # a checkpoint from before that record follows the init_from chain
    with pytest.raises(FileNotFoundError, match="gone.pt"):
        _training_time(ck)


def test_a_checkpoint_is_never_exported_or_continued_on_another_split(tiny_run, leaky_split_file, tmp_path):
    from dermalens.export.bundle import export_bundle
    assert torch.load(tiny_run / "best.pt", weights_only=True)["split_sha256"]
    other = leaky_split_file
    with pytest.raises(ValueError, match="trained on another split"):
        export_bundle(tiny_run, tmp_path / "b", MINI, other, evaluate_test=False)
    assert not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match="trained on another split"):
        train(tiny_config(tmp_path / "s2", epochs=1, split_file=str(other), init_from=str(tiny_run / "best.pt")))


def test_init_from_another_backbone_is_refused(tiny_run, tmp_path):
    with pytest.raises(ValueError, match="custom_cnn, not a mobilenetv2"):
        train(tiny_config(tmp_path / "x", backbone="mobilenetv2", init_from=str(tiny_run / "best.pt")))


def test_missing_init_from_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="train the earlier stage first"):
        train(tiny_config(tmp_path / "x", init_from=str(tmp_path / "missing.pt")))


def test_compare_reports_validation_figures_of_checkpoints(tiny_run):
    from dermalens.evaluate.compare import compare
    (row,) = compare([str(tiny_run / "best.pt")], str(MINI), str(SPLIT_FILE))
    assert row["backbone"] == "custom_cnn" and row["temperature"] > 0
    for key in ("balanced_accuracy", "accuracy", "macro_auroc", "malignant_auroc", "sensitivity", "specificity",
                "ece"):
        assert 0 <= row[key] <= 1, key
    assert row["sensitivity"] >= 0.90  # the operating point is chosen for it, on this same split


def test_compare_tests_a_checkpoint_at_other_input_sizes(tiny_run):
    from dermalens.evaluate.compare import compare
    rows = compare([str(tiny_run / "best.pt")], str(MINI), str(SPLIT_FILE), [(48, 64), (64, 85)])
    assert [r["tested_at"] for r in rows] == [[48, 64], [64, 85]]
    assert all(r["input_size"] == [48, 64] for r in rows)
    # a different resolution is a different input: the fitted temperature must notice
    assert rows[0]["temperature"] != rows[1]["temperature"]


def test_checkpoint_mistakes_are_named_before_any_work(tiny_run, tmp_path, capsys):
    from dermalens.evaluate.compare import main as compare_main
    from dermalens.train.models import model_from_checkpoint
    (tmp_path / "notes.pt").write_text("# not a checkpoint")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    for path, words in ((tmp_path / "missing.pt", "no such checkpoint"),
                        (tmp_path / "notes.pt", "notes.pt: not a dermalens checkpoint"),
                        (tmp_path / "other.pt", "other.pt: not a dermalens checkpoint")):
        with pytest.raises(SystemExit):
            # the good checkpoint first: the bad one must be refused before minutes go into the good one
            compare_main([str(tiny_run / "best.pt"), str(path), "--data", str(MINI), "--split-file", str(SPLIT_FILE)])
        err = capsys.readouterr()
        assert words in err.err and '"checkpoint"' not in err.out, (words, err)
    # a run folder and its best.pt are the same checkpoint
    (m1, _), (m2, _) = model_from_checkpoint(tiny_run), model_from_checkpoint(tiny_run / "best.pt")
    assert weights_digest(m1) == weights_digest(m2)


def test_input_size_flag_is_checked():
    import argparse
    from dermalens.cli import parse_size
    assert parse_size("256x341") == (256, 341)
    for bad in ("256", "256x", "axb", "8x9"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_size(bad)


def test_train_input_size_flag_takes_hxw_or_two_numbers(capsys):
    from dermalens.cli import build_parser
    parser = build_parser()
    assert parser.parse_args(["train", "--input-size", "224x300"]).input_size == (224, 300)
    assert parser.parse_args(["train", "--input-size", "224", "300"]).input_size == (224, 300)
    for bad in (["224"], ["224x300x3"], ["8x9"], ["224", "300", "3"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "--input-size", *bad])
    assert "--input-size" in capsys.readouterr().err


def test_config_file_mistakes_are_all_named_at_once(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"backbone": "resnet", "epochs": "ten", "input_size": [0, 300], "lr": -1,
                               "label_smoothing": 1.0, "distill_weight": 0.5}))
    with pytest.raises(ValueError) as e:
        TrainConfig.load(bad)
    for words in ("bad.json", "backbone must be one of", "epochs must be an integer", "input_size must be",
                  "lr must be at least 0", "label_smoothing must be between 0 and 1", "no teacher file"):
        assert words in str(e.value), words
    (tmp_path / "broken.json").write_text('{"epochs": 3,')
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        TrainConfig.load(tmp_path / "broken.json")
    with pytest.raises(FileNotFoundError, match="config file .*none.json not found"):
        TrainConfig.load(tmp_path / "none.json")
    # flags bypass the file: train() checks again before it reads any data
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        train(tiny_config(tmp_path / "r", epochs=0, data_root=str(tmp_path / "no-data-needed")))


def test_a_fresh_run_never_overwrites_an_earlier_one(tiny_run):
    before = {f: (tiny_run / f).read_bytes() for f in ("best.pt", "checkpoint_last.pt", "history.csv")}
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(tiny_run, epochs=1))
    assert {f: (tiny_run / f).read_bytes() for f in before} == before


def test_every_committed_config_loads_and_writes_to_its_own_folder():
    """A typo in a config key is refused by TrainConfig.load; two configs sharing a run folder would
    overwrite each other's checkpoints."""
    paths = sorted((REPO / "configs").rglob("*.json"))
    assert paths
    cfgs = [TrainConfig.load(p) for p in paths]
    assert all(c.backbone in BACKBONES for c in cfgs)
    out_dirs = [c.out_dir for c in cfgs]
    assert len(set(out_dirs)) == len(out_dirs), out_dirs


def test_distillation_loss_blends_labels_and_teacher():
    from dermalens.train.loop import distillation_loss
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 7), torch.tensor([0, 1, 2, 3, 4, 5])
    ce = torch.nn.CrossEntropyLoss()
    one_hot = torch.nn.functional.one_hot(labels, 7).float()
    assert torch.allclose(distillation_loss(logits, labels, one_hot, ce, 1.0), ce(logits, labels))
    assert torch.allclose(distillation_loss(logits, labels, torch.zeros(0), ce, 0.5), ce(logits, labels))
    uniform = torch.full((6, 7), 1 / 7)
    mixed = distillation_loss(logits, labels, uniform, ce, 0.25)
    expected = 0.75 * ce(logits, labels) + 0.25 * ce(logits, uniform)
    assert torch.allclose(mixed, expected)


def _teacher_file(path, records, probs):
    np.savez(path, image_id=np.array([r.image_id for r in records]), probs=probs.astype(np.float16))
    return path


def test_a_student_moves_towards_its_teacher(tmp_path):
    """A teacher that calls every training image vasc pulls the student's vasc probability up."""
    from dermalens.data import load_ham10000, select_split
    from dermalens.train.loop import predict_logits, preprocess_spec
    from dermalens.train.cache import load_pixels
    records = load_ham10000(MINI)
    train_recs = select_split(records, "train", SPLIT_FILE)
    vasc = np.zeros((len(train_recs), 7))
    vasc[:, CODES.index("vasc")] = 1.0
    teacher = _teacher_file(tmp_path / "t.npz", train_recs, vasc)
    val_recs = select_split(records, "val", SPLIT_FILE)
    p_vasc = {}
    for name, kw in {"plain": {}, "taught": {"teacher": str(teacher), "distill_weight": 1.0}}.items():
        cfg = tiny_config(tmp_path / name, epochs=3, lr=1e-2, warmup_epochs=0, patience=5, **kw)
        run = train(cfg)
        ck = torch.load(run / "checkpoint_last.pt", weights_only=True)
        m = create_model("custom_cnn", pretrained=False)
        m.load_state_dict(ck["model"])
        spec = preprocess_spec(cfg)
        logits = predict_logits(m, load_pixels(val_recs, spec, None), spec, torch.device("cpu"))
        p_vasc[name] = torch.softmax(torch.from_numpy(logits), 1)[:, CODES.index("vasc")].mean().item()
    assert p_vasc["taught"] > p_vasc["plain"] + 0.1, p_vasc


def test_teacher_file_must_cover_every_training_image(tmp_path):
    from dermalens.data import load_ham10000, select_split
    train_recs = select_split(load_ham10000(MINI), "train", SPLIT_FILE)
    partial = _teacher_file(tmp_path / "t.npz", train_recs[1:], np.full((len(train_recs) - 1, 7), 1 / 7))
    with pytest.raises(ValueError, match="no probabilities for 1 training image"):
        train(tiny_config(tmp_path / "r", teacher=str(partial), distill_weight=0.5))
    with pytest.raises(ValueError, match="between 0 and 1"):
        train(tiny_config(tmp_path / "r1", teacher=str(partial), distill_weight=1.5))
    with pytest.raises(ValueError, match="no teacher file"):
        train(tiny_config(tmp_path / "r2", distill_weight=0.5))
    with pytest.raises(FileNotFoundError, match="dermalens.train.teacher"):
        train(tiny_config(tmp_path / "r3", teacher=str(tmp_path / "none.npz"), distill_weight=0.5))


@pytest.mark.parametrize("kind", ["pickle", "image"])
def test_a_file_that_is_no_checkpoint_is_one_line_for_export_and_init_from(kind, tmp_path, capsys):
    """A plain pickle or an image used to bring torch's page on weights_only (and advice to turn it off)."""
    import pickle
    from dermalens.cli import main
    fake = tmp_path / "fake.pt"
    if kind == "pickle":
        fake.write_bytes(pickle.dumps({"a": 1}))
    else:
        fake.write_bytes((FIXTURES / "fullres" / "ISIC_0024311.jpg").read_bytes())
    for argv in (["export", str(fake), "--out", str(tmp_path / "b")],
                 ["train", "--init-from", str(fake), "--out", str(tmp_path / "run"), "--cache-dir", ""]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{fake}: not a dermalens checkpoint (best.pt from dermalens train)" in err, err
        assert "weights_only" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "b").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag", ["--out", "--cache-dir"])
def test_train_output_folders_that_are_files_are_named(flag, tmp_path, capsys):
    from dermalens.cli import main
    fake = tmp_path / "fake.pt"
    fake.write_text("not a folder")
    other = ["--cache-dir", ""] if flag == "--out" else ["--out", str(tmp_path / "run")]
    for path in (fake, fake / "sub"):
        assert main(["train", flag, str(path), *other, "--max-images-per-split", "8", "--epochs", "1"]) == 2
        err = capsys.readouterr().err
        assert f"{path} is a file or lies inside one; give a folder" in err and "Errno" not in err, err
    assert fake.read_text() == "not a folder"
