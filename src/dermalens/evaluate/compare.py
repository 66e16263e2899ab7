"""Compare training checkpoints on the validation split, the way model selection may look at them.

    python -m dermalens.evaluate.compare RUN/best.pt [RUN2/best.pt ...]

For each checkpoint (PyTorch, needs the training install): temperature fitted on validation,
balanced accuracy of the argmax, macro AUROC, malignant AUROC, and the specificity at the threshold
that gives sensitivity >= 0.90, all on validation. Never the test split: that is for the report
of the one model chosen.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..classes import CODES, MALIGNANT_CODES
from ..cli import DEFAULT_DATA
from ..data import load_ham10000, select_split
from ..inference.softmax import softmax
from ..preprocess import PreprocessSpec
from .calibration import fit_temperature
from .metrics import classification_metrics, malignancy_score, threshold_for_sensitivity


def compare(checkpoints: list[str], data_root: str, split_file: str) -> list[dict]:
    import torch
    from ..train.cache import load_pixels
    from ..train.loop import predict_logits
    from ..train.models import create_model
    recs = select_split(load_ham10000(data_root), "val", Path(split_file))
    y = np.array([r.label for r in recs])
    malignant = np.isin([r.dx for r in recs], list(MALIGNANT_CODES))
    rows = []
    for path in checkpoints:
        ck = torch.load(path, map_location="cpu", weights_only=False)
        spec = PreprocessSpec.from_dict(ck["preprocess"])
        model = create_model(ck["config"]["backbone"], len(CODES), pretrained=False)
        model.load_state_dict(ck["model"])
        logits = predict_logits(model.to(memory_format=torch.channels_last), load_pixels(recs, spec), spec, "cpu")
        t = fit_temperature(logits, y)
        probs = softmax(logits, t)
        threshold = threshold_for_sensitivity(malignancy_score(probs), malignant, 0.90)
        m = classification_metrics(y, probs, malignant_threshold=threshold)
        op = m["malignant"]
        rows.append({"checkpoint": path, "backbone": ck["config"]["backbone"],
                     "input_size": list(ck["config"]["input_size"]), "best_epoch": ck["epoch"] + 1,
                     "temperature": round(t, 3), "balanced_accuracy": round(m["balanced_accuracy"], 4),
                     "macro_auroc": round(m["macro_auroc"], 4), "malignant_auroc": round(op["auroc"], 4),
                     "sensitivity": round(op["sensitivity"], 3), "specificity": round(op["specificity"], 3)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--split-file", default="splits/ham10000_split.csv")
    a = ap.parse_args(argv)
    compare(a.checkpoints, a.data, a.split_file)


if __name__ == "__main__":
    main()
