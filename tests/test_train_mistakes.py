"""A researcher's mistakes with `dermalens train` and `export` are named before any work, and cost no run."""
import json
import os
import shutil
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from dermalens.train import loop  # noqa: E402
from dermalens.train.loop import train  # noqa: E402
from conftest import MINI, REPO, SPLIT_FILE  # noqa: E402
from test_train import tiny_config  # noqa: E402


def _no_data_may_be_read(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the data was read before the mistake was named")
    monkeypatch.setattr(loop, "load_ham10000", refuse)


def test_export_needs_no_earlier_stage_file_named_relative_or_moved(tmp_path, monkeypatch):
    """A second stage trained with a relative --init-from (or a run folder) exports from any folder, and after
    the first stage's folder was moved: its checkpoints record the earlier stages (export failed with
    'init_from checkpoint s1/best.pt is missing')."""
    from dermalens.export.bundle import _training_time
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    train(tiny_config(work / "s1", epochs=1))
    train(tiny_config(work / "s2", epochs=1, init_from="s1"))  # a run folder, relative
    s3 = train(tiny_config(work / "s3", epochs=1, init_from="s2/best.pt"))
    assert json.loads((s3 / "config.json").read_text())["init_from"] == str(work / "s2" / "best.pt")
    monkeypatch.chdir(tmp_path)
    shutil.move(work / "s1", tmp_path / "s1_moved")
    t = _training_time(torch.load(s3 / "best.pt", weights_only=True))
    assert [s["out_dir"] for s in t["stages"]] == [str(work / n) for n in ("s1", "s2", "s3")]
    assert t["seconds"] == pytest.approx(sum(s["seconds"] for s in t["stages"]))


def test_init_from_a_folder_says_what_it_is(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "card.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="is a model bundle.*training run it was exported from"):
        train(tiny_config(tmp_path / "a", init_from=str(bundle)))
    assert not (tmp_path / "a").exists()  # a refused run leaves no folder behind
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="is a folder without best.pt"):
        train(tiny_config(tmp_path / "b", init_from=str(tmp_path / "empty")))


def test_resume_refusals_come_before_the_data_is_read(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(tiny_config(run, epochs=2), stop_after=1)
    before = (run / "checkpoint_last.pt").read_bytes()
    _no_data_may_be_read(monkeypatch)
    with pytest.raises(ValueError, match=r"epochs: 2 -> 3"):
        train(tiny_config(run, epochs=3), resume=True)
    assert (run / "checkpoint_last.pt").read_bytes() == before


def test_resume_with_another_number_of_processes_is_refused(tmp_path, monkeypatch):
    """Each process's batches and the LR schedule's steps per epoch depend on the process count: a run resumed
    with another one silently followed another schedule (a 2-process run resumed alone never reached lr 0)."""
    run = tmp_path / "run"
    train(tiny_config(run, epochs=2), stop_after=1)
    assert torch.load(run / "checkpoint_last.pt", weights_only=True)["world_size"] == 1
    _no_data_may_be_read(monkeypatch)
    monkeypatch.setattr(loop, "_dist_info", lambda: (2, 0))
    with pytest.raises(ValueError, match=r"processes: 1 -> 2 \(run it as it was started: without torchrun\)"):
        train(tiny_config(run, epochs=2), resume=True)


def test_resume_of_a_checkpoint_from_before_world_size_reads_hardware():
    assert loop._processes({"hardware": "2 process(es) on CPU (2 cores, x86_64), torch 2.5"}) == 2
    assert loop._processes({"hardware": "1 process(es) on NVIDIA H100"}) == 1
    assert loop._processes({"world_size": 4, "hardware": "x"}) == 4


def test_resume_of_a_finished_run_says_there_is_nothing_to_do(tmp_path, capsys):
    run = train(tiny_config(tmp_path / "run", epochs=1))
    before = (run / "checkpoint_last.pt").read_bytes()
    capsys.readouterr()
    train(tiny_config(run, epochs=1), resume=True)
    assert "nothing to resume" in capsys.readouterr().out
    assert (run / "checkpoint_last.pt").read_bytes() == before


def test_resume_of_a_run_stopped_in_its_first_epoch_says_to_start_again(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(tiny_config(run).to_dict()))
    with pytest.raises(FileNotFoundError, match="without --resume"):
        train(tiny_config(run), resume=True)


def test_training_into_a_bundle_folder_is_refused(tmp_path, monkeypatch):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name in ("card.json", "history.csv", "curves.png"):
        (bundle / name).write_text(name)
    _no_data_may_be_read(monkeypatch)
    with pytest.raises(FileExistsError, match="is a model bundle"):
        train(tiny_config(bundle))
    assert (bundle / "history.csv").read_text() == "history.csv"
    assert sorted(f.name for f in bundle.iterdir()) == ["card.json", "curves.png", "history.csv"]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc, where no folder can be made")
def test_an_out_that_cannot_be_written_is_named_before_any_work(tmp_path, monkeypatch, tiny_run):
    from dermalens.export import bundle as bundle_module
    _no_data_may_be_read(monkeypatch)
    with pytest.raises(PermissionError, match=r"out_dir /proc/dermalens_run cannot be written .*--out"):
        train(tiny_config("/proc/dermalens_run"))
    monkeypatch.setattr(bundle_module, "load_ham10000", loop.load_ham10000)
    with pytest.raises(PermissionError, match=r"--out /proc/dermalens_bundle cannot be written"):
        bundle_module.export_bundle(tiny_run, "/proc/dermalens_bundle", MINI, SPLIT_FILE)


def test_export_reads_the_data_before_the_onnx_export(tiny_run, tmp_path, monkeypatch):
    from dermalens.data import DatasetError
    from dermalens.export import bundle as bundle_module

    def refuse(*a, **k):
        raise AssertionError("the networks were exported before the data folder was checked")
    monkeypatch.setattr(bundle_module, "export_onnx", refuse)
    with pytest.raises(DatasetError, match="data folder not found"):
        bundle_module.export_bundle(tiny_run, tmp_path / "b", tmp_path / "no_data", SPLIT_FILE)
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_a_ddp_run_speaks_once_and_is_resumed_only_with_its_process_count(tmp_path):
    out = tmp_path / "ddp"
    args = ["train", "--backbone", "custom_cnn", "--input-size", "48", "64", "--epochs", "1", "--batch-size", "4",
            "--data", str(MINI), "--split-file", str(SPLIT_FILE), "--cache-dir", "", "--out", str(out)]
    rc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                         "--master_port=29519", "-m", "dermalens.cli", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert rc.returncode == 0, rc.stderr[-3000:]
    assert rc.stdout.count("run folder:") == 1, rc.stdout
    ck = torch.load(out / "checkpoint_last.pt", weights_only=True)
    assert ck["world_size"] == 2
    # the history's loss is over both processes' batches: every training image of the epoch once
    alone = subprocess.run([sys.executable, "-m", "dermalens.cli", "train", "--resume", "--out", str(out)],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert alone.returncode == 2 and "processes: 2 -> 1" in alone.stderr, alone.stderr
    assert torch.load(out / "checkpoint_last.pt", weights_only=True)["epoch"] == ck["epoch"]
