"""Compare training checkpoints on the validation split, the way model selection may look at them.

    python -m dermalens.evaluate.compare RUN/best.pt [RUN2/best.pt ...] [--input-size 256x341 ...]

For each checkpoint (PyTorch, needs the training install): temperature fitted on validation,
balanced accuracy and accuracy of the argmax, macro AUROC, malignant AUROC, the specificity at the
threshold that gives sensitivity >= 0.90, and the calibrated ECE, all on validation. Never the test
split: that is for the report of the one model chosen.

`--input-size` (repeatable) runs each checkpoint at other input sizes than it was trained at: a
network trained on random resized crops sees lesions larger than a whole-frame resize shows them,
so it can rank better when tested at a somewhat higher resolution (Touvron et al. 2019, "Fixing
the train-test resolution discrepancy"). `dermalens export --input-size` ships the size chosen here.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from ..classes import MALIGNANT_CODES
from ..cli import parse_size
from ..data import load_ham10000, select_split
from ..defaults import DEFAULT_DATA, DEFAULT_SPLIT_FILE
from ..inference.softmax import softmax
from ..preprocess import PreprocessSpec
from .calibration import fit_temperature
from .metrics import classification_metrics, malignancy_score, threshold_for_sensitivity


def compare(checkpoints: list[str], data_root: str, split_file: str,
            input_sizes: list[tuple[int, int]] | None = None) -> list[dict]:
    # PyTorch only here, through the training wing: importing this module needs only the serving install.
    from ..train.cache import load_pixels
    from ..train.loop import predict_logits
    from ..train.models import channels_last, model_from_checkpoint
    recs = select_split(load_ham10000(data_root), "val", Path(split_file))
    rows = []
    for path in checkpoints:
        model, ck = model_from_checkpoint(path)
        trained = PreprocessSpec.from_dict(ck["preprocess"])
        model = channels_last(model)
        for size in input_sizes or [trained.input_size]:
            spec = dataclasses.replace(trained, input_size=tuple(size))
            logits = predict_logits(model, load_pixels(recs, spec), spec, "cpu")
            rows.append({"checkpoint": path, "backbone": ck["config"]["backbone"],
                         "input_size": list(ck["config"]["input_size"]), "tested_at": list(spec.input_size),
                         "best_epoch": ck["epoch"] + 1, **validation_figures(logits, recs)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def validation_figures(logits: np.ndarray, records: list) -> dict:
    """Temperature, balanced accuracy, accuracy, AUROCs, the sensitivity-0.90 operating point and the
    ECE after temperature scaling, of raw logits. (The ECE is measured on the split the temperature was
    fitted on, so it flatters; the card's test ECE is the honest one.)"""
    y = np.array([r.label for r in records])
    malignant = np.isin([r.dx for r in records], list(MALIGNANT_CODES))
    t = fit_temperature(logits, y)
    probs = softmax(logits, t)
    threshold = threshold_for_sensitivity(malignancy_score(probs), malignant, 0.90)
    m = classification_metrics(y, probs, malignant_threshold=threshold)
    op = m["malignant"]
    return {"temperature": round(t, 3), "balanced_accuracy": round(m["balanced_accuracy"], 4),
            "accuracy": round(m["accuracy"], 4), "ece": round(m["ece"], 4),
            "macro_auroc": round(m["macro_auroc"], 4), "malignant_auroc": round(op["auroc"], 4),
            "sensitivity": round(op["sensitivity"], 3), "specificity": round(op["specificity"], 3)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--split-file", default=str(DEFAULT_SPLIT_FILE))
    ap.add_argument("--input-size", type=parse_size, action="append",
                    help="test at this HxW instead of the trained size (repeatable)")
    a = ap.parse_args(argv)
    from ..data import DatasetError
    from ..train.models import load_checkpoint
    try:
        for path in a.checkpoints:  # all of them before the first takes minutes: a typo in the last shows now
            load_checkpoint(path)
        compare(a.checkpoints, a.data, a.split_file, a.input_size)
    except (FileNotFoundError, ValueError, DatasetError) as e:
        ap.error(str(e))


if __name__ == "__main__":
    main()
