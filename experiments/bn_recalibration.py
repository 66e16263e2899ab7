"""Re-estimate a checkpoint's batch-norm statistics at the size it is served at ("FixRes" without training).

    .venv/bin/python experiments/bn_recalibration.py checkpoints/lite2_224x300_distill_cpu/best.pt \
        --input-size 256x341 --out runs/lite2_bnrecal_256x341/best.pt
    python -m dermalens.evaluate.compare runs/lite2_bnrecal_256x341/best.pt --input-size 256x341

The network was trained on random resized crops at 224x300, so its batch-norm running means and variances
describe those crops; served at 256x341 on whole frames, the activations' statistics differ (Touvron et al.
2019, "Fixing the train-test resolution discrepancy", found that adapting them recovers part of the
gap). This pass changes nothing but those statistics: every weight stays, the training split's images go
through the network once at the serving size with the serving preprocessing (whole-frame resize, no
augmentation), and each batch-norm layer keeps the plain average over all batches (momentum None).
No label is used and the validation and test splits are not read.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from tqdm import tqdm

from dermalens.cli import DEFAULT_DATA, parse_size
from dermalens.data import DEFAULT_SPLIT_FILE, load_ham10000, select_split
from dermalens.preprocess import PreprocessSpec
from dermalens.train.augment import normalize_batch
from dermalens.train.cache import load_pixels
from dermalens.train.models import load_checkpoint, model_from_checkpoint


def recalibrate(path: str, size: tuple[int, int], data: str, split_file: Path, batch_size: int = 32) -> dict:
    model, ck = model_from_checkpoint(path)
    spec = dataclasses.replace(PreprocessSpec.from_dict(ck["preprocess"]), input_size=tuple(size))
    pixels = load_pixels(select_split(load_ham10000(data), "train", split_file), spec, desc="decode train")
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise SystemExit(f"{path}: the network has no batch-norm layer")
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over every batch
        m.train()  # only the batch-norm layers: dropout stays off
    model = model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        for i in tqdm(range(0, len(pixels), batch_size), desc="batch-norm statistics"):
            x = torch.from_numpy(pixels[i:i + batch_size]).permute(0, 3, 1, 2)
            model(normalize_batch(x, spec.mean, spec.std).contiguous(memory_format=torch.channels_last))
    out = dict(ck, model={k: v.clone() for k, v in model.state_dict().items()})
    out["config"] = dict(ck["config"], init_from=path, bn_recalibrated_at=list(size))
    out["val_metrics"] = {}  # the source's figures do not describe these statistics
    out["train_seconds"] = 0.0  # no training; `dermalens export` adds the chain's time through init_from
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--input-size", type=parse_size, required=True, help="the serving size, HxW")
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--split-file", type=Path, default=DEFAULT_SPLIT_FILE)
    a = ap.parse_args()
    try:
        load_checkpoint(a.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        ap.error(str(e))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(recalibrate(a.checkpoint, a.input_size, a.data, a.split_file), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
