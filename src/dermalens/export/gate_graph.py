"""The modality gate's feature graph: an ImageNet-only EfficientNet-Lite0 -> image statistics (ONNX).

Why ImageNet weights and not the fine-tuned network: the fine-tuned network learned what separates
lesions; the gate must see how a picture was taken (lighting, magnification, skin texture scale), which
ImageNet features keep. Why the mean *and* standard deviation of every stage, and not the pooled head:
those channel statistics describe texture and illumination ("style") more than content, and on the gate's
check sets they separated phone photos from dermoscopy better than the head (docs/decisions/modality-check.md).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn

from ..train.models import create_model

BACKBONE = "efficientnet_lite0"
STAGES = (0, 1, 2, 3, 4, 5, 6)  # every EfficientNet-Lite0 stage: early ones hold the fine texture a camera leaves


class StyleFeatures(nn.Module):
    """image (N,3,H,W) -> per image, the mean and standard deviation of every channel of every stage."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image):
        net = self.net
        x = net.bn1(net.conv_stem(image))
        stats = []
        for i, block in enumerate(net.blocks):
            x = block(x)
            if i in STAGES:
                stats += [x.mean(dim=(2, 3)), x.std(dim=(2, 3))]
        return torch.cat(stats, dim=1)


def gate_network() -> nn.Module:
    return StyleFeatures(create_model(BACKBONE, num_classes=0, pretrained=True)).eval()


def export_gate_graph(path: Path, input_size: tuple[int, int], opset: int = 17) -> int:
    """Write the feature graph to `path`; returns the feature count."""
    net = gate_network()
    x = torch.zeros(1, 3, *input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, x, str(path), dynamo=False, opset_version=opset, input_names=["image"],
                          output_names=["features"], dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}})
    with torch.no_grad():
        return int(net(x).shape[1])
