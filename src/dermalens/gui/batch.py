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
from ..paths import broken_link
from .backend import BackendError


@dataclass
class BatchResult:
    rows: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    metrics: dict | None = None  # over the assessed images only
    cancelled: bool = False
    not_assessed: int = 0
    missing: list[str] = field(default_factory=list)  # listed in the labels CSV, not in the folder
    notes: list[str] = field(default_factory=list)  # what the user must be told about the items


class BatchItems(list):
    """The (path, true code, lesion id, patient details) items, with what was left out and why:
    `missing` are image ids the labels CSV lists that are not in the folder, `notes` warnings in words."""

    def __init__(self, items=(), missing=(), notes=()):
        super().__init__(items)
        self.missing, self.notes = list(missing), list(notes)


def missing_text(missing: list[str], labels_csv: str) -> str:
    """'2 image(s) listed in labels.csv not found (ISIC_1, ISIC_2)', naming at most five."""
    shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    return f"{len(missing)} image(s) listed in {labels_csv} not found ({shown})"


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise BackendError(f"{folder}: folder not found")
    # a broken link named like an image is listed, so the batch names it as skipped rather than dropping it unseen
    return sorted(p for p in folder.iterdir() if (p.is_file() or broken_link(p)) and p.suffix.lower() in IMAGE_EXTENSIONS)


def _subfolder_hint(folder: Path, searched: tuple[str, ...] = ()) -> str:
    """'; sub-folders are not searched (part1/ holds 12 images): choose ...' when there are images deeper."""
    try:
        found = [(d.name, len(list_images(d))) for d in sorted(folder.iterdir())
                 if d.is_dir() and d.name not in searched]
    except OSError:
        return ""
    found = [(name, n) for name, n in found if n]
    if not found:
        return ""
    held = ", ".join(f"{name}/ holds {n} image(s)" for name, n in found[:3]) + (", ..." if len(found) > 3 else "")
    other = " other than images/" if searched else ""
    return f"; sub-folders{other} are not searched ({held}): choose the folder that holds the images"


def batch_items(folder: str | Path, labels_csv: str | Path | None) -> BatchItems:
    """(image path, true code or None, lesion id, patient details or None) for every image to classify.
    The lesion id groups images of one lesion for the confidence intervals; without one, an image is its
    own group. The labels CSV may carry age, sex and localization (or site) columns; its images are looked
    for in the folder and in its images/ (the layout `evaluate --labels` reads)."""
    folder = Path(folder)
    if labels_csv:
        return _labelled_items(folder, Path(labels_csv))
    from ..predict import left_out_note
    paths = list_images(folder)
    other = left_out_note([p for p in folder.iterdir() if p.is_file()])  # said, as dermalens predict says it
    if not paths:
        raise BackendError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}){_subfolder_hint(folder)}"
                           + (f"; {other}" if other else ""))
    return BatchItems([(p, None, p.name, None) for p in paths], notes=[f"{folder}: {other}"] if other else [])


def _unreadable(labels_csv: Path, e: Exception) -> BackendError:
    if isinstance(e, UnicodeDecodeError):
        return BackendError(f"{labels_csv}: not a UTF-8 text file (byte 0x{e.object[e.start]:02x} at position "
                            f"{e.start}); save it as CSV UTF-8 (in Excel: Save As, \"CSV UTF-8\") and start again")
    if isinstance(e, csv.Error):
        return BackendError(f"{labels_csv}: not a readable CSV file ({e})")
    return BackendError(f"{labels_csv}: cannot be read ({getattr(e, 'strerror', None) or e})")


def _labelled_items(folder: Path, labels_csv: Path) -> BatchItems:
    from ..data import DatasetError
    from ..labels_metadata import labels_metadata
    if not folder.is_dir():
        raise BackendError(f"{folder}: folder not found")
    # The folder itself, and its images/ as `evaluate --labels` reads a CSV beside images/: the one
    # holding more of the listed images (the folder chosen, on a tie).
    candidates = [folder] + ([folder / "images"] if (folder / "images").is_dir() else [])
    found = []
    for d in candidates:
        try:
            found.append(load_labelled_folder(labels_csv, d, missing="skip"))
        except DatasetError as e:
            raise BackendError(str(e)) from None
        except (UnicodeDecodeError, csv.Error, OSError) as e:
            raise _unreadable(labels_csv, e) from None
    recs = max(found, key=len)  # max keeps the first of equals
    if not recs:
        listed = recs.absent
        where = f"{folder} or {folder / 'images'}" if len(candidates) > 1 else \
            f"{folder} (which has no images/ folder either)"
        first = ", ".join(listed[:3]) + (", ..." if len(listed) > 3 else "")
        raise BackendError(f"none of the {len(listed)} images listed in {labels_csv} ({first}) is in {where}"
                           + _subfolder_hint(folder, searched=("images",)))
    found = labels_metadata(recs)  # from the rows just read, as `evaluate --labels` does: no second read of the file
    if found is not None and found.left_out:  # the batch view refuses a patient detail it cannot read
        raise BackendError(f"{recs.source} {found.left_out[0]}")
    metas = found.table if found is not None else {}  # {}: a labels CSV without patient columns
    return BatchItems([(r.path, r.dx, r.lesion, _as_dict(metas.get(r.image_id))) for r in recs],
                      missing=recs.absent, notes=recs.warnings + recs.notes)


def _as_dict(meta) -> dict | None:
    return meta.to_dict() if meta is not None and meta.present else None


def run_batch(backend, items, cancel: threading.Event | None = None, progress=None) -> BatchResult:
    res = BatchResult(missing=list(getattr(items, "missing", [])), notes=list(getattr(items, "notes", [])))
    probs, preds, truth, groups, thresholds = [], [], [], [], []
    for i, (path, dx, group, *meta) in enumerate(items):
        if cancel is not None and cancel.is_set():
            res.cancelled = True
            break
        try:
            r = backend.predict(path, explain=False, metadata=meta[0] if meta else None)
        except BackendError as e:
            # the reader's message often starts with the path already: the panel names it once
            res.errors.append({"file": str(path), "error": str(e).removeprefix(f"{path}: ")})
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
