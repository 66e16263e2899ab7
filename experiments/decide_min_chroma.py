"""How colourful are HAM10000 images? The figures behind the OOD gate's `min_chroma` rule.

    .venv/bin/python experiments/decide_min_chroma.py [--data ../shared/data/ham10000]

Prints the distribution, over all images, of the mean chroma (max(R, G, B) - min(R, G, B) per pixel,
averaged) of each image as the shipped model's preprocessing sees it (resized to its input size), and
the least colourful images. A greyscale picture scores 0. Then, for greyscale copies of the validation
images: their chroma (also after a round trip through colour JPEG), the share that the gate's feature
distance alone would pass, and how confident the network is about those.
"""
from __future__ import annotations

import argparse
import io

import numpy as np
from PIL import Image
from tqdm import tqdm

from dermalens.defaults import DEFAULT_DATA, DEFAULT_MODEL
from dermalens.data import load_ham10000, select_split
from dermalens.inference import Predictor
from dermalens.inference.ood import mean_chroma


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    a = ap.parse_args(argv)
    predictor = Predictor(a.model)
    spec = predictor.bundle.spec
    records = load_ham10000(a.data)
    pixels = [spec.to_uint8(r.path) for r in tqdm(records, desc="images")]
    chroma = np.array([mean_chroma(p) for p in pixels])
    print(f"{len(chroma)} images at {spec.input_size[0]}x{spec.input_size[1]}: mean chroma min {chroma.min():.2f}, "
          f"percentiles 0.1/1/5/50: " + " / ".join(f"{v:.1f}" for v in np.percentile(chroma, [0.1, 1, 5, 50])))
    for i in np.argsort(chroma)[:5]:
        print(f"  {records[i].image_id} ({records[i].dx}): {chroma[i]:.2f}")

    val_ids = {r.image_id for r in select_split(records, "val")}
    grey = np.stack([np.asarray(Image.fromarray(p).convert("L").convert("RGB"))
                     for r, p in zip(records, pixels) if r.image_id in val_ids])
    least = Image.fromarray(pixels[int(np.argmin(chroma))]).convert("L").convert("RGB")
    jpeg = []
    for q in (30, 75, 95):
        buf = io.BytesIO()
        least.save(buf, "JPEG", quality=q)
        jpeg.append(f"{mean_chroma(spec.to_uint8(buf.getvalue())):.2f} at quality {q}")
    print(f"greyscale copies of the {len(grey)} validation images: mean chroma at most "
          f"{max(mean_chroma(g) for g in grey):.2f}; the least colourful image's copy saved as colour JPEG: "
          + ", ".join(jpeg))
    probs, pooled, _ = predictor.forward(grey)
    passed = predictor.ood_scores(pooled) <= predictor.ood_threshold
    top = probs.max(axis=1)
    print(f"the gate's feature distance alone passes {passed.mean():.3f} of them; of those, "
          f"{(top[passed] >= 0.5).mean():.3f} have a top class probability >= 0.5 (median {np.median(top[passed]):.2f})")


if __name__ == "__main__":
    main()
