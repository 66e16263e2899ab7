"""Grad-CAM in numpy.

The network ends in global average pooling and one linear layer, so the gradient of a
class logit with respect to feature map k is the constant w[c, k] / (h*w): Grad-CAM's
channel weights are the head's weights, and the map is relu(sum_k w[c, k] * A_k).
That needs only the last feature maps (an ONNX output) and `head.npz`.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def gradcam_raw(features: np.ndarray, head_weight: np.ndarray, class_index: int) -> np.ndarray:
    """Grad-CAM at feature-map resolution: relu(sum_k alpha_k A_k), alpha_k = d logit_c / d A_k
    averaged over positions = w[c, k] / (h*w)."""
    h, w = features.shape[1:]
    return np.maximum(np.tensordot(head_weight[class_index], features, axes=(0, 0)) / (h * w), 0)


def gradcam(features: np.ndarray, head_weight: np.ndarray, class_index: int,
            out_size: tuple[int, int]) -> np.ndarray:
    """features: (C, h, w) of one image -> heat-map in [0, 1] of shape out_size (H, W).
    All zeros when no region speaks for the class."""
    cam = gradcam_raw(features, head_weight, class_index)
    img = Image.fromarray(cam.astype(np.float32), mode="F").resize((out_size[1], out_size[0]),
                                                                  Image.Resampling.BILINEAR)
    cam = np.asarray(img, dtype=np.float32)
    top = cam.max()
    return cam / top if top > 0 else cam


def _jet(v: np.ndarray) -> np.ndarray:
    """The classic 'jet' colour map, without importing matplotlib at serving time."""
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a heat-map (resized to the image) over an HxWx3 uint8 image."""
    h, w = image.shape[:2]
    if cam.shape != (h, w):
        cam = np.asarray(Image.fromarray(cam, mode="F").resize((w, h), Image.Resampling.BILINEAR))
    heat = _jet(np.clip(cam, 0, 1)).astype(np.float32)
    a = alpha * np.clip(cam, 0, 1)[..., None] ** 0.5  # cold areas stay mostly visible
    return (image.astype(np.float32) * (1 - a) + heat * a).astype(np.uint8)


def to_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    # fast zlib: a few kB more per heat-map, several milliseconds less
    Image.fromarray(image).save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()


def mask_agreement(cam: np.ndarray, mask: np.ndarray) -> tuple[float, bool]:
    """(share of heat-map energy inside the lesion mask, pointing-game hit)."""
    if cam.shape != mask.shape:
        cam = np.asarray(Image.fromarray(cam, mode="F").resize((mask.shape[1], mask.shape[0]),
                                                              Image.Resampling.BILINEAR))
    inside = mask > 0
    total = cam.sum()
    energy = float(cam[inside].sum() / total) if total > 0 else 0.0
    hit = bool(inside.flat[int(np.argmax(cam))])
    return energy, hit
