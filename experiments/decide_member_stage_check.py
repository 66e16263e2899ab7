"""Candidate check: the channel statistics of the fine-tuned Lite2 member's own 7 stages, at its 256x341 view
(docs/decisions/modality-check.md, "the check on the first network's own stages"; rule written before fitting).

    cp -r models/dermalens /tmp/cand && .venv/bin/python experiments/decide_member_stage_check.py --model /tmp/cand

Runs `dermalens fit-gate` on the copy with the feature graph swapped; prints every part (check and held out) and
the out-of-distribution set, as `dermalens fit-gate` does.
"""
from __future__ import annotations

import argparse
import warnings

import torch

from dermalens import cli
from dermalens.export import gate_graph, modality_bundle
from dermalens.train.models import model_from_checkpoint

CHECKPOINT = "checkpoints/lite2_224x300_distill_cpu"
VIEW = (256, 341)


def export_member_stages(path, input_size, opset=17) -> int:
    net, _ = model_from_checkpoint(CHECKPOINT)
    style = gate_graph.StyleFeatures(net).eval()
    x = torch.zeros(1, 3, *input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(style, x, str(path), dynamo=False, opset_version=opset, input_names=["image"],
                          output_names=["features"], dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}})
    with torch.no_grad():
        return int(style(x).shape[1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a copy of the bundle (it is rewritten)")
    ap.add_argument("--cache", default="")
    a = ap.parse_args()
    modality_bundle.GATE_INPUT = VIEW
    modality_bundle.BACKBONE = f"{CHECKPOINT} (fine-tuned Lite2)"  # names the feature cache
    modality_bundle.export_gate_graph = export_member_stages
    cli.main(["fit-gate", "--model", a.model, "--version", "3.1.0-candidate", "--cache", a.cache])


if __name__ == "__main__":
    main()
