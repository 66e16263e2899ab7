"""Does averaging views (input sizes x flips) make 2.1.0's weights rank better? (session 6: not enough)

    .venv/bin/python experiments/multiview_probe.py [--logits /tmp/multiview_val_logits.npz]

Runs `checkpoints/lite2_224x300/best.pt` over the validation split at 224x300, 256x341 and 288x384,
each as is and h-/v-/both-flipped (12 passes, about 35 min on 2 CPU cores; the logits are kept in
`--logits` so a second run only re-prints), averages the logits of each candidate fixed in
checkpoints/README.md and prints `compare.validation_figures`. Validation only: the test split is not read.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from dermalens.cli import DEFAULT_DATA
from dermalens.data import load_ham10000, select_split
from dermalens.evaluate.compare import validation_figures
from dermalens.preprocess import PreprocessSpec
from dermalens.train.cache import load_pixels
from dermalens.train.loop import predict_logits
from dermalens.train.models import model_from_checkpoint

SIZES = {"224": (224, 300), "256": (256, 341), "288": (288, 384)}
FLIPS = {"id": lambda a: a, "h": lambda a: a[:, :, ::-1], "v": lambda a: a[:, ::-1], "hv": lambda a: a[:, ::-1, ::-1]}
CANDIDATES = {"single view 256x341 (2.1.0)": ["256_id"],
              "(a) 4 flips at 256x341": [f"256_{f}" for f in FLIPS],
              "(b) 3 sizes, no flips": [f"{s}_id" for s in SIZES],
              "(c) 3 sizes x 4 flips": [f"{s}_{f}" for s in SIZES for f in FLIPS]}


def view_logits(checkpoint: str, records) -> dict[str, np.ndarray]:
    model, ck = model_from_checkpoint(checkpoint)
    trained = PreprocessSpec.from_dict(ck["preprocess"])
    model = model.to(memory_format=torch.channels_last)
    out = {}
    with torch.inference_mode():
        for s, size in SIZES.items():
            spec = dataclasses.replace(trained, input_size=size)
            pixels = load_pixels(records, spec)
            for f, flip in FLIPS.items():
                out[f"{s}_{f}"] = predict_logits(model, np.ascontiguousarray(flip(pixels)), spec, "cpu")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="checkpoints/lite2_224x300/best.pt")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--logits", default="/tmp/multiview_val_logits.npz")
    a = ap.parse_args()
    records = select_split(load_ham10000(a.data), "val", Path("splits/ham10000_split.csv"))
    cached = Path(a.logits)
    if cached.is_file():
        logits = dict(np.load(cached))
    else:
        logits = view_logits(a.checkpoint, records)
        np.savez(cached, **logits)
    for name, views in CANDIDATES.items():
        print(name, json.dumps(validation_figures(np.mean([logits[v] for v in views], axis=0), records)))


if __name__ == "__main__":
    main()
