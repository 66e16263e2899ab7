"""Evaluate a model bundle (ONNX, no PyTorch) on a labelled set of records."""
from __future__ import annotations

import sys

import numpy as np
from tqdm import tqdm

from ..data import Record
from ..preprocess import ImageError
from ..inference.metadata import lookup
from ..inference.softmax import decide
from .metrics import classification_metrics
from .subgroups import subgroup_metrics


def decode_records(predictor, records: list[Record], progress: bool = True, desc: str = "decode",
                   sizes: list | None = None):
    """uint8 pixels for the readable records; unreadable ones are returned separately. `sizes`: a list to receive
    each kept image's size as read (the size checks' input), decoded as served (Predictor.predict's path)."""
    pixels, kept, failed = [], [], []
    for r in tqdm(records, desc=desc, disable=not progress or len(records) < 100):
        try:
            if sizes is None:
                pixels.append(predictor.load(r.path))
            else:
                view, size = predictor.load_sized(predictor.open_image(r.path))
                pixels.append(view)
                sizes.append(size)
            kept.append(r)
        except ImageError as e:
            failed.append({"image_id": r.image_id, "path": str(r.path), "error": str(e)})
    h, w = predictor.bundle.spec.input_size
    arr = np.stack(pixels) if pixels else np.zeros((0, h, w, 3), np.uint8)
    return arr, kept, failed


def evaluate_records(predictor, records: list[Record], tta: bool = False, progress: bool = True,
                     metadata: dict | None = None, subgroups: bool = True) -> dict:
    """Figures of the images alone; with `metadata` (image_id -> PatientMetadata) also the figures per
    patient subgroup and, for a bundle with a metadata model, `metrics["with_metadata"]`: the same set
    with the metadata fused (one forward pass serves both)."""
    sizes: list = []
    pixels, kept, failed = decode_records(predictor, records, progress, sizes=sizes)
    absent = list(getattr(records, "absent", ()))
    if not kept:
        named = "; ".join(f["error"] for f in failed[:3]) + ("; ..." if len(failed) > 3 else "")
        why = [f"none of the {len(records)} images could be read ({named})" if records else "no images"]
        if absent:
            why.append(f"{len(absent)} listed image(s) were not found ({', '.join(absent[:5])}"
                       f"{', ...' if len(absent) > 5 else ''})")
        raise ValueError(f"{'; '.join(why)}: nothing to evaluate")
    for f in failed:
        f["reason"] = "unreadable"
    # listed in the labels CSV but not there (--skip-missing): left out of every figure, and said so (the
    # command prints each entry of "skipped"; the report lists them)
    failed += [{"image_id": i, "path": i, "reason": "not found",
                "error": "listed in the labels CSV but not found, so left out (--skip-missing)"}
               for i in absent]
    codes = predictor.bundle.codes
    y = np.array([codes.index(r.dx) for r in kept])
    lesions = [r.lesion for r in kept]
    probs, pooled, _ = predictor.forward(pixels, tta=tta)
    thresholds, bias = predictor.bundle.operating_point(False)
    pred = decide(probs, bias)
    metrics = classification_metrics(y, probs, codes, malignant_threshold=float(thresholds["malignant"]),
                                     pred=pred, groups=lesions)
    # what a user gets: an answer only when every check passes (exposure, size and shape, image type, feature
    # distance); the image-type check's scores as predict_pixels gets them, so the reasons counted in refused_by
    # are the ones a user is told
    reasons, checks = predictor.reasons(pixels, pooled, source_sizes=sizes)
    scores = checks["ood"]
    if scores is not None:
        passed = scores <= predictor.ood_threshold
        metrics["ood_pass_rate"] = float(passed.mean())
        # per diagnosis: a gate that passes 95 % overall can still turn most of a rare class away
        dx = np.array([r.dx for r in kept])
        metrics["ood_pass_rate_by_class"] = {c: float(passed[dx == c].mean()) for c in sorted(set(dx))}
    derm = checks["dermoscopic"]
    if derm is not None:
        # the image-type check: every image here is dermoscopy, so each one it turns away is a false refusal
        ok = derm >= predictor.bundle.gate.threshold
        dx = np.array([r.dx for r in kept])
        metrics["modality_pass_rate"] = float(ok.mean())
        metrics["modality_pass_rate_by_class"] = {c: float(ok[dx == c].mean()) for c in sorted(set(dx))}
    assessed = np.array([not r for r in reasons])
    metrics["assessed_rate"] = float(assessed.mean())
    codes_seen = sorted({r.code for rs in reasons for r in rs})
    metrics["refused_by"] = {c: float(np.mean([any(r.code == c for r in rs) for rs in reasons])) for c in codes_seen}
    metrics["tta"] = tta
    metrics["metadata_used"] = False
    metrics["skipped"] = failed
    result = {"metrics": metrics, "y": y, "probs": probs, "records": kept, "pixels": pixels, "assessed": assessed,
              "dermoscopic": derm}
    if metadata is None:
        return result
    metas = [_metadata_of(metadata, r) for r in kept]
    without = [r.image_id for r, m in zip(kept, metas) if m is None]
    if without:
        # a metadata file for other images, or naming them otherwise: those images fall back to image-only
        # figures and the subgroup "not given", which would otherwise look like a finding
        metrics["metadata_missing"] = {"count": len(without), "image_ids": without[:20]}
        print(f"warning: {metadata_missing_text(metrics)}", file=sys.stderr)
    if subgroups:
        metrics["subgroups"] = subgroup_metrics(y, probs, pred, lesions, metas, codes,
                                                float(thresholds["malignant"]))
    if predictor.accepts_metadata:
        fused, used = predictor.fuse(probs, metas)
        t_row = np.empty(len(kept))
        pred_m = np.empty(len(kept), int)
        for flag in (False, True):
            t, b = predictor.bundle.operating_point(flag)
            rows = used == flag
            t_row[rows] = float(t["malignant"])
            pred_m[rows] = decide(fused[rows], b)
        m = classification_metrics(y, fused, codes, malignant_threshold=t_row, pred=pred_m, groups=lesions)
        m.update({"metadata_used": True, "images_with_metadata": int(used.sum()), "tta": tta,
                  "rule": "images without any field keep the image-only result and its operating point"})
        if subgroups:
            m["subgroups"] = subgroup_metrics(y, fused, pred_m, lesions, metas, codes, t_row)
        metrics["with_metadata"] = m
        result["probs_with_metadata"] = fused
    return result


def _metadata_of(metadata: dict, record: Record):
    """The row for a record's image: by the id the labels CSV gives ('ISIC_1' or 'ISIC_1.jpg'), else by the
    image file's name or stem, so a labels CSV and a metadata file that write the id differently still match."""
    m = metadata.get(record.image_id)
    return m if m is not None else lookup(metadata, str(record.path))


def metadata_missing_text(metrics: dict) -> str:
    """One sentence on the images the metadata gives nothing for ('' when it covers them all)."""
    miss = metrics.get("metadata_missing")
    if not miss:
        return ""
    ids = miss["image_ids"][:5]
    return (f"the metadata gives no details for {miss['count']} of the {metrics['n']} images "
            f"({', '.join(ids)}{', ...' if miss['count'] > len(ids) else ''}): they are evaluated image-only and "
            "counted as 'not given' in the subgroups; check that the metadata file's image_id column names the "
            "same images as the labels")
