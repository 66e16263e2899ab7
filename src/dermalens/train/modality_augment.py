"""Augmentations for fitting the modality gate, so it learns how a picture was taken rather than its
framing: dermoscopy is shown cropped, zoomed, turned, re-compressed and at many resolutions, with and
without the dark circular rim many dermoscopes leave; ordinary photos are shown as tight crops of the
lesion, with a synthetic rim and shifted colours, so neither a close framing nor a rim gives it away.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance


def dark_rim(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A dark circular vignette (what a contact dermoscope's lens leaves at the frame's corners)."""
    w, h = img.size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = w * rng.uniform(0.45, 0.55), h * rng.uniform(0.45, 0.55)
    radius = min(w, h) * rng.uniform(0.45, 0.75)
    soft = radius * rng.uniform(0.03, 0.15)
    r = np.hypot(xx - cx, yy - cy)
    mask = np.clip((radius - r) / soft, 0, 1)[..., None]
    floor = rng.uniform(0, 25)
    arr = np.asarray(img, np.float32) * mask + floor * (1 - mask)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def _crop(img: Image.Image, rng: np.random.Generator, lo: float, hi: float, jitter: float) -> Image.Image:
    w, h = img.size
    f = rng.uniform(lo, hi)
    cw, ch = max(16, round(w * f)), max(16, round(h * f * rng.uniform(0.85, 1.15)))
    ch = min(ch, h)
    cx = w / 2 + rng.uniform(-jitter, jitter) * w
    cy = h / 2 + rng.uniform(-jitter, jitter) * h
    left = int(np.clip(cx - cw / 2, 0, w - cw))
    top = int(np.clip(cy - ch / 2, 0, h - ch))
    return img.crop((left, top, left + cw, top + ch))


def _recompress(img: Image.Image, rng: np.random.Generator, long_lo: int, long_hi: int) -> Image.Image:
    """Rescale to a random long side (log-uniform) and re-encode as JPEG of random quality. Sides above
    1200 px would only add the classifier's own antialiased downscale, which 1200 px already shows."""
    long_side = int(np.exp(rng.uniform(np.log(long_lo), np.log(long_hi))))
    scale = long_side / max(img.size)
    img = img.resize((max(16, round(img.width * scale)), max(16, round(img.height * scale))),
                     Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(rng.integers(40, 96)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _colour(img: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    gains = rng.uniform(1 - strength, 1 + strength, 3).astype(np.float32)
    arr = (np.asarray(img, np.float32) * gains).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(1 - strength, 1 + strength))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(1 - strength, 1 + strength))
    return ImageEnhance.Color(img).enhance(rng.uniform(1 - 1.5 * strength, 1 + 1.5 * strength))


def _turn(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    img = img.rotate(90 * int(rng.integers(4)), expand=True)
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else img


def augment_dermoscopic(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    img = _turn(img, rng)
    if rng.random() < 0.6:
        img = _crop(img, rng, 0.55, 1.0, 0.1)
    if rng.random() < 0.3:
        img = dark_rim(img, rng)
    if rng.random() < 0.5:
        img = _colour(img, rng, 0.1)
    return _recompress(img, rng, 200, 1200)


def augment_clinical(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    img = _turn(img, rng)
    if rng.random() < 0.7:
        img = _crop(img, rng, 0.25, 0.7, 0.12)  # a tight crop of the (usually central) lesion
    if rng.random() < 0.4:
        img = dark_rim(img, rng)
    if rng.random() < 0.7:
        img = _colour(img, rng, 0.2)
    return _recompress(img, rng, 200, 1200)
