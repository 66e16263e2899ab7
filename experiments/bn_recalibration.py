"""Would re-estimating batch-norm statistics at the served size help? (session 5: no)

    .venv/bin/python experiments/bn_recalibration.py [--checkpoint checkpoints/lite2_224x300/best.pt] [--size 256x341]

Resets every batch-norm layer's running statistics, re-estimates them (cumulative average, the rest
of the network in eval mode) from the training split's whole frames at --size, and prints the same
validation figures as `python -m dermalens.evaluate.compare`. About 13 minutes on 2 CPU cores.
Validation only; nothing is saved.
"""
from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from dermalens.cli import DEFAULT_DATA, parse_size
from dermalens.data import load_ham10000, select_split
from dermalens.evaluate.compare import validation_figures
from dermalens.preprocess import PreprocessSpec
from dermalens.train.augment import normalize_batch
from dermalens.train.cache import load_pixels
from dermalens.train.loop import predict_logits
from dermalens.train.models import model_from_checkpoint


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="checkpoints/lite2_224x300/best.pt")
    ap.add_argument("--size", type=parse_size, default=(256, 341))
    ap.add_argument("--data", default=DEFAULT_DATA)
    a = ap.parse_args()
    records = load_ham10000(a.data)
    train, val = select_split(records, "train"), select_split(records, "val")
    model, ck = model_from_checkpoint(a.checkpoint)
    spec = dataclasses.replace(PreprocessSpec.from_dict(ck["preprocess"]), input_size=a.size)
    model = model.to(memory_format=torch.channels_last)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
        m.train()  # only the norms: dropout and stochastic depth stay off
    pixels = load_pixels(train, spec)
    with torch.no_grad():
        for i in range(0, len(pixels), 64):
            x = torch.from_numpy(pixels[i:i + 64]).permute(0, 3, 1, 2)
            model(normalize_batch(x, spec.mean, spec.std).contiguous(memory_format=torch.channels_last))
    for m in norms:
        m.eval()
    logits = predict_logits(model, load_pixels(val, spec), spec, "cpu")
    print(json.dumps({"checkpoint": a.checkpoint, "tested_at": list(a.size), "bn_recalibrated": True,
                      **validation_figures(logits, val)}))


if __name__ == "__main__":
    main()
