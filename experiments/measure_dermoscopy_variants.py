"""What the checks make of dermoscopy as it reaches users' hands: re-compressed, colour-cast, blurred, labelled.

    .venv/bin/python experiments/measure_dermoscopy_variants.py [--model models/dermalens] [--n 150]

Each of `--n` dermoscopic images of the image-type check's **check** parts (HAM10000 validation, isic_archive check;
a fixed random pick) is sent as it is and changed as it might be on its way to dermalens: sent through a messaging
app (JPEG quality 25), under a warm or a cool white balance, darker or brighter, out of focus, over-sharpened, as a
320 px thumbnail, with a device's date and ID burnt into a corner, with a digital scale bar. Each picture goes through
`Predictor.predict`, as `dermalens predict` and the API run it. Printed: how many got an answer, and the reasons of the
others. A measurement of a limit, not a choice.
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from dermalens.data.modality_sets import DERMOSCOPIC, gate_images
from dermalens.defaults import DEFAULT_DATA, DEFAULT_MODEL, DEFAULT_SPLIT_FILE
from dermalens.inference import Predictor
from probe_common import answered


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _gains(img: Image.Image, r: float, b: float) -> Image.Image:
    arr = np.asarray(img, np.float32) * np.array([r, 1.0, b], np.float32)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def _burnt_in(img: Image.Image) -> Image.Image:
    out = img.copy()
    draw = ImageDraw.Draw(out)
    for dx, dy, fill in ((1, 1, "black"), (0, 0, "white")):
        draw.text((8 + dx, out.height - 22 + dy), "2026-11-03 14:22  ID 004711  x10", fill=fill)
    return out


def _scale_bar(img: Image.Image) -> Image.Image:
    out = img.copy()
    draw = ImageDraw.Draw(out)
    x0, y0, length = out.width // 20, out.height - out.height // 12, out.width // 5
    draw.rectangle([x0, y0, x0 + length, y0 + 3], fill="white")
    draw.text((x0, y0 - 14), "1 mm", fill="white")
    return out


VARIANTS = {
    "as it is": lambda im: im,
    "JPEG quality 25 (a messaging app)": lambda im: _jpeg(im, 25),
    "warm white balance (red x1.2, blue x0.8)": lambda im: _gains(im, 1.2, 0.8),
    "cool white balance (red x0.85, blue x1.15)": lambda im: _gains(im, 0.85, 1.15),
    "darker (brightness x0.75)": lambda im: ImageEnhance.Brightness(im).enhance(0.75),
    "brighter (brightness x1.2)": lambda im: ImageEnhance.Brightness(im).enhance(1.2),
    "out of focus (Gaussian blur, 0.4 % of the width)": lambda im: im.filter(ImageFilter.GaussianBlur(im.width / 250)),
    "over-sharpened (unsharp mask 250 %)": lambda im: im.filter(ImageFilter.UnsharpMask(2, 250, 2)),
    "320 px thumbnail": lambda im: im.resize((320, round(320 * im.height / im.width))),
    "date and ID burnt into a corner": _burnt_in,
    "digital scale bar": _scale_bar,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--data", default=str(Path(DEFAULT_DATA).parent))
    ap.add_argument("--n", type=int, default=150)
    a = ap.parse_args()
    items = [g for g in gate_images(Path(a.data), DEFAULT_SPLIT_FILE) if g.part == "check" and g.label == DERMOSCOPIC]
    picked = [items[i] for i in np.random.default_rng(1).permutation(len(items))[:a.n]]
    images = [Image.open(g.path).convert("RGB") for g in picked]
    images = [im.resize((600, round(600 * im.height / im.width))) if im.width < 600 else im for im in images]
    predictor = Predictor(a.model)
    print(f"{a.model} ({predictor.model_info['version']}), {len(picked)} check-part dermoscopic images, each at least "
          "600 px wide")
    print("| picture | answered | not assessed because |")
    print("|---|---|---|")
    for name, change in VARIANTS.items():
        count, why = answered(predictor, (change(im) for im in images), quality=92)
        print(f"| {name} | {count} of {len(images)} | {why} |", flush=True)


if __name__ == "__main__":
    main()
