"""Decision (docs/decisions/source-resolution.md): shrink images larger than HAM10000's 200x150 frame before the
classifiers' resize? Prints the rule's figures for today's preprocessing and the candidate.

    .venv/bin/python experiments/decide_source_resolution.py
"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score
from dermalens.defaults import DEFAULT_DATA, DEFAULT_MODEL
from dermalens.inference import Predictor
from dermalens.preprocess import PreprocessSpec, _RESAMPLE
from dermalens.evaluate.external import external_records

p = Predictor(DEFAULT_MODEL)
spec = p.bundle.spec
orig_resize = PreprocessSpec.resize_image

def shrunk_first(self, img):
    if self.turns(img.width, img.height):
        img = img.transpose(Image.Transpose.ROTATE_90)
    rw, rh = (200, 150) if self.input_size[1] >= self.input_size[0] else (150, 200)
    if img.width > rw or img.height > rh:
        img = img.resize((min(img.width, rw), min(img.height, rh)), _RESAMPLE[self.interpolation])
    return orig_resize(self, img)  # already turned: it does not turn it again

def views(paths, candidate):
    PreprocessSpec.resize_image = shrunk_first if candidate else orig_resize
    try:
        return np.stack([spec.to_uint8(x) for x in paths])
    finally:
        PreprocessSpec.resize_image = orig_resize

def run(pix):
    probs, pooled, _ = p.forward(pix)
    return probs, p.ood_scores(pooled) > p.ood_threshold

codes = p.bundle.codes
recs, _ = external_records(Path(DEFAULT_DATA).parent, "check")
y = np.array([codes.index(r.dx) for r in recs])
present = sorted(set(y))
for cand in (False, True):
    probs, refused = run(views([r.path for r in recs], cand))
    macro = np.mean([roc_auc_score(y == c, probs[:, c]) for c in present])
    mal = probs[:, p.bundle.malignant].sum(1)
    print(f"isic check part n={len(y)} candidate={cand}: macro AUROC {macro:.4f}, malignant AUROC "
          f"{roc_auc_score(y == codes.index('mel'), mal):.4f}, distance refusals {refused.sum()}")
full = sorted((Path(DEFAULT_DATA).parent / "ham10000_fullres_sample").glob("*.jpg"))
small = [Path(DEFAULT_DATA) / "images" / f.name for f in full]
ps, rs = run(views(small, False))
ds = p.bundle.decide(ps)
for cand in (False, True):
    pf, rf = run(views(full, cand))
    df_ = p.bundle.decide(pf)
    print(f"56 originals candidate={cand}: class agrees with 200x150 copy {int((df_ == ds).sum())}/56, "
          f"mean |malignancy diff| {np.abs(pf[:, p.bundle.malignant].sum(1) - ps[:, p.bundle.malignant].sum(1)).mean():.3f}, "
          f"distance refusals {rf.sum()} (200x150 copies: {rs.sum()})")
