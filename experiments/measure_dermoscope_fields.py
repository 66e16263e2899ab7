"""What the checks make of dermoscopy shown as a round field inside a black frame.

    .venv/bin/python experiments/measure_dermoscope_fields.py [--model models/dermalens] [--n 150]

A dermoscope attached to a phone or a camera, and some collections (BCN20000's square frames among them), show the
lesion as a round field of skin inside a black frame. Each of `--n` dermoscopic images of the image-type check's
**check** parts (HAM10000 validation, isic_archive check; a fixed random pick) is drawn as such a field: the image
resized into a circle of a share of the frame's short side, black outside, saved as a JPEG (quality 90), in 4:3, 16:9
and 1:1 frames. Each picture goes through `Predictor.predict`, as `dermalens predict` and the API run it. Printed:
how many got an answer, and the reasons of the others. `--photos` draws the check parts' phone and clinical photos
(PAD-UFES-20, SD-198) the same way instead: the other side of the trim, which must not make them pass.
`--count-trimmed` counts, in every part of the five collections as they are, the images whose dark margins the trim
would cut. A measurement of a limit, not a choice.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dermalens.data.modality_sets import DERMOSCOPIC, NOT_DERMOSCOPIC, gate_images
from dermalens.defaults import DEFAULT_DATA, DEFAULT_MODEL, DEFAULT_SPLIT_FILE
from dermalens.inference import Predictor
from dermalens.preprocess import dark_margins, load_rgb
from probe_common import answered

FRAMES = {"4:3": (1600, 1200), "16:9": (1920, 1080), "1:1": (1200, 1200)}
DIAMETERS = (1.0, 0.85, 0.7, 0.55)  # of the frame's short side


def round_field(img: Image.Image, frame: tuple[int, int], diameter: float) -> Image.Image:
    w, h = frame
    d = int(min(w, h) * diameter)
    mask = Image.new("L", (d, d), 0)
    ImageDraw.Draw(mask).ellipse([0, 0, d - 1, d - 1], fill=255)
    out = Image.new("RGB", frame, (8, 8, 8))
    out.paste(img.resize((d, d)), ((w - d) // 2, (h - d) // 2), mask.filter(ImageFilter.GaussianBlur(d * 0.01)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--data", default=str(Path(DEFAULT_DATA).parent))
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--photos", action="store_true", help="phone and clinical photos instead of dermoscopy")
    ap.add_argument("--count-trimmed", action="store_true", help="count the collections' images with dark margins")
    a = ap.parse_args()
    if a.count_trimmed:
        everything = gate_images(Path(a.data), DEFAULT_SPLIT_FILE)
        for name in sorted({g.set for g in everything}):
            mine = [g for g in everything if g.set == name]
            cut = sum(any(dark_margins(load_rgb(g.path))) for g in mine)
            print(f"{name}: {cut} of {len(mine)} images have dark margins the trim cuts")
        return
    kind = NOT_DERMOSCOPIC if a.photos else DERMOSCOPIC
    items = [g for g in gate_images(Path(a.data), DEFAULT_SPLIT_FILE) if g.part == "check" and g.label == kind]
    picked = [items[i] for i in np.random.default_rng(0).permutation(len(items))[:a.n]]
    predictor = Predictor(a.model)
    print(f"{a.model} ({predictor.model_info['version']}), {len(picked)} check-part "
          f"{'phone and clinical photos' if a.photos else 'dermoscopic images'}")
    as_they_are = sum(predictor.predict(g.path).in_distribution for g in picked)
    print(f"as they are: {as_they_are} of {len(picked)} answered")
    print("| frame | field's diameter (of the short side) | answered | not assessed because |")
    print("|---|---|---|---|")
    for name, frame in FRAMES.items():
        for diameter in DIAMETERS:
            count, why = answered(predictor, (round_field(Image.open(g.path).convert("RGB"), frame, diameter)
                                              for g in picked))
            print(f"| {name} | {diameter:g} | {count} of {len(picked)} | {why} |", flush=True)


if __name__ == "__main__":
    main()
