"""Card fields written the same way by `dermalens export` and by the upgrade of an older card (no PyTorch).

- outputs and input as structured shapes (as MONAI bundles' network_data_format describes them);
- training.hardware per stage (a two-stage model may have trained on a GPU, then on a CPU);
- the recipe without machine-local settings (where data and runs lived, how many threads);
- a changelog of the bundle's versions.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

# Where a run's files were and how fast it went: not part of what the model learnt.
MACHINE_LOCAL = ("data_root", "out_dir", "cache_dir", "threads")


def feature_shape(onnx_path: Path, input_size) -> list[int]:
    """(C, h, w) of the 'features' output at this input size, by running the graph once on zeros (the graph's
    own output shape is symbolic)."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    out = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, *input_size), np.float32)})
    return list(out[names.index("features")].shape[1:])


def structured_input(served, mean, std) -> dict:
    low = [round((0 - m) / s, 6) for m, s in zip(mean, std)]
    high = [round((1 - m) / s, 6) for m, s in zip(mean, std)]
    return {"name": "image", "type": "image", "format": "RGB", "shape": ["N", 3, *served], "num_channels": 3,
            "spatial_shape": list(served), "dtype": "float32", "value_range": [min(low), max(high)],
            "layout": "NCHW, RGB, normalised by preprocessing.mean/std after scaling to [0, 1]"}


def to_probabilities(n_members: int) -> str:
    """How the bundle's probabilities follow from its graphs' logits (inference.members.combine)."""
    if n_members == 1:
        return "softmax(logits / temperature)"
    return ("each member m: softmax(logits_m / members[m].temperature); the bundle: softmax(log(plain mean of the "
            "members' probabilities) / temperature)")


def structured_outputs(codes: list[str], features_chw, n_members: int = 1) -> dict:
    return {
        "logits": {"type": "logits", "format": "classes", "shape": ["N", len(codes)], "num_channels": len(codes),
                   "dtype": "float32", "is_onehot": False, "channel_def": {str(i): c for i, c in enumerate(codes)},
                   "to_probabilities": to_probabilities(n_members)},
        "features": {"type": "feature_maps", "shape": ["N", *features_chw], "num_channels": int(features_chw[0]),
                     "spatial_shape": list(features_chw[1:]), "dtype": "float32",
                     "use": "last feature maps: Grad-CAM with head.npz, and (pooled) the OOD gate"},
    }


def clean_recipe(recipe: dict) -> dict:
    out = {k: v for k, v in recipe.items() if k not in MACHINE_LOCAL}
    if out.get("split_file"):
        out["split_file"] = Path(out["split_file"]).name  # data.split_sha256 names the exact file
    return out


def _device(hardware: str) -> str:
    text = hardware.split(" on ", 1)[-1]  # "1 process(es) on NVIDIA H100 ..., torch 2.x" -> "NVIDIA H100 ..."
    return text.split(", torch")[0]


def hardware_by_stage(training: dict) -> list[dict]:
    """One entry per training stage, first to last: where it ran and for how long."""
    stages = training.get("stages") or [{"seconds": training.get("seconds"), "hardware": training.get("hardware")}]
    return [{"stage": i + 1, "device": _device(s["hardware"]) if isinstance(s.get("hardware"), str) else None,
             "detail": s.get("hardware"), "seconds": s.get("seconds")} for i, s in enumerate(stages)]


def test_summary(metrics: dict) -> dict | None:
    t = metrics.get("test")
    if not t:
        return None
    mal = t.get("malignant", {})
    return {"balanced_accuracy": round(t["balanced_accuracy"], 3), "macro_auroc": round(t["macro_auroc"], 3),
            "malignant_sensitivity": None if mal.get("sensitivity") is None else round(mal["sensitivity"], 3),
            "malignant_specificity": None if mal.get("specificity") is None else round(mal["specificity"], 3)}


def changelog_entry(card: dict, summary: str, date: str | None = None) -> dict:
    """`date`: of this version (default: when the bundle was exported; a later step such as fit-gate gives today)."""
    entry = {"version": card["version"], "date": (date or card.get("created") or dt.date.today().isoformat())[:10],
             "summary": summary}
    test = test_summary(card.get("metrics", {}))
    if test:
        entry["test"] = test
    return entry


def with_changelog(card: dict, previous: list[dict] | None, summary: str, date: str | None = None) -> list[dict]:
    """The previous bundle's changelog (same name) with this version's entry replacing or appended."""
    log = [e for e in (previous or []) if e.get("version") != card["version"]]
    return log + [changelog_entry(card, summary, date)]
