"""A non-dermoscopy image set for testing the out-of-distribution gate.

Everyday photos and drawings that ship inside scikit-image (when it is installed), plus
synthetic images: blank, noise, gradients, a screenshot-like UI with text, and over-exposed,
under-exposed and greyscale versions of real lesion images.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

SKIMAGE_IMAGES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "horse", "brick", "grass", "gravel",
                  "clock", "coins", "colorwheel", "logo", "moon", "page", "text", "checkerboard", "cat",
                  "hubble_deep_field", "immunohistochemistry", "retina", "motorcycle_left")


def skimage_photos() -> dict[str, np.ndarray]:
    try:
        from skimage import data
    except ImportError:
        return {}
    out = {}
    for name in SKIMAGE_IMAGES:
        try:
            img = np.asarray(getattr(data, name)())
        except Exception:  # some images are downloaded on demand; there is no network here
            continue
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out[f"skimage_{name}"] = np.ascontiguousarray(img[..., :3]).astype(np.uint8)
    return out


def synthetic_images(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, w = 300, 400
    out = {
        "blank_white": np.full((h, w, 3), 255, np.uint8),
        "blank_black": np.zeros((h, w, 3), np.uint8),
        "blank_gray": np.full((h, w, 3), 128, np.uint8),
        "blank_skin_tone": np.tile(np.array([224, 172, 140], np.uint8), (h, w, 1)),
        "uniform_noise": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "gaussian_noise": np.clip(rng.normal(128, 60, (h, w, 3)), 0, 255).astype(np.uint8),
        "gradient": np.stack([*np.meshgrid(np.linspace(0, 255, w), np.linspace(0, 255, h)), np.full((h, w), 90.0)],
                             axis=-1).astype(np.uint8),
        "stripes": ((np.indices((h, w)).sum(axis=0) // 20 % 2) * 255).astype(np.uint8)[..., None].repeat(3, 2),
    }
    shot = Image.new("RGB", (w, h), (245, 245, 245))
    d = ImageDraw.Draw(shot)
    d.rectangle([0, 0, w, 30], fill=(40, 90, 200))
    for i in range(8):
        d.text((15, 45 + 28 * i), f"Settings item {i}: enabled = {bool(i % 2)}", fill=(20, 20, 20))
    d.rectangle([280, 240, 380, 280], fill=(40, 160, 60))
    out["screenshot"] = np.asarray(shot)
    return out


def degraded_lesions(pixels: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Over-exposed, under-exposed and greyscale copies of real lesion images (uint8 HxWx3)."""
    out = {}
    for name, img in zip(names, pixels):
        f = img.astype(np.float32)
        out[f"overexposed_{name}"] = np.clip(f * 4 + 60, 0, 255).astype(np.uint8)
        out[f"underexposed_{name}"] = np.clip(f * 0.06, 0, 255).astype(np.uint8)
        out[f"greyscale_{name}"] = np.asarray(Image.fromarray(img).convert("L").convert("RGB"))
    return out
