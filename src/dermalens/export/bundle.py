"""`dermalens export`: one or more training runs -> model bundle.

Steps, all on the validation split except the final report (every rule lives in export.calibrate):
1. ONNX export of each run's best.pt (a member), checked against PyTorch on real images (max |diff| <= 1e-4).
2. Temperatures (per member, then the ensemble's) on validation; the decision rule; the malignancy
   threshold with a margin (lesion-bootstrap lower bound of validation sensitivity >= 0.90); the
   high-risk threshold for specificity >= 0.95.
3. Patient metadata model fitted on the training split; its weight and its own operating point on validation.
4. OOD gate fitted on the features member's training-split features; its threshold passes >= 95 % of
   validation images on average over the classes.
5. The finished bundle is evaluated through the serving engine (ONNX, no PyTorch) on the test split,
   with and without metadata from one pass, and those numbers go into card.json and MODEL_CARD.md.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import time
from pathlib import Path

import numpy as np

from .. import DISCLAIMER, __version__
from ..data import balanced_subset, load_ham10000, select_split, split_sha256
from ..data.datasets import HAM_METADATA
from ..evaluate.explain_eval import gradcam_mask_scores
from ..evaluate.metrics import classification_metrics
from ..evaluate.run import decode_records, evaluate_records
from ..inference.bundle import CARD_FORMAT, default_classes_for_card, load_bundle
from ..inference.metadata import MetadataError, MetadataModel, PatientMetadata, fuse, read_metadata_csv
from ..inference.layout import LAYOUT_RULES
from ..inference.ood import EXPOSURE_RULES, MIN_SHORT_SIDE, fit_gate, mahalanobis_score
from ..inference.predictor import Predictor
from ..inference.softmax import decide, softmax
from ..preprocess import PreprocessSpec
from ..train.models import BACKBONES, checkpoint_path, model_from_checkpoint
from ..train.stages import stage_record, stages_before
from . import calibrate
from .metadata_fit import MODEL_TEXT, fit_metadata_model, save_metadata_model, vocabulary
from .model_card import write_model_card
from .onnx_export import export_onnx, max_abs_difference
from .target import check_target, swap_in
from .upgrade_card import finish_export

ONNX_TOLERANCE = 1e-4


def _training_time(ck: dict) -> dict:
    """This run's training time plus that of every earlier stage it started from (`init_from`): recorded in the
    checkpoint by `dermalens train` (so the earlier files may have moved since); checkpoints from before that
    record follow the init_from chain."""
    chain, missing = stages_before(ck)
    if missing:
        raise FileNotFoundError(
            f"init_from checkpoint {missing} (the earlier stage {ck['config']['out_dir']} started from) is "
            "missing: the card reports every stage's training time. Put that file back"
            + (" or run export from the folder that run was trained in" if not Path(missing).is_absolute() else "")
            + " (runs trained since dermalens records the earlier stages need no earlier file)")
    stages = [*chain, stage_record(ck)]
    return {"seconds": round(sum(s["seconds"] for s in stages), 1), "hardware": ck["hardware"], "stages": stages}


def export_bundle(run_dir, out_dir: str | Path, data_root: str | Path,
                  split_file: str | Path, name: str = "dermalens", version: str = "1.0.0",
                  evaluate_test: bool = True, max_images_per_split: int = 0, ood_extra=None,
                  input_size: tuple[int, int] | None = None, center_fraction: float | None = None,
                  use_metadata: bool = True, test_extras: bool = True, changes: str = "", force: bool = False) -> dict:
    """`input_size` serves the network at another size than it was trained at (chosen on validation
    with `python -m dermalens.evaluate.compare --input-size`); `center_fraction` serves the central part
    of each frame (chosen on validation with experiments/decide_crop_pct.py); everything after step 1
    is fitted with them. `run_dir` may be a list of runs: an ensemble bundle whose first run sets the
    view (and supplies the OOD features and Grad-CAM), the others seeing that view at their trained size.
    `use_metadata`: fit the patient-metadata model when the data set's metadata CSV gives age/sex/site.
    `test_extras`: also measure test-time augmentation and Grad-CAM against masks on the test split.

    `out_dir` must be new or empty; a bundle already there is refused unless `force` (export.target).
    The bundle is built in a hidden sibling folder that replaces `out_dir` whole only when complete:
    an export that fails or is interrupted after minutes leaves the bundle already there (often the
    one being served) as it was, and a finished one leaves no file of the old bundle behind."""
    final = Path(out_dir).resolve()  # a link: the folder it names; '.': a folder with a name, beside which to stage
    runs = list(run_dir) if isinstance(run_dir, (list, tuple)) else [run_dir]
    ck_paths = [checkpoint_path(r) for r in runs]  # run folders (their best.pt) or checkpoint files
    check_target(final, version, force)
    staging = final.parent / f".{final.name}.export-partial"
    shutil.rmtree(staging, ignore_errors=True)  # left by an export that was killed
    staging.mkdir(parents=True)
    try:
        card = _export_into(ck_paths, staging, data_root, split_file, name, version, evaluate_test,
                            max_images_per_split, ood_extra, input_size, center_fraction, use_metadata,
                            test_extras)
        # the card in its current form (timm terms, structured outputs, changelog carried from the bundle replaced)
        card = finish_export(card, staging, _previous_card(final), changes)
        swap_in(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return card


def _previous_card(final: Path) -> dict | None:
    try:
        return json.loads((final / "card.json").read_text())
    except (OSError, ValueError):
        return None


def _load_member(ck_path: Path, split_file: Path):
    model, ck = model_from_checkpoint(ck_path)
    trained_on = ck.get("split_sha256")  # checkpoints from before this check lack it
    if trained_on and trained_on != split_sha256(split_file):
        raise ValueError(f"{ck_path} was trained on another split than {split_file} (sha256 {trained_on[:16]}... "
                         "in the checkpoint): calibrating and testing on this one could put training images into "
                         "validation and test. Pass the split file it was trained with (--split-file)")
    spec = PreprocessSpec.from_dict(ck["preprocess"])
    if "match_orientation" not in ck["preprocess"]:
        # Checkpoints from before the setting: their recipe trained on every rotation too.
        spec = dataclasses.replace(spec, match_orientation=True)
    return model, ck, spec


def _member_name(ck_path: Path, taken: set) -> str:
    base = ck_path.parent.name if ck_path.name.endswith(".pt") else ck_path.stem
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


def _member_outputs(member, pixels, batch_size=32, features=False):
    """(logits, pooled features or None) of one member on the bundle's uint8 views."""
    logits, pooled = [], []
    for i in range(0, len(pixels), batch_size):
        lo, f = member.run(pixels[i:i + batch_size])
        logits.append(lo)
        if features:
            pooled.append(f.mean(axis=(2, 3)))
    return np.concatenate(logits), (np.concatenate(pooled) if features else None)


def _ham_metadata(data_root) -> dict | None:
    """image_id -> PatientMetadata from the data set's HAM10000_metadata.csv, when it has the columns."""
    path = Path(data_root) / HAM_METADATA
    try:
        return read_metadata_csv(path)
    except MetadataError:
        return None


def _export_into(ck_paths: list[Path], out: Path, data_root, split_file, name, version, evaluate_test,
                 max_images_per_split, ood_extra, input_size, center_fraction, use_metadata=True,
                 test_extras=True) -> dict:
    split_file = Path(split_file)
    loaded = [_load_member(p, split_file) for p in ck_paths]
    # the data and the split are read before the ONNX export: a wrong --data costs a second, not minutes
    records = load_ham10000(data_root)
    parts = {s: select_split(records, s, split_file) for s in ("train", "val", "test")}
    model, ck, spec = loaded[0]  # the first run sets the bundle's view and is the features member
    trained_size = list(spec.input_size)
    if input_size is not None:
        spec = dataclasses.replace(spec, input_size=tuple(input_size))
    if center_fraction is not None:
        spec = dataclasses.replace(spec, center_fraction=float(center_fraction))
    single = len(loaded) == 1

    # 1. ONNX + head per member
    entries, names = [], set()
    for (m_model, m_ck, m_spec), ck_path in zip(loaded, ck_paths):
        if (m_spec.color_constancy, m_spec.gray_equalize) != (spec.color_constancy, spec.gray_equalize):
            raise ValueError(f"{ck_path}: its colour preprocessing differs from the first run's; the members of "
                             "a bundle share one preprocessed view")
        member_name = _member_name(ck_path, names)
        names.add(member_name)
        size = spec.input_size if m_model is model else m_spec.input_size  # the others at their trained size
        graph, head_file = ("model.onnx", "head.npz") if single else (f"{member_name}.onnx", f"{member_name}.head.npz")
        export_onnx(m_model, dataclasses.replace(m_spec, input_size=tuple(size)), out / graph)
        head = m_model.get_classifier() if hasattr(m_model, "get_classifier") else m_model.classifier
        np.savez(out / head_file, weight=head.weight.detach().numpy(), bias=head.bias.detach().numpy())
        cfg = m_ck["config"]
        entries.append({"name": member_name, "graph": graph, "head": head_file, "input_size": list(size),
                        "mean": list(m_spec.mean), "std": list(m_spec.std), "temperature": 1.0,
                        "trained_input_size": list(m_spec.input_size), "checkpoint": str(ck_path),
                        "backbone": {"name": cfg["backbone"], "weights": BACKBONES[cfg["backbone"]].weights_package,
                                     "pretrained": cfg["pretrained"]},
                        "best_epoch": m_ck["epoch"] + 1, "training": _training_time(m_ck)})

    if max_images_per_split:
        parts = {s: balanced_subset(r, max_images_per_split) for s, r in parts.items()}

    cfg = ck["config"]
    card = {
        "format": CARD_FORMAT, "name": name, "version": version, "dermalens_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "classes": default_classes_for_card(),
        "malignant_definition": "P(malignant) = sum of the calibrated probabilities of mel, bcc and akiec",
        "preprocessing": spec.to_dict(),
        "input": {"name": "image", "shape": ["N", 3, *spec.input_size], "dtype": "float32",
                  "layout": "NCHW, RGB, normalised by preprocessing.mean/std after scaling to [0, 1]"},
        "outputs": {"logits": ["N", len(ck["classes"])], "features": "N x C x h x w (last feature maps)"},
        "temperature": 1.0, "thresholds": {"malignant": 0.5},
        "backbone": entries[0]["backbone"],
        "recipe": cfg, "best_epoch": ck["epoch"] + 1,
        "resolution": {"trained": trained_size, "served": list(spec.input_size),
                       "rule": "served size = trained size" if trained_size == list(spec.input_size) else
                       "served size chosen for validation macro AUROC (python -m dermalens.evaluate.compare "
                       "--input-size); temperature and thresholds are fitted at the served size"},
        "training": entries[0]["training"] if single else
        {"seconds": round(sum(e["training"]["seconds"] for e in entries), 1),
         "hardware": "; ".join(sorted({e["training"]["hardware"] for e in entries})),
         "stages": [s for e in entries for s in e["training"]["stages"]]},
        "data": {"name": "HAM10000", "split_file": split_file.name, "split_sha256": split_sha256(split_file),
                 "counts": {s: len(r) for s, r in parts.items()}},
        "disclaimer": DISCLAIMER,
    }
    if not single:
        card["members"] = [{k: v for k, v in e.items() if k != "training"} for e in entries]
        card["ensemble"] = {
            "features_member": entries[0]["name"],
            "combine": "plain mean of the members' calibrated probabilities (fixed in advance), then the bundle's "
                       "temperature on the log of that mean",
            "view": "every member sees the bundle's one preprocessed view (preprocessing), resized to its own "
                    "input size; the features member supplies the out-of-distribution features and Grad-CAM"}
    (out / "card.json").write_text(json.dumps(card, indent=2))
    bundle = load_bundle(out, precision="fp32", share_cores=False)  # headline figures at fp32 on every CPU (card: metrics.precision)
    loader = Predictor(bundle)  # decodes exactly as serving will; its thresholds are placeholders yet

    # equivalence on real images, member by member
    val_px, val_recs, _ = decode_records(loader, parts["val"], desc="decode val")
    diffs = []
    for (m_model, _, _), entry, member in zip(loaded, entries, bundle.members):  # the same order
        diffs.append(max_abs_difference(m_model, out / entry["graph"], member.normalize(val_px[:64])))
    diff = max(diffs)
    if diff > ONNX_TOLERANCE:
        raise RuntimeError(f"ONNX and PyTorch disagree: max |logit diff| {diff:.2e} > {ONNX_TOLERANCE}")
    card["export_check"] = {"max_abs_logit_diff": diff, "images": int(min(64, len(val_px))),
                            "tolerance": ONNX_TOLERANCE}
    if not single:
        card["export_check"]["by_member"] = {e["name"]: d for e, d in zip(entries, diffs)}

    # 2. calibration and operating points on validation (export.calibrate holds every rule)
    codes = [c["code"] for c in card["classes"]]
    malignant_codes = [c["code"] for c in card["classes"] if c["malignant"]]
    y_val = np.array([codes.index(r.dx) for r in val_recs])
    groups_val = [r.lesion for r in val_recs]
    main = bundle.features_member
    member_probs, val_pooled, raw_logits = [], None, None
    for member, entry in zip(bundle.members, entries):
        logits, pooled = _member_outputs(member, val_px, features=member is main)
        if member is main:
            val_pooled, raw_logits = pooled, logits
        if not single:  # a single network keeps T_m = 1: the bundle's temperature is its temperature
            entry["temperature"] = calibrate.member_temperature(logits, y_val)
        member_probs.append(softmax(logits, entry["temperature"]))
    mean_val = np.mean(member_probs, axis=0)
    T = calibrate.ensemble_temperature(mean_val, y_val)
    val_probs = softmax(np.log(np.maximum(mean_val, 1e-12)), T)
    counts = np.bincount([codes.index(r.dx) for r in parts["train"]], minlength=len(codes)).astype(float)
    image_op = calibrate.operating_point(val_probs, y_val, groups_val, codes, malignant_codes, counts)

    # 3. patient metadata, fitted on the training split; its weight and operating point on validation
    metas = _ham_metadata(data_root) if use_metadata else None
    meta_card, val_fused, val_used = None, None, None
    if metas is not None:
        train_metas = [metas.get(r.image_id) or PatientMetadata() for r in parts["train"]]
        arrays = fit_metadata_model(train_metas, np.array([codes.index(r.dx) for r in parts["train"]]), len(codes))
        save_metadata_model(arrays, out / "metadata.npz")
        model_m = MetadataModel(arrays, 0.0)
        val_metas = [metas.get(r.image_id) for r in val_recs]
        ratio = model_m.log_ratio(val_metas, len(codes))
        w = calibrate.metadata_weight(val_probs, ratio, y_val)
        val_fused = fuse(val_probs, ratio, w)
        val_used = np.array([m is not None and bool(m.present) for m in val_metas])
        meta_op = calibrate.operating_point(val_fused, y_val, groups_val, codes, malignant_codes, counts)
        meta_card = {"file": "metadata.npz", "model": MODEL_TEXT, **vocabulary(), "weight": w,
                     "weight_rule": calibrate.RULES["metadata_weight"],
                     "training_rows": {k.removeprefix("rows_"): int(v) for k, v in arrays.items()
                                       if k.startswith("rows_")},
                     "source": f"{HAM_METADATA} columns age, sex, localization", **meta_op}

    # 4. OOD gate, on the features member's pooled training features
    train_px, train_recs, _ = decode_records(loader, parts["train"], desc="decode train")
    _, train_pooled = _member_outputs(main, train_px, features=True)
    del train_px
    gate = fit_gate(train_pooled, np.array([codes.index(r.dx) for r in train_recs]), len(codes))
    t_ood = calibrate.ood_threshold(mahalanobis_score(val_pooled, gate), y_val)
    np.savez(out / "ood.npz", **gate)

    card["temperature"] = T
    card["decision_bias"] = image_op["decision_bias"]
    card["prior_correction"] = image_op["prior_correction"]
    card["thresholds"] = {**image_op["thresholds"], "ood": t_ood}
    card["threshold_rules"] = {k: calibrate.RULES[k] for k in ("malignant", "high_risk", "ood")}
    card["operating_point"] = {"malignant_margin": image_op["malignant_margin"]}
    card["calibration_rules"] = {k: calibrate.RULES[k] for k in ("temperature",)}
    if not single:
        card["members"] = [{k: v for k, v in e.items() if k != "training"} for e in entries]
    rules = dict(EXPOSURE_RULES)
    if spec.gray_equalize:  # the preprocessing itself makes every image grey; colour cannot be asked for
        rules.pop("min_chroma")
    card["ood"] = {"method": "min class-conditional Mahalanobis distance of pooled features, shared "
                             "Ledoit-Wolf covariance fitted on the training split", "exposure_rules": rules,
                   "min_short_side": MIN_SHORT_SIDE, "layout_rules": LAYOUT_RULES, "features_member": main.name}
    bias = np.asarray(image_op["decision_bias"], np.float32)
    card["metrics"] = {"split_file": split_file.name, "split_sha256": card["data"]["split_sha256"],
                       "precision": "fp32", "runtime": bundle.model.runtime,
                       "validation": classification_metrics(y_val, val_probs, codes, image_op["thresholds"]["malignant"],
                                                            pred=decide(val_probs, bias), groups=groups_val)}
    card["metrics"]["validation"]["uncalibrated_ece"] = classification_metrics(
        y_val, softmax(raw_logits, 1.0) if single else mean_val, codes)["ece"]
    if meta_card is not None:
        card["metadata"] = meta_card
        t_row = np.where(val_used, meta_card["thresholds"]["malignant"], image_op["thresholds"]["malignant"])
        pred = np.where(val_used, decide(val_fused, np.asarray(meta_card["decision_bias"], np.float32)),
                        decide(val_fused, bias))
        card["metrics"]["validation_with_metadata"] = {
            **classification_metrics(y_val, val_fused, codes, t_row, pred=pred, groups=groups_val),
            "images_with_metadata": int(val_used.sum())}
    (out / "card.json").write_text(json.dumps(card, indent=2))

    # 5. test, through the serving engine only; read once, with and without metadata from one pass
    if evaluate_test:
        predictor = Predictor(out, share_cores=False)
        t0 = time.time()
        res = evaluate_records(predictor, parts["test"], metadata=metas)
        card["metrics"]["test"] = res["metrics"]
        with_meta = card["metrics"]["test"].pop("with_metadata", None)
        if with_meta is not None:
            card["metrics"]["test_with_metadata"] = with_meta
        if test_extras:
            card["metrics"]["test_tta"] = evaluate_records(predictor, parts["test"], tta=True)["metrics"]
            mask_dir = Path(data_root) / "masks"
            if mask_dir.is_dir():
                card["explanations"] = {"split": "test", "member": main.name,
                                        **gradcam_mask_scores(predictor, parts["test"], mask_dir)}
        if ood_extra is not None:
            card["ood"]["evaluation"] = ood_extra(predictor, res)
        card["metrics"]["test_seconds"] = round(time.time() - t0, 1)
        (out / "card.json").write_text(json.dumps(card, indent=2))
    write_model_card(card, out / "MODEL_CARD.md")
    for f in ("history.csv", "curves.png"):
        if (ck_paths[0].parent / f).is_file():
            (out / f).write_bytes((ck_paths[0].parent / f).read_bytes())
    return card
