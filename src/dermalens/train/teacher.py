"""Soft targets for knowledge distillation: the averaged calibrated probabilities of one or
more model bundles on the training split.

Measured on validation, the mean of two bundles (Lite2 2.0.0 and Lite0 1.1.0) ranks better than
either alone (macro AUROC 0.969 vs 0.961 / 0.958), but the product ships one model. Training a
single student on the ensemble's probabilities (`TrainConfig.teacher`) is how that gain can be
carried into one network. The bundles run through the serving engine (ONNX), so a teacher file
is reproducible from committed bundles alone:

    python -m dermalens.train.teacher --bundle models/a --bundle models/b --out teachers/ab.npz
    python -m dermalens.train.teacher --bundle models/a --bundle models/b --check   # validation AUROCs
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..defaults import DEFAULT_DATA, DEFAULT_SPLIT_FILE
from ..data import load_ham10000, select_split


def bundle_probabilities(bundles: list[str | Path], records, progress: bool = True) -> list[np.ndarray]:
    """Each bundle's calibrated probabilities (N x classes) over the records, single pass."""
    from ..evaluate.run import decode_records
    from ..inference.predictor import Predictor
    out = []
    codes = None
    for path in bundles:
        predictor = Predictor(path, share_cores=False)
        if codes is not None and predictor.bundle.codes != codes:
            raise ValueError(f"{path}: classes {predictor.bundle.codes} differ from the first bundle's {codes}")
        codes = predictor.bundle.codes
        pixels, kept, failed = decode_records(predictor, records, progress, desc=f"decode ({Path(path).name})")
        if failed:
            raise ValueError(f"{len(failed)} training image(s) cannot be read, e.g. {failed[0]['path']}")
        out.append(predictor.forward(pixels)[0])
    return out


def teacher_probabilities(bundles: list[str | Path], records, progress: bool = True) -> np.ndarray:
    """Mean calibrated probability (N x classes) of the bundles over the records."""
    return np.mean(bundle_probabilities(bundles, records, progress), axis=0).astype(np.float32)


def check_on_validation(bundles: list[str], data_root: str, split_file: str) -> list[dict]:
    """Is the average worth distilling? Macro and malignant AUROC on validation of each bundle and
    of their mean (validation only: this chooses teachers, so the test split stays unread)."""
    from ..evaluate.metrics import classification_metrics
    records = select_split(load_ham10000(data_root), "val", Path(split_file))
    y = np.array([r.label for r in records])
    each = bundle_probabilities(bundles, records)
    rows = []
    for name, probs in [*zip(map(str, bundles), each), ("mean", np.mean(each, axis=0))]:
        m = classification_metrics(y, probs)
        rows.append({"model": name, "macro_auroc": round(m["macro_auroc"], 4),
                     "malignant_auroc": round(m["malignant"]["auroc"], 4)})
        print(json.dumps(rows[-1]))
    return rows


def write_teacher(bundles: list[str], data_root: str, split_file: str, out: str | Path) -> Path:
    records = select_split(load_ham10000(data_root), "train", Path(split_file))
    probs = teacher_probabilities(bundles, records)
    cards = [json.loads((Path(b) / "card.json").read_text()) for b in bundles]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, image_id=np.array([r.image_id for r in records]), probs=probs.astype(np.float16),
                        provenance=json.dumps({"bundles": [f"{c['name']} {c['version']}" for c in cards],
                                               "split_file": Path(split_file).name, "split": "train"}))
    return out


def load_teacher(path: str | Path, image_ids: list[str], n_classes: int) -> np.ndarray:
    """Teacher probabilities in the order of `image_ids`; every id must be in the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher: {path} not found (make it with `python -m dermalens.train.teacher`)")
    data = np.load(path)
    row = {i: k for k, i in enumerate(data["image_id"].tolist())}
    missing = [i for i in image_ids if i not in row]
    if missing:
        raise ValueError(f"teacher {path}: no probabilities for {len(missing)} training image(s), e.g. {missing[0]} "
                         "(was it made on another split file?)")
    probs = data["probs"].astype(np.float32)[[row[i] for i in image_ids]]
    if probs.shape[1] != n_classes:
        raise ValueError(f"teacher {path}: {probs.shape[1]} classes, the model has {n_classes}")
    return probs / probs.sum(axis=1, keepdims=True)  # float16 storage: renormalise


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m dermalens.train.teacher", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", action="append", required=True, help="a model bundle folder (repeat to average)")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--split-file", default=str(DEFAULT_SPLIT_FILE))
    ap.add_argument("--out", help="teacher file to write")
    ap.add_argument("--check", action="store_true",
                    help="print each bundle's and the mean's validation AUROCs instead of writing a file")
    a = ap.parse_args(argv)
    if not a.check and not a.out:
        ap.error("--out is required (or --check)")
    from ..data import DatasetError
    from ..inference import BundleError, load_bundle
    try:
        for b in a.bundle:  # every bundle before minutes go into the first
            load_bundle(b)
        if a.check:
            check_on_validation(a.bundle, a.data, a.split_file)
        else:
            print(f"wrote {write_teacher(a.bundle, a.data, a.split_file, a.out)}")
    except (BundleError, DatasetError, FileNotFoundError) as e:
        ap.error(str(e))


if __name__ == "__main__":
    main()
