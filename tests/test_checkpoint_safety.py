"""Checkpoints load with weights_only=True: resume state included, and a pickle that carries code is refused."""
import json
import os
import pickle

import pytest

torch = pytest.importorskip("torch")

from dermalens.train.checkpoint_io import UnsafeCheckpointError, restore_rng, rng_state, safe_load  # noqa: E402
from dermalens.train.models import load_checkpoint  # noqa: E402
from conftest import REPO  # noqa: E402


class WritesAFile:
    """What a booby-trapped checkpoint carries: unpickling it calls os.system (here: touch a file)."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_a_checkpoint_carrying_code_is_refused_and_the_code_does_not_run(tmp_path):
    proof = tmp_path / "payload-ran"
    bad = tmp_path / "best.pt"
    torch.save({"config": {}, "classes": [], "preprocess": {}, "model": {"w": torch.zeros(2)},
                "extra": WritesAFile(proof)}, bad)
    # the trap is real: a plain unpickle runs it
    pickle.loads(pickle.dumps(WritesAFile(proof)))
    assert proof.exists()
    proof.unlink()
    for load in (safe_load, load_checkpoint):
        with pytest.raises(UnsafeCheckpointError, match="refused: it holds Python objects other than tensors"):
            load(bad)
    assert not proof.exists(), "the payload ran"


@pytest.mark.parametrize("run", ["lite2_224x300", "lite2_224x300_distill_cpu"])
def test_the_committed_checkpoints_load_weights_only(run):
    ck = load_checkpoint(REPO / "checkpoints" / run / "best.pt")
    assert {"model", "config", "preprocess", "classes"} <= set(ck)


def test_random_states_round_trip_through_a_weights_only_file(tmp_path):
    import random

    import numpy as np
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    torch.save({"rng": rng_state()}, tmp_path / "s.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    restore_rng(safe_load(tmp_path / "s.pt")["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2:] == expected[2:]


def test_resume_state_of_a_real_run_loads_weights_only(tiny_run):
    ck = safe_load(tiny_run / "checkpoint_last.pt")
    assert {"optimizer", "scheduler", "rng", "history"} <= set(ck)
    json.dumps(ck["history"])  # plain data
