"""Probe (not shipped): would a "straight seam" layout check catch the composites the shipped checks answer?

    .venv/bin/python experiments/probe_seam_check.py [--model models/dermalens]

Two pictures joined side by side or one above the other meet in a straight line across the whole view. The
statistic, on the classifier's view: for every line across the middle half of each side, the colour step between
the 9 columns (rows) before it and the 9 after it (per-row medians, skipping 2 at the line, so a hair or a thin
drawn line does not count), its 20th percentile along the line (a step along at least 80 % of it), over the median
step of the lines 6-16 away (texture), lines next to a dark margin left out. Its threshold is set on the fit parts'
dermoscopy only (HAM10000 fit, isic_archive fit): the first whole number above all of them. Printed: that
distribution, and how many of the pictures of experiments/measure_screenshots_and_collages.py that the bundle
answers the seam check would refuse.
"""
from __future__ import annotations

import io
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import measure_screenshots_and_collages as pictures  # noqa: E402
from probe_common import arguments  # noqa: E402
from dermalens.data.modality_sets import DERMOSCOPIC, gate_images  # noqa: E402
from dermalens.defaults import DEFAULT_DATA, DEFAULT_SPLIT_FILE  # noqa: E402
from dermalens.inference import Predictor  # noqa: E402
from dermalens.preprocess import open_image  # noqa: E402

LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def seam_score(view: np.ndarray, q=20, gap=2, width=9, near=5, far=16, middle=0.25, dark=40.0) -> float:
    best = 0.0
    for axis in (0, 1):
        v = view.astype(np.float32)
        if axis == 0:
            v = v.transpose(1, 0, 2)
        n = v.shape[1]
        k = np.arange(gap + width, n - gap - width + 1)
        med = np.sort(np.lib.stride_tricks.sliding_window_view(v, width, axis=1), axis=-1)[..., width // 2]
        step = np.percentile(np.abs(med[:, k + gap] - med[:, k - gap - width]).sum(axis=2), q, axis=0)
        dark_line = np.convolve(np.median(v @ LUMA, axis=0) < dark, np.ones(17), "same") > 0
        offsets = np.r_[-far:-near, near + 1:far + 1]
        padded = np.pad(step, far, mode="reflect")
        texture = np.median(padded[np.arange(len(step))[:, None] + far + offsets[None, :]], axis=1)
        ratio = step / (texture + 1.0)
        ratio[(step < 6) | dark_line[k] | dark_line[k - 1] | (k < middle * n) | (k > (1 - middle) * n)] = 0
        best = max(best, float(ratio.max()))
    return best


def main():
    a = arguments(__doc__)
    predictor = Predictor(a.model)
    items = [it for it in gate_images(Path(DEFAULT_DATA).parent, DEFAULT_SPLIT_FILE)
             if it.part == "fit" and it.label == DERMOSCOPIC]
    with ThreadPoolExecutor(2) as pool:
        fit = np.array(list(pool.map(lambda it: seam_score(predictor.load_sized(open_image(it.path))[0]), items)))
    threshold = math.floor(fit.max()) + 1
    print(f"fit-part dermoscopy ({len(fit)}): 99th percentile {np.percentile(fit, 99):.2f}, 99.9th "
          f"{np.percentile(fit, 99.9):.2f}, highest {fit.max():.2f}: threshold {threshold}")
    originals = [Image.open(p).convert("RGB") for p in sorted(pictures.FULLRES.glob("*.jpg"))]
    print("| picture | answered by the bundle | of those, the seam check refuses |")
    print("|---|---|---|")
    for name, make in pictures.kinds(originals).items():
        answered = refused = 0
        for i in range(len(originals)):
            buffer = io.BytesIO()
            make(i).save(buffer, "JPEG", quality=90)
            p = predictor.predict(buffer.getvalue())
            if p.in_distribution:
                answered += 1
                refused += seam_score(predictor.load_sized(open_image(buffer.getvalue()))[0]) >= threshold
        print(f"| {name} | {answered} of {len(originals)} | {refused} |")


if __name__ == "__main__":
    main()
