import csv
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
MINI = FIXTURES / "ham10000_mini"
SPLIT_FILE = REPO / "splits" / "ham10000_split.csv"
SHARED = REPO.parent / "shared" / "data"
HAM = SHARED / "ham10000"
SHIPPED = REPO / "models" / "dermalens"
ARTIFACTS = REPO / "artifacts"

os.environ.setdefault("OMP_NUM_THREADS", "2")
# The suite compares outputs with PyTorch and onnxruntime to 1e-5, which holds at fp32 only; on a CPU with
# AMX the runtime would pick bf16 (inference.runtime). The bf16 path has its own tests, which ask for it.
os.environ.setdefault("DERMALENS_PRECISION", "fp32")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A custom_cnn trained for one epoch on the fixture images (seconds)."""
    from dermalens.train.config import TrainConfig
    from dermalens.train.loop import train
    out = tmp_path_factory.mktemp("tiny_run")
    cfg = TrainConfig(backbone="custom_cnn", pretrained=False, input_size=(48, 64), epochs=1, batch_size=8,
                      data_root=str(MINI), split_file=str(SPLIT_FILE), out_dir=str(out), cache_dir="",
                      threads=2)
    train(cfg)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run, tmp_path_factory) -> Path:
    from dermalens.export.bundle import export_bundle
    out = tmp_path_factory.mktemp("tiny_bundle")
    export_bundle(tiny_run, out, MINI, SPLIT_FILE, name="tiny-test-model", version="0.0.1")
    return out


@pytest.fixture(scope="session")
def shipped_bundle() -> Path:
    if not (SHIPPED / "card.json").is_file():
        pytest.fail(f"the shipped model bundle {SHIPPED} is missing")
    return SHIPPED


@pytest.fixture()
def mini_copy(tmp_path) -> Path:
    """A writable copy of the fixture data set, for tests that break it."""
    dst = tmp_path / "mini"
    shutil.copytree(MINI, dst)
    return dst


@pytest.fixture()
def leaky_split_file(tmp_path) -> Path:
    """The committed split with one training image moved into test: exactly the leak a changed split
    file causes, for tests that models refuse it."""
    with open(SPLIT_FILE) as f:
        rows = list(csv.DictReader(f))
    i = next(k for k, r in enumerate(rows) if r["split"] == "train")
    rows[i]["split"] = "test"
    other = tmp_path / "other_split.csv"
    with open(other, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return other


@pytest.fixture(scope="session")
def in_distribution_lesion(shipped_bundle) -> Path:
    """A fixture lesion image that the shipped model's OOD gate passes (about 5 % of real
    lesions are flagged by design)."""
    from dermalens.inference import Predictor
    pred = Predictor(shipped_bundle)
    for path in sorted((MINI / "images").iterdir()):
        if pred.predict(path).in_distribution:
            return path
    pytest.fail("no fixture image passes the OOD gate")


@pytest.fixture(scope="session")
def display():
    """One Xvfb for every window test: a Tk connection left open by one test module dies with its X server
    and Xlib then ends the whole pytest process without a word."""
    if not shutil.which("Xvfb"):
        pytest.fail("Xvfb is not installed (make test installs Debian's xvfb)")
    num = 90 + os.getpid() % 50
    proc = subprocess.Popen(["Xvfb", f":{num}", "-screen", "0", "1280x860x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = f":{num}"
    time.sleep(1.0)
    yield f":{num}"
    proc.terminate()
    proc.wait()
    if old is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = old
