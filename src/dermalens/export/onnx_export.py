"""PyTorch -> ONNX with outputs `logits` and `features`, checked against PyTorch."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn

from ..preprocess import PreprocessSpec


class LogitsAndFeatures(nn.Module):
    """Exposes the last feature maps next to the logits: Grad-CAM and the OOD gate need them."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image):
        feats = self.model.forward_features(image)
        return self.model.forward_head(feats), feats


def export_onnx(model: nn.Module, spec: PreprocessSpec, path: Path, opset: int = 17) -> None:
    wrapper = LogitsAndFeatures(model).eval()
    h, w = spec.input_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(wrapper, torch.zeros(1, 3, h, w), str(path), dynamo=False, opset_version=opset,
                          input_names=["image"], output_names=["logits", "features"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}})
    model.eval()  # the exporter restores the wrapper's (training) mode on the way out


def max_abs_difference(model: nn.Module, path: Path, x: np.ndarray) -> float:
    """Largest |logit difference| between PyTorch and onnxruntime on the same inputs."""
    model.eval()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"image": x})[0]
    return float(np.abs(ref - got).max())
