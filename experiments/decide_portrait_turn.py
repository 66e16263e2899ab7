"""Images that are not 4:3 landscape: the shipped network on reshaped validation images.

    .venv/bin/python experiments/decide_portrait_turn.py [--model models/dermalens-lite2]

Every HAM10000 frame is 200x150 (4:3 landscape), like the input size, but users send phone photos held
upright (3:4), square crops and wide frames. Until bundle 2.2.1 the one preprocessing resized whatever came
to 256x341, so a portrait photo was squeezed to 0.56 of its width. Each validation image goes through the
bundle's network as an upload would, reshaped in two ways:

1. turned 90 degrees (a 150x200 portrait), then either resized as it comes (squeezed, 2.2.1's behaviour)
   or turned back to landscape first (`PreprocessSpec.match_orientation`, the new setting);
2. cut at its centre to 1:1 (150x150), 3:2 (200x133), 16:9 (200x112), 2:1 (200x100) and 3:1 (200x67),
   then either stretched to the input size (`resize: stretch`, the shipped policy) or scaled to cover it
   and cut at the centre (`resize: center_crop`). The 2:1 and 3:1 cuts also lose resolution (the short side
   falls to 100 and 67 px) and much of the lesion, so their rows measure more than the shape.

The table in docs/decisions/portrait-and-shape.md was printed with bundle 2.2.1 (2.2.2 differs only in the setting each row sets
itself); bundles from 2.3.0 on also cut the frame's centre, so to rerun it:
`mkdir -p /tmp/b222 && git archive 97a598d models/dermalens-lite2 | tar -x -C /tmp/b222`, then
`--model /tmp/b222/models/dermalens-lite2`.

Printed per row, on validation only: macro AUROC, balanced accuracy of the bundle's decision rule, malignant
sensitivity and specificity at the card's threshold, and the share the OOD gate passes (the size check is
left out: it reads the size as sent, which these in-memory images do not have).

Rules, written before any figure was computed (session 10):
- Orientation: `match_orientation` is turned on in the shipped bundle if the turned-back portrait's validation
  macro AUROC is at least the squeezed portrait's and at most 0.005 below the landscape images' own.
- Shape: the resize policy changes from `stretch` to `center_crop` only if `center_crop` has the higher
  validation macro AUROC at every cut from 1:1 to 2:1; otherwise `stretch` stays.
"""
from __future__ import annotations

import dataclasses

from PIL import Image

from probe_common import HEADER, arguments, figures, validation_images

CUTS = {"1:1": (150, 150), "3:2": (200, 133), "16:9": (200, 112), "2:1": (200, 100), "3:1": (200, 67)}


def centre_cut(img: Image.Image, width: int, height: int) -> Image.Image:
    left, top = (img.width - width) // 2, (img.height - height) // 2
    return img.crop((left, top, left + width, top + height))


def main():
    a = arguments(__doc__)
    predictor, y, originals = validation_images(a)
    spec = predictor.bundle.spec

    def row(label, images, **change):
        variant = dataclasses.replace(spec, **change)
        print(f"| {label} " + figures(predictor, y, [variant.to_uint8(img) for img in images]), flush=True)

    print("| images, preprocessing " + HEADER[0])
    print("|---" + HEADER[1])
    row("4:3 landscape as they are (200x150)", originals, match_orientation=False)
    # Turned counter-clockwise, as match_orientation turns too: the network then sees each lesion
    # upside down (180 degrees), a view it was trained on, not the landscape pixels again.
    portraits = [img.transpose(Image.Transpose.ROTATE_90) for img in originals]
    row("3:4 portrait (150x200), squeezed (2.2.1)", portraits, match_orientation=False)
    row("3:4 portrait (150x200), turned to landscape", portraits, match_orientation=True)
    for name, (w, h) in CUTS.items():
        cut = [centre_cut(img, w, h) for img in originals]
        row(f"{name} cut ({w}x{h}), stretch", cut, resize="stretch")
        row(f"{name} cut ({w}x{h}), center_crop", cut, resize="center_crop")


if __name__ == "__main__":
    main()
