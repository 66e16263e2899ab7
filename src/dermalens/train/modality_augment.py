"""Augmentations for fitting the modality gate, so it learns how a picture was taken rather than its
framing: dermoscopy is shown cropped, zoomed, turned, re-compressed and at many resolutions, with and
without the dark circular rim many dermoscopes leave; ordinary photos are shown as tight crops of the
lesion, with a synthetic rim and shifted colours, so neither a close framing nor a rim gives it away.
Both kinds also get, equally often, the objects clinicians put on or beside the skin (marker ink, a ruler,
immersion-gel bubbles, a coloured sticker): they say nothing about how the picture was taken, so the gate
must not read them either way.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance


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


INKS = [(110, 40, 150), (60, 50, 170), (30, 30, 40), (30, 90, 160), (150, 40, 90)]  # violet, blue, black markers


def _ink(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    """Marker strokes: a ring or dots around the lesion, or a line."""
    colour, width = INKS[rng.integers(len(INKS))], max(2, round(min(w, h) * rng.uniform(0.006, 0.02)))
    cx, cy, r = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.35, 0.65), min(w, h) * rng.uniform(0.2, 0.45)
    kind = rng.integers(3)
    if kind == 0:
        start = rng.uniform(0, 360)
        draw.arc([cx - r, cy - r * rng.uniform(0.7, 1.1), cx + r, cy + r], start, start + rng.uniform(90, 360),
                 fill=colour, width=width)
    elif kind == 1:
        for a in rng.uniform(0, 2 * np.pi, rng.integers(2, 7)):
            x, y, d = cx + r * np.cos(a), cy + r * np.sin(a), width * rng.uniform(1, 2.5)
            draw.ellipse([x - d, y - d, x + d, y + d], fill=colour)
    else:
        draw.line([(rng.uniform(0, w), rng.uniform(0, h)), (rng.uniform(0, w), rng.uniform(0, h))], fill=colour,
                  width=width)


def _ruler(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    """A scale bar along one edge: a light or dark strip with tick marks."""
    thick = max(6, round(min(w, h) * rng.uniform(0.04, 0.1)))
    light = rng.random() < 0.6
    strip, tick = ((235, 235, 230), (20, 20, 20)) if light else ((25, 25, 25), (230, 230, 230))
    step = max(3, round(thick * rng.uniform(0.3, 0.8)))
    if rng.random() < 0.5:  # horizontal, top or bottom
        y0 = 0 if rng.random() < 0.5 else h - thick
        draw.rectangle([0, y0, w, y0 + thick], fill=strip)
        for i, x in enumerate(range(0, w, step)):
            draw.line([(x, y0), (x, y0 + thick * (0.7 if i % 5 == 0 else 0.35))], fill=tick, width=1)
    else:
        x0 = 0 if rng.random() < 0.5 else w - thick
        draw.rectangle([x0, 0, x0 + thick, h], fill=strip)
        for i, y in enumerate(range(0, h, step)):
            draw.line([(x0, y), (x0 + thick * (0.7 if i % 5 == 0 else 0.35), y)], fill=tick, width=1)


def _bubbles(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Immersion-gel bubbles: circles a little lighter inside, with a thin bright rim."""
    w, h = img.size
    over = img.copy()
    draw = ImageDraw.Draw(over)
    for _ in range(rng.integers(1, 8)):
        r = min(w, h) * rng.uniform(0.02, 0.12)
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(235, 235, 235), outline=(255, 255, 255),
                     width=max(1, round(r * 0.08)))
    return Image.blend(img, over, float(rng.uniform(0.25, 0.5)))


def _sticker(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    """A coloured object in a corner: a sticker, a colour patch, the tip of a pen."""
    colour = [(40, 90, 200), (245, 245, 245), (60, 160, 90), (230, 200, 40), (200, 40, 40)][rng.integers(5)]
    s = min(w, h) * rng.uniform(0.08, 0.25)
    x = rng.uniform(-0.5, 0.2) * s if rng.random() < 0.5 else w - rng.uniform(0.3, 1) * s
    y = rng.uniform(-0.5, 0.2) * s if rng.random() < 0.5 else h - rng.uniform(0.3, 1) * s
    (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x, y, x + s, y + s], fill=colour)


def artefacts(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One or two of: marker ink, a ruler, gel bubbles, a coloured sticker."""
    img = img.copy()
    for kind in rng.choice(4, size=rng.integers(1, 3), replace=False):
        if kind == 2:
            img = _bubbles(img, rng)
            continue
        draw = ImageDraw.Draw(img)
        (_ink, _ruler, None, _sticker)[kind](draw, img.width, img.height, rng)
    return img


ARTEFACT_RATE = 0.35  # the same for dermoscopy and for ordinary photos


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
    if rng.random() < ARTEFACT_RATE:
        img = artefacts(img, rng)
    return _recompress(img, rng, 200, 1200)


def augment_clinical(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    img = _turn(img, rng)
    if rng.random() < 0.7:
        img = _crop(img, rng, 0.25, 0.7, 0.12)  # a tight crop of the (usually central) lesion
    if rng.random() < 0.4:
        img = dark_rim(img, rng)
    if rng.random() < 0.7:
        img = _colour(img, rng, 0.2)
    if rng.random() < ARTEFACT_RATE:
        img = artefacts(img, rng)
    return _recompress(img, rng, 200, 1200)
