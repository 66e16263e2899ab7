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


# ---- composites: dermoscopy inside something else (fit-only negatives) ------------------------------------
SCREENS = [(1280, 800), (1920, 1080), (1366, 768), (1024, 768), (1440, 900), (720, 1280), (1080, 1920)]
WORDS = "lesion image patient view zoom file edit report figure dermoscopy case notes 100% export share".split()


def _flat_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A UI or page colour: white, light or dark grey, now and then tinted."""
    base = int(rng.choice([255, rng.integers(215, 250), rng.integers(18, 70)]))
    tint = rng.integers(-12, 13, 3) if rng.random() < 0.3 else np.zeros(3, int)
    return tuple(int(v) for v in np.clip(base + tint, 0, 255))


def _text(draw, rng: np.random.Generator, xy: tuple[int, int], colour, words: int = 6) -> None:
    draw.text(xy, " ".join(rng.choice(WORDS, words)), fill=colour)


def _fit_into(img: Image.Image, width: int, height: int) -> Image.Image:
    scale = min(width / img.width, height / img.height)
    return img.resize((max(16, round(img.width * scale)), max(16, round(img.height * scale))),
                      Image.Resampling.BILINEAR)


def _screen(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A screen capture: a flat window with a title bar, tool bars and a line of text around the image."""
    from PIL import ImageDraw
    w, h = SCREENS[int(rng.integers(len(SCREENS)))]
    back, bar = _flat_colour(rng), _flat_colour(rng)
    out = Image.new("RGB", (w, h), back)
    draw = ImageDraw.Draw(out)
    top = 0
    for _ in range(int(rng.integers(1, 4))):
        height = int(rng.integers(24, 64))
        draw.rectangle([0, top, w, top + height], fill=bar)
        _text(draw, rng, (10, top + height // 3), back)
        top += height
    shown = _fit_into(img, int(w * rng.uniform(0.4, 0.85)), int((h - top) * 0.95))
    left = int(rng.integers(0, max(1, w - shown.width)))
    y = top + int(rng.integers(0, max(1, h - top - shown.height)))
    out.paste(shown, (left, y))
    _text(draw, rng, (left, min(h - 16, y + shown.height + 4)), bar)
    return out


def _document(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A figure of a document: caption bars on the image, or the image on a page among lines of text."""
    from PIL import ImageDraw
    if rng.random() < 0.5:
        out = img.copy()
        draw = ImageDraw.Draw(out)
        for at_top in (True, False):
            if rng.random() < 0.6:
                height = int(img.height * rng.uniform(0.08, 0.2))
                y0 = 0 if at_top else img.height - height
                fill = _flat_colour(rng)
                draw.rectangle([0, y0, img.width, y0 + height], fill=fill)
                _text(draw, rng, (5, y0 + height // 4), (0, 0, 0) if sum(fill) > 380 else (255, 255, 255))
        return out
    page = Image.new("RGB", (int(img.width * rng.uniform(1.3, 2.0)), int(img.height * rng.uniform(1.4, 2.2))), "white")
    shown = _fit_into(img, int(page.width * rng.uniform(0.5, 0.8)), int(page.height * 0.6))
    y = int(rng.integers(0, page.height - shown.height))
    page.paste(shown, ((page.width - shown.width) // 2, y))
    draw = ImageDraw.Draw(page)
    for line_y in range(8, page.height - 12, 18):
        if not y - 14 < line_y < y + shown.height:
            _text(draw, rng, (10, line_y), (30, 30, 30), 10)
    return page


def _collage(images: list[Image.Image], rng: np.random.Generator) -> Image.Image:
    """Several lesions tiled in one picture, with or without gutters."""
    rows, cols = [(1, 2), (2, 1), (2, 2), (2, 3), (3, 3)][int(rng.integers(5))]
    w, h = 320, 240
    gutter = 0 if rng.random() < 0.5 else int(rng.integers(3, 20))
    out = Image.new("RGB", (cols * w + (cols - 1) * gutter, rows * h + (rows - 1) * gutter), _flat_colour(rng))
    for k in range(rows * cols):
        out.paste(images[k % len(images)].resize((w, h), Image.Resampling.BILINEAR),
                  ((k % cols) * (w + gutter), (k // cols) * (h + gutter)))
    return out


def composite(first: Image.Image, others, rng: np.random.Generator) -> Image.Image:
    """`first` (dermoscopy) as a screen capture, a document figure or, tiled with `others()` (called only then:
    loading them costs), a collage."""
    kind = int(rng.integers(3))
    img = [_screen, _document][kind](first, rng) if kind < 2 else _collage([first, *others()], rng)
    return _recompress(img, rng, 200, 1200)


# ---- a device's overlays on real dermoscopy: positives of the composite check -------------------------------------
DEVICE_TEXT = ["2026-11-03 14:22", "ID 004711", "x10", "x20 polarised", "L arm", "12.3 mm", "FOV 15 mm", "IMG_0042"]


def _mark_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return (255, 255, 255) if rng.random() < 0.7 else (0, 0, 0)


def _scale_bar(draw, w: int, h: int, rng: np.random.Generator, colour) -> None:
    length, thick = int(w * rng.uniform(0.08, 0.25)), max(2, int(h * rng.uniform(0.006, 0.015)))
    x0 = int(w * rng.uniform(0.03, 0.7))
    y0 = int(h * (rng.uniform(0.04, 0.1) if rng.random() < 0.5 else rng.uniform(0.88, 0.95)))
    draw.rectangle([x0, y0, x0 + length, y0 + thick], fill=colour)
    draw.text((x0, max(0, y0 - 14)), f"{int(rng.choice([1, 2, 5]))} mm", fill=colour)


def _device_text(draw, w: int, h: int, rng: np.random.Generator, colour) -> None:
    line = "  ".join(rng.choice(DEVICE_TEXT, int(rng.integers(1, 4)), replace=False))
    x = 6 if rng.random() < 0.5 else max(6, w - 7 * len(line) - 6)
    y = 6 if rng.random() < 0.5 else max(6, h - 20)
    draw.text((x, y), line, fill=colour)


def _ruler_ticks(draw, w: int, h: int, rng: np.random.Generator, colour) -> None:
    y = int(h * rng.uniform(0.9, 0.97))
    step, start = max(4, int(w * rng.uniform(0.01, 0.025))), int(w * rng.uniform(0.05, 0.5))
    for k in range(int(rng.integers(8, 25))):
        x = start + k * step
        if x < w:
            draw.line([x, y, x, y - (8 if k % 5 == 0 else 4)], fill=colour)


def device_overlay(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Dermoscopy as imaging software exports it: one or two small marks (a scale bar, a line of device text,
    ruler ticks), re-compressed like the other fit views."""
    from PIL import ImageDraw
    img = _turn(img, rng)
    img = _recompress(img, rng, 300, 1200)  # the marks are drawn at the exported size
    out = img.copy()
    draw = ImageDraw.Draw(out)
    marks = [_scale_bar, _device_text, _ruler_ticks]
    for k in rng.choice(len(marks), int(rng.integers(1, 3)), replace=False):
        marks[k](draw, out.width, out.height, rng, _mark_colour(rng))
    return _recompress(out, rng, 300, 1200)
