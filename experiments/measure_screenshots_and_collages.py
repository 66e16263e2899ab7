"""What the checks make of dermoscopy inside a screenshot, a captioned figure or a collage.

    .venv/bin/python experiments/measure_screenshots_and_collages.py [--model models/dermalens]

Each of the 56 full-size HAM10000 originals (`ham10000_fullres_sample`) is sent as it is and dressed up as a user
might send it: inside a photo viewer's window, with a caption bar (white, dark or coloured, over the top of the
image) or a caption strip below it, framed by a white or black border, or tiled with
other originals into a collage (side by side, square crops side by side, one above the other, 2x2 with and without
white gutters, 3x3). Each picture is saved as a JPEG (quality 90) and
goes through `Predictor.predict`, as `dermalens predict` and the API run it. Printed: how many got an answer and
the reasons of the others. A measurement of a limit, not a choice: nothing in the bundle depends on it.
"""
from __future__ import annotations

import argparse
import io
from collections import Counter
from pathlib import Path

from PIL import Image, ImageDraw

from dermalens.defaults import DEFAULT_DATA, DEFAULT_MODEL
from dermalens.inference import Predictor


def collage(images: list[Image.Image], columns: int, gutter: int = 0) -> Image.Image:
    w, h = images[0].size
    rows = len(images) // columns
    out = Image.new("RGB", (columns * w + (columns - 1) * gutter, rows * h + (rows - 1) * gutter), "white")
    for i, im in enumerate(images):
        out.paste(im.resize((w, h)), ((i % columns) * (w + gutter), (i // columns) * (h + gutter)))
    return out


def framed(image: Image.Image, share: float, colour: str) -> Image.Image:
    bw, bh = int(image.width * share), int(image.height * share)
    out = Image.new("RGB", (image.width + 2 * bw, image.height + 2 * bh), colour)
    out.paste(image, (bw, bh))
    return out


def in_a_viewer(image: Image.Image) -> Image.Image:
    """A 1280x800 screenshot of an image viewer: a title bar, grey surroundings, the image at 900x675."""
    out = Image.new("RGB", (1280, 800), (240, 240, 240))
    draw = ImageDraw.Draw(out)
    draw.rectangle([0, 0, 1280, 40], fill=(50, 50, 60))
    draw.text((10, 10), "Photos - lesion.jpg   100%", fill="white")
    out.paste(image.resize((900, 675)), (190, 80))
    return out


def captioned(image: Image.Image, fill="white", ink="black") -> Image.Image:
    out = image.copy()
    draw = ImageDraw.Draw(out)
    draw.rectangle([0, 0, image.width, 40], fill=fill)
    draw.text((5, 5), "Fig. 2a  melanoma in situ", fill=ink)
    return out


def caption_below(image: Image.Image) -> Image.Image:
    """A figure as a page shows it: the image, then a white strip with the caption under it."""
    out = Image.new("RGB", (image.width, image.height + image.height // 6), "white")
    out.paste(image, (0, 0))
    ImageDraw.Draw(out).text((5, image.height + 8), "Figure 3. Dermoscopy of a pigmented lesion", fill="black")
    return out


def square(image: Image.Image) -> Image.Image:
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


FULLRES = Path(DEFAULT_DATA).parent / "ham10000_fullres_sample"


def kinds(originals: list[Image.Image]) -> dict:
    """Name -> (index -> the picture made from the index-th original and, for a collage, the ones after it)."""
    n = len(originals)

    def others(i, k):
        return [originals[(i + j) % n] for j in range(k)]
    return {
        "as it is": lambda i: originals[i],
        "inside a photo viewer's window (1280x800 screenshot)": lambda i: in_a_viewer(originals[i]),
        "with a white caption bar": lambda i: captioned(originals[i]),
        "white border, a quarter of each side": lambda i: framed(originals[i], 0.25, "white"),
        "black border, a quarter of each side": lambda i: framed(originals[i], 0.25, "black"),
        "with a dark grey caption bar": lambda i: captioned(originals[i], (40, 40, 40), "white"),
        "with a blue caption bar": lambda i: captioned(originals[i], (30, 80, 160), "white"),
        "with a white caption strip below the image": lambda i: caption_below(originals[i]),
        "two side by side": lambda i: collage(others(i, 2), 2),
        "two square crops side by side (2:1)": lambda i: collage([square(o) for o in others(i, 2)], 2),
        "two one above the other": lambda i: collage(others(i, 2), 1),
        "2x2 collage": lambda i: collage(others(i, 4), 2),
        "2x2 collage, white gutters": lambda i: collage(others(i, 4), 2, 12),
        "3x3 collage": lambda i: collage(others(i, 9), 3),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--images", default=str(FULLRES))
    a = ap.parse_args()
    predictor = Predictor(a.model)
    originals = [Image.open(p).convert("RGB") for p in sorted(Path(a.images).glob("*.jpg"))]
    n = len(originals)
    variants = kinds(originals)
    print(f"{a.model}, {n} originals from {a.images}")
    print("| picture | answered | not assessed because |")
    print("|---|---|---|")
    for name, make in variants.items():
        answered, reasons = 0, Counter()
        for i in range(n):
            buffer = io.BytesIO()
            make(i).save(buffer, "JPEG", quality=90)
            p = predictor.predict(buffer.getvalue())
            answered += p.in_distribution
            reasons.update(r.code for r in p.ood_reasons)
        print(f"| {name} | {answered} of {n} | {', '.join(f'{c} {k}' for c, k in reasons.most_common()) or '-'} |")


if __name__ == "__main__":
    main()
