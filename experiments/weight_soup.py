"""Average the weights of checkpoints that share a starting point into one checkpoint (a "model soup").

    .venv/bin/python experiments/weight_soup.py checkpoints/lite2_224x300/best.pt \
        runs/lite2_256x341_stage2/best.pt --out runs/lite2_soup/best.pt
    python -m dermalens.evaluate.compare runs/lite2_soup/best.pt --input-size 256x341 --input-size 288x384

Uniform average of every floating-point tensor, batch-norm running statistics included (Wortsman et
al. 2022). Integer buffers (batch counts) come from the first checkpoint, as do the config and the
preprocessing; `init_from` names the first checkpoint, so `dermalens export` still reports the
training time of the chain it came from. Averaging only makes sense for fine-tunes of one network
(one backbone, one start): the script refuses checkpoints with different backbones or tensor shapes.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from dermalens.train.models import load_checkpoint


def soup(paths: list[str]) -> dict:
    cks = [load_checkpoint(p) for p in paths]  # clear errors for a missing or foreign file
    first = cks[0]
    for p, ck in zip(paths[1:], cks[1:]):
        if ck["config"]["backbone"] != first["config"]["backbone"] or ck["classes"] != first["classes"]:
            raise SystemExit(f"{p}: backbone or classes differ from {paths[0]}; a soup needs one network")
        if {k: v.shape for k, v in ck["model"].items()} != {k: v.shape for k, v in first["model"].items()}:
            raise SystemExit(f"{p}: tensor names or shapes differ from {paths[0]}")
    out = copy.deepcopy(first)
    for key, value in first["model"].items():
        if value.is_floating_point():
            out["model"][key] = torch.stack([ck["model"][key].float() for ck in cks]).mean(0).to(value.dtype)
    out["config"] = dict(first["config"], init_from=paths[0], soup_of=list(paths))
    out["val_metrics"] = {}  # the end points' figures do not describe the average
    out["train_seconds"] = sum(ck.get("train_seconds", 0.0) for ck in cks[1:])  # the chain adds paths[0]'s
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if len(a.checkpoints) < 2:
        ap.error("a soup needs at least two checkpoints")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.save(soup(a.checkpoints), out)
    except (FileNotFoundError, ValueError) as e:
        ap.error(str(e))
    print(f"wrote {out}: uniform average of {len(a.checkpoints)} checkpoints")


if __name__ == "__main__":
    main()
