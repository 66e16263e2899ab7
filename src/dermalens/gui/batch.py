"""Batch classification of a folder, optionally scored against a labels CSV (no Tk here)."""
from __future__ import annotations

import csv
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..classes import CODES
from ..data import load_labelled_folder
from ..data.datasets import IMAGE_EXTENSIONS
from ..evaluate.intervals import with_interval
from ..evaluate.metrics import classification_metrics
from .backend import BackendError


@dataclass
class BatchResult:
    rows: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    metrics: dict | None = None  # over the assessed images only
    cancelled: bool = False
    not_assessed: int = 0


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise BackendError(f"{folder}: folder not found")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def batch_items(folder: str | Path, labels_csv: str | Path | None) -> list[tuple[Path, str | None, str, dict | None]]:
    """(image path, true code or None, lesion id, patient details or None) for every image to classify.
    The lesion id groups images of one lesion for the confidence intervals; without one, an image is its
    own group. The labels CSV may carry age, sex and localization (or site) columns."""
    if labels_csv:
        from ..data import DatasetError
        from ..inference.metadata import MetadataError, read_metadata_csv
        try:
            recs = load_labelled_folder(labels_csv, folder, missing="skip")
        except DatasetError as e:
            raise BackendError(str(e)) from None
        if not recs:
            raise BackendError(f"none of the images listed in {labels_csv} is in {folder}")
        try:
            metas = read_metadata_csv(labels_csv)
        except MetadataError as e:
            if "needs an image_id column" not in str(e):
                raise BackendError(str(e)) from None
            metas = {}  # a labels CSV without patient columns
        return [(r.path, r.dx, r.lesion, _as_dict(metas.get(r.image_id))) for r in recs]
    paths = list_images(folder)
    if not paths:
        raise BackendError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return [(p, None, p.name, None) for p in paths]


def _as_dict(meta) -> dict | None:
    return meta.to_dict() if meta is not None and meta.present else None


def run_batch(backend, items, cancel: threading.Event | None = None, progress=None) -> BatchResult:
    res = BatchResult()
    probs, preds, truth, groups, thresholds = [], [], [], [], []
    for i, (path, dx, group, *meta) in enumerate(items):
        if cancel is not None and cancel.is_set():
            res.cancelled = True
            break
        try:
            r = backend.predict(path, explain=False, metadata=meta[0] if meta else None)
        except BackendError as e:
            res.errors.append({"file": str(path), "error": str(e)})
        else:
            p, q = r["prediction"], r["quality"]
            used = bool((r.get("metadata") or {}).get("used"))
            if not q["in_distribution"]:
                # Not assessed: no class or score to show, and nothing to score against the label.
                res.rows.append({"file": Path(path).name, "true": dx or "", "prediction": "not assessed",
                                 "confidence": None, "malignancy": None, "risk": r["risk"]["level"],
                                 "in_distribution": False, "metadata_used": used,
                                 "not_assessed_because": "; ".join(x["message"] for x in q["reasons"])})
                res.not_assessed += 1
            else:
                res.rows.append({"file": Path(path).name, "true": dx or "", "prediction": p["code"],
                                 "confidence": round(p["confidence"], 4),
                                 "malignancy": round(r["malignancy"]["probability"], 4),
                                 "risk": r["risk"]["level"], "in_distribution": True, "metadata_used": used,
                                 "not_assessed_because": ""})
            if dx is not None and q["in_distribution"]:
                thresholds.append(r["malignancy"]["threshold"])  # with or without metadata, per result
                probs.append(p["all_probabilities"])
                preds.append(CODES.index(p["code"]))
                truth.append(CODES.index(dx))
                groups.append(group)
        if progress:
            progress(i + 1, len(items))
    if truth:
        t = thresholds[0] if len(set(thresholds)) == 1 else np.array(thresholds)
        res.metrics = classification_metrics(np.array(truth), np.array(probs), CODES, t,
                                             pred=np.array(preds), groups=groups)
    return res


def export_csv(rows: list[dict], path: str | Path) -> None:
    if not rows:
        raise BackendError("nothing to export yet")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def metrics_text(m: dict) -> str:
    """The metrics block the batch view shows (also compared with `dermalens evaluate` in tests)."""
    lines = [f"images: {m['n']}", f"accuracy: {with_interval(m, 'accuracy')}",
             f"balanced accuracy: {with_interval(m, 'balanced_accuracy')}"]
    if m.get("macro_auroc") is not None:
        lines.append(f"macro AUROC: {with_interval(m, 'macro_auroc')}")
    mal = m.get("malignant", {})
    if mal.get("sensitivity") is not None:
        lines.append(f"malignant sensitivity: {with_interval(m, 'malignant_sensitivity')}")
    if mal.get("specificity") is not None:
        lines.append(f"malignant specificity: {with_interval(m, 'malignant_specificity')}")
    lines += ["", f"{'class':6s} {'prec':>6s} {'recall':>6s} {'F1':>6s} {'n':>4s}"]
    for c, e in m["per_class"].items():
        rec = "" if e["recall"] is None else f"{e['recall']:.3f}"
        f1 = "" if e["f1"] is None else f"{e['f1']:.3f}"
        lines.append(f"{c:6s} {e['precision']:6.3f} {rec:>6s} {f1:>6s} {e['support']:4d}")
    lines += ["", "confusion matrix (rows: true, columns: predicted)", "       " + " ".join(f"{c:>5s}" for c in CODES)]
    for c, row in zip(CODES, m["confusion_matrix"]):
        lines.append(f"{c:6s} " + " ".join(f"{v:5d}" for v in row))
    return "\n".join(lines)
