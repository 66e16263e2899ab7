"""Reading and writing training checkpoints without running a pickle's code.

`torch.load` with weights-only loading turned off executes whatever a pickle names, so a downloaded checkpoint could run
any command. Everything dermalens stores (weights, optimiser and scheduler state dicts, the config, the
metrics, the random-number states) is made of tensors, numbers, strings, lists and dicts, which
`weights_only=True` accepts; anything else is refused before it runs.
"""
from __future__ import annotations

import pickle
import random
import warnings
from pathlib import Path

import numpy as np
import torch


class UnsafeCheckpointError(ValueError):
    """The file holds objects other than tensors and plain data: it is refused, not executed."""


def safe_load(path: str | Path, map_location="cpu") -> dict:
    """torch.load with weights_only=True, and an error that says why a file was refused."""
    try:
        with warnings.catch_warnings():  # torch's aside on a plain pickle: the error below says what matters
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        named = [line.strip() for line in str(e).splitlines() if "GLOBAL" in line or "global" in line.lower()]
        if not named:
            raise  # not a pickle of objects at all (a text file, a truncated file): the caller says "not readable"
        raise UnsafeCheckpointError(
            f"{path} was refused: it holds Python objects other than tensors and plain data, which a "
            f"checkpoint written by `dermalens train` never does, and loading them could run code hidden in "
            f"the file. Use checkpoints from a source you trust. (torch: {named[0][:200]})") from None


def rng_state() -> dict:
    """Torch, numpy and Python random states as tensors, numbers and lists (weights_only loads them)."""
    np_state = np.random.get_state(legacy=False)  # {"bit_generator", "state": {"key", "pos"}, "has_gauss", ...}
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"bit_generator": np_state["bit_generator"],
                      "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                      "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                      "gauss": float(np_state["gauss"])},
            "python": [version, list(internal), gauss_next]}


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"],
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
