"""How colourful are HAM10000 images? The figures behind the OOD gate's `min_chroma` rule.

    .venv/bin/python experiments/chroma_survey.py [--data ../shared/data/ham10000]

Prints the distribution, over all images, of the mean chroma (max(R, G, B) - min(R, G, B) per pixel,
averaged) of each image as the shipped model's preprocessing sees it (resized to its input size), and
the least colourful images. A greyscale picture scores 0.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from dermalens.data import load_ham10000  # noqa: E402
from dermalens.inference.bundle import load_bundle  # noqa: E402
from dermalens.inference.ood import mean_chroma  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ham10000"))
    ap.add_argument("--model", default=str(REPO / "models" / "dermalens-lite2"))
    a = ap.parse_args(argv)
    spec = load_bundle(a.model).spec
    records = load_ham10000(a.data)
    chroma = np.array([mean_chroma(spec.to_uint8(r.path)) for r in tqdm(records, desc="images")])
    print(f"{len(chroma)} images at {spec.input_size[0]}x{spec.input_size[1]}: mean chroma min {chroma.min():.2f}, "
          f"percentiles 0.1/1/5/50: " + " / ".join(f"{v:.1f}" for v in np.percentile(chroma, [0.1, 1, 5, 50])))
    for i in np.argsort(chroma)[:5]:
        print(f"  {records[i].image_id} ({records[i].dx}): {chroma[i]:.2f}")


if __name__ == "__main__":
    main()
