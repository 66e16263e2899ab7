"""`dermalens` command line: split, train, export, evaluate, predict, serve, gui, bench."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_DATA = "../shared/data/ham10000"
DEFAULT_BUNDLE = "models/dermalens-lite0"


def cmd_split(a):
    from collections import Counter

    from .data import load_ham10000, make_split, split_sha256, write_split
    records = load_ham10000(a.data)
    assignment = make_split(records, seed=a.seed)
    write_split(records, assignment, Path(a.out))
    counts = Counter(assignment.values())
    lesions = {s: len({r.lesion_id for r in records if assignment[r.image_id] == s}) for s in counts}
    for s in ("train", "val", "test"):
        print(f"{s:5s} {counts[s]:6d} images {lesions[s]:6d} lesions")
    print(f"wrote {a.out} (sha256 {split_sha256(Path(a.out))})")


def cmd_train(a):
    from .train.config import TrainConfig
    from .train.loop import train
    cfg = TrainConfig.load(a.config) if a.config else TrainConfig()
    for key in ("backbone", "epochs", "batch_size", "lr", "out_dir", "data_root", "split_file",
                "cache_dir", "seed", "threads", "max_images_per_split", "color_constancy", "patience"):
        v = getattr(a, key, None)
        if v is not None:
            setattr(cfg, key, v)
    if a.input_size:
        cfg.input_size = tuple(a.input_size)
    out = train(cfg, resume=a.resume)
    print(f"run folder: {out}")


def cmd_export(a):
    from .evaluate.ood_eval import evaluate_gate
    from .export.bundle import export_bundle

    def ood_extra(predictor, test_result):
        return evaluate_gate(predictor, test_result, lesion_pixels=test_result["pixels"])

    card = export_bundle(a.run, a.out, a.data, a.split_file, name=a.name, version=a.version,
                         evaluate_test=not a.no_test, max_images_per_split=a.max_images_per_split or 0,
                         ood_extra=ood_extra)
    _print_summary(card)
    print(f"bundle written to {a.out}")


def _print_summary(card):
    for split in ("validation", "test", "test_tta"):
        m = card.get("metrics", {}).get(split)
        if m:
            mal = m.get("malignant", {})
            print(f"{split:10s} bal.acc {m['balanced_accuracy']:.3f}  acc {m['accuracy']:.3f}  "
                  f"macro AUROC {m['macro_auroc']:.3f}  ECE {m['ece']:.3f}  malignant sens "
                  f"{mal.get('sensitivity', float('nan')):.3f} spec {mal.get('specificity', float('nan')):.3f}")


def build_parser() -> argparse.ArgumentParser:
    from .data.splits import DEFAULT_SEED
    p = argparse.ArgumentParser(prog="dermalens", description=(
        "HAM10000 skin-lesion classifier (research and education only, not a medical device)."))
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("split", help="write the lesion-grouped train/val/test split file")
    s.add_argument("--data", default=DEFAULT_DATA, help="HAM10000 folder (metadata CSV + images)")
    s.add_argument("--out", default="splits/ham10000_split.csv")
    s.add_argument("--seed", type=int, default=DEFAULT_SEED)
    s.set_defaults(func=cmd_split)

    t = sub.add_parser("train", help="fine-tune a backbone (needs the training install)")
    t.add_argument("--config", help="JSON config file (see configs/)")
    t.add_argument("--backbone", choices=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
                                          "mobilenetv2", "custom_cnn"])
    t.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"))
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--patience", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--threads", type=int)
    t.add_argument("--color-constancy", choices=["shades_of_gray"])
    t.add_argument("--data", dest="data_root")
    t.add_argument("--split-file")
    t.add_argument("--cache-dir")
    t.add_argument("--out", dest="out_dir", help="run folder (checkpoints, history, curves)")
    t.add_argument("--max-images-per-split", type=int, help="smoke tests only")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint_last.pt")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="training run -> model bundle (ONNX + card), calibrated on validation")
    e.add_argument("run", help="run folder holding best.pt")
    e.add_argument("--out", default=DEFAULT_BUNDLE, help="bundle folder to write")
    e.add_argument("--data", default=DEFAULT_DATA)
    e.add_argument("--split-file", default="splits/ham10000_split.csv")
    e.add_argument("--name", default="dermalens-lite0")
    e.add_argument("--version", default="1.0.0")
    e.add_argument("--no-test", action="store_true", help="skip the test-split evaluation")
    e.add_argument("--max-images-per-split", type=int, help="smoke tests only")
    e.set_defaults(func=cmd_export)
    return p


def main(argv=None):
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        return a.func(a) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
