"""How small may a user's image be? The shipped bundle on downscaled validation images.

    .venv/bin/python experiments/decide_min_short_side.py [--model models/dermalens-lite2]

Each validation image (200x150, itself a downscale of the 600x450 original) is shrunk to a short side of
150 (as is), 112, 94, 75, 56 and 38 pixels with Pillow's antialiased bilinear filter, then goes through the
bundle exactly as a user's upload would (the one preprocessing: resize to the input size, ONNX). Printed
per size, on validation only: macro AUROC, balanced accuracy of the bundle's decision rule, malignant
sensitivity and specificity at the card's threshold, and the share of images the OOD gate passes.

Rule, written before any figure was computed (session 9): the smallest short side the bundle assesses is
the smallest tested size at which validation macro AUROC is at most 0.01 below, and malignant sensitivity at
most 0.03 below, the figures of the images as they are (150). Images with a shorter short side get no
assessment: the predictor gives the reason, as it does for the other input checks.
"""
from __future__ import annotations

from PIL import Image

from probe_common import HEADER, arguments, figures, validation_images

SHORT_SIDES = (150, 112, 94, 75, 56, 38)


def main():
    a = arguments(__doc__)
    predictor, y, originals = validation_images(a)
    print("| short side (px) " + HEADER[0])
    print("|---" + HEADER[1])
    for side in SHORT_SIDES:
        pixels = []
        for img in originals:
            scale = side / min(img.size)
            small = img if scale >= 1 else img.resize((round(img.width * scale), round(img.height * scale)),
                                                      Image.Resampling.BILINEAR, reducing_gap=None)
            pixels.append(predictor.load(small))
        size = f"{round(200 * side / 150)}x{side}"
        print(f"| {side} ({size}) " + figures(predictor, y, pixels), flush=True)


if __name__ == "__main__":
    main()
