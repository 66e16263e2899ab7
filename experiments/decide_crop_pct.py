"""Serving a central part of the frame: the shipped network on zoomed validation images.

    .venv/bin/python experiments/decide_crop_pct.py [--model models/dermalens-lite2]

Why: in experiments/decide_portrait_turn.py the validation frames cut to their central 150x150 ranked
better (macro AUROC 0.9686) than the whole 200x150 frames (0.9668). The network was trained on random
resized crops covering 50-100 % of the frame, so lesions looked larger in training than in a whole-frame
resize (the reason 2.1.0 serves at 256x341, see docs/decisions/serving-size.md); keeping only the centre is the
other way to make them look larger, and it also drops the frame's edge (vignetting, rulers). HAM10000 frames
are centred on the lesion, but large lesions reach the edge, so cutting too much must cost.

Each validation frame keeps the central fraction f of its width and of its height (f = 1, 0.95, 0.9, 0.85,
0.8, 0.75; same 4:3 shape; `PreprocessSpec.center_fraction`, replacing the bundle's own), then goes through the
bundle as an upload would (resize to 256x341, ONNX, the card's temperature). The table in docs/decisions/central-cut.md
was printed with bundle 2.2.2, whose temperature, threshold and gate it used; to rerun it:
`mkdir -p /tmp/b222 && git archive 97a598d models/dermalens-lite2 | tar -x -C /tmp/b222`, then
`--model /tmp/b222/models/dermalens-lite2`. Printed per f, on validation only: macro AUROC, malignant AUROC,
balanced accuracy of the bundle's decision rule, malignant sensitivity / specificity at the card's threshold,
the share the gate passes.

Rule, written before any figure was computed (session 10), the same bar as every CPU lever since session 7:
among f < 1 whose validation macro AUROC and malignant AUROC are both at least 2.2.x's (0.9668 / 0.9348,
f = 1), the one with the highest macro AUROC becomes a preprocessing setting (`center_fraction`), exported
as bundle 2.3.0 (temperature, decision bias, thresholds and the OOD gate refitted on it), whose test figures
are read once and shipped whatever they are. If no f qualifies, nothing changes and the test split is not
read for it.
"""
from __future__ import annotations

import dataclasses

from probe_common import arguments, measure, validation_images

FRACTIONS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75)


def main():
    a = arguments(__doc__)
    predictor, y, originals = validation_images(a)
    print("| central fraction kept | macro AUROC | malignant AUROC | balanced accuracy | malignant sens / spec "
          "| OOD gate passes |")
    print("|---|---|---|---|---|---|")
    for f in FRACTIONS:
        spec = dataclasses.replace(predictor.bundle.spec, center_fraction=f)  # whatever the bundle's own cut
        m, passes = measure(predictor, y, [spec.to_uint8(img) for img in originals])
        mal = m["malignant"]
        print(f"| {f:.2f} | {m['macro_auroc']:.4f} | {mal['auroc']:.4f} | {m['balanced_accuracy']:.3f} | "
              f"{mal['sensitivity']:.3f} / {mal['specificity']:.3f} | {passes:.3f} |", flush=True)


if __name__ == "__main__":
    main()
