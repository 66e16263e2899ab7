"""`dermalens` command line: split, train, export, evaluate, predict, serve, gui, bench."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .argtypes import positive, whole
from .defaults import DEFAULT_DATA, DEFAULT_GATE_CACHE, DEFAULT_MODEL, DEFAULT_SPLIT_FILE, SHIPPED_BUNDLE


def _port(text: str) -> int:
    return whole(text, 1, 65535, "a port (--port or DERMALENS_PORT) is")


def _workers(text: str) -> int:
    return whole(text, 1, None, "workers (--workers or DERMALENS_WORKERS) is")  # the variable may be the culprit


def _version(text: str) -> str:
    from .export.target import parse_version
    try:
        parse_version(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text.strip()


def parse_size(text: str) -> tuple[int, int]:
    """'256x341' -> (256, 341): height x width, as PreprocessSpec.input_size."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"input size must look like 256x341 (height x width), got {text!r}")
    from .preprocess import PreprocessSpec
    try:
        return PreprocessSpec(input_size=(h, w)).input_size
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def parse_fraction(text: str) -> float:
    from .preprocess import PreprocessSpec
    try:
        return PreprocessSpec(center_fraction=float(text)).center_fraction
    except ValueError:
        raise argparse.ArgumentTypeError(f"center fraction must be a number from 0.5 to 1, got {text!r}") from None


class _SizeAction(argparse.Action):
    """`--input-size 224x300` as everywhere else, or the older two numbers `--input-size 224 300`."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) == 2 and all(v.isdigit() for v in values):
            values = ["x".join(values)]
        if len(values) != 1:
            raise argparse.ArgumentError(self, f"expected HxW such as 224x300, got {' '.join(values)!r}")
        try:
            setattr(namespace, self.dest, parse_size(values[0]))
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentError(self, str(e))


class _Once(argparse.Action):
    """A file or folder flag that may be given once: argparse would keep the last and drop the first unsaid."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest, None) is not None:
            raise argparse.ArgumentError(self, f"given twice ({getattr(namespace, self.dest)!r} and {values!r}); give it once")
        setattr(namespace, self.dest, values)


def cmd_split(a):
    from collections import Counter

    from .data import DatasetError, load_ham10000, make_split, read_split, split_sha256, write_split
    from .data.splits import check_split_out
    out = Path(a.out)
    check_split_out(out, Path(a.data))  # before the data set is read
    records = load_ham10000(a.data)
    assignment = make_split(records, seed=a.seed)
    if out.is_file() and out.stat().st_size and not a.force:
        # Models are trained and tested on this file: silently replacing it with another split would
        # put their training images into the test split and make every reported test figure a lie.
        try:
            old = read_split(out)
        except DatasetError as e:
            raise FileExistsError(f"{out} is a broken split file ({e}); pass --force to replace it, or choose "
                                  "another --out") from None
        moved = sum(old.get(i) != part for i, part in assignment.items()) + len(set(old) - set(assignment))
        if moved:
            raise FileExistsError(
                f"{out} exists and the new split differs from it ({moved} images change split). Models trained on "
                f"it would see their training images in the new test split. Write the new split elsewhere with "
                f"--out, or pass --force to replace it")
    write_split(records, assignment, out)
    counts = Counter(assignment.values())
    lesions = {s: len({r.lesion_id for r in records if assignment[r.image_id] == s}) for s in counts}
    for s in ("train", "val", "test"):
        print(f"{s:5s} {counts[s]:6d} images {lesions[s]:6d} lesions")
    print(f"wrote {a.out} (sha256 {split_sha256(Path(a.out))})")


def cmd_train(a):
    from .train.config import TrainConfig
    from .train.loop import train
    if a.config:
        cfg = TrainConfig.load(a.config)
    elif a.resume and a.out_dir and (Path(a.out_dir) / "config.json").is_file():
        cfg = TrainConfig.load(Path(a.out_dir) / "config.json")  # --resume --out RUN: the run's own settings
    else:
        cfg = TrainConfig()
    for key in ("backbone", "epochs", "batch_size", "lr", "out_dir", "data_root", "split_file",
                "cache_dir", "seed", "threads", "loader_workers", "max_images_per_split", "color_constancy", "patience",
                "init_from", "ema_decay", "teacher", "distill_weight"):
        v = getattr(a, key, None)
        if v is not None:
            setattr(cfg, key, v)
    if a.input_size:
        cfg.input_size = tuple(a.input_size)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, one process speaks for the run
    try:
        out = train(cfg, resume=a.resume)
    except KeyboardInterrupt:
        last = Path(cfg.out_dir) / "checkpoint_last.pt"
        if not main_rank:
            pass
        elif last.is_file():
            print(f"interrupted: {last} holds the last finished epoch; run the same command with --resume "
                  "to continue from it", file=sys.stderr)
        elif not a.resume:
            print("interrupted before the first epoch finished: nothing was saved; run the same command "
                  "(without --resume) to start again", file=sys.stderr)
        raise
    if main_rank:
        print(f"run folder: {out}")


def cmd_export(a):
    from .evaluate.ood_eval import evaluate_gate
    from .export.bundle import export_bundle

    def ood_extra(predictor, test_result):
        return evaluate_gate(predictor, test_result, lesion_pixels=test_result["pixels"])

    runs = a.run + (a.member or [])
    if a.max_images_per_split:
        print(f"warning: --max-images-per-split {a.max_images_per_split}: a quick bundle for smoke tests, fitted and "
              "tested on a few images; not a release", file=sys.stderr)
    card = export_bundle(runs if len(runs) > 1 else runs[0], a.out, a.data, a.split_file, name=a.name,
                         version=a.version, evaluate_test=not a.no_test,
                         max_images_per_split=a.max_images_per_split or 0, ood_extra=ood_extra,
                         input_size=a.input_size, center_fraction=a.center_fraction,
                         use_metadata=not a.no_metadata, test_extras=not a.no_test_extras, changes=a.changes or "",
                         force=a.force)
    _print_summary(card)
    print(f"bundle written to {a.out}")


def _share(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def cmd_external_check(a):
    import json

    from .evaluate.external import check_data, external_check
    from .export.model_card import save_card
    from .inference import Predictor
    check_data(Path(a.data))  # before the bundle is loaded
    predictor = Predictor(a.model, share_cores=False, runtime=a.runtime, precision=a.precision)
    out = external_check(predictor, Path(a.data), a.part)
    run = predictor.runtime_info
    out["runtime"] = {"runtime": run["runtime"], "precision": run["precision"]}
    print(f"external check, {run['runtime']} {run['precision']}, isic_archive part {a.part}:")
    for name, f in [("all", out["all"]), *out["by_source"].items()]:
        print(f"{name:16s} n {f['n']:5d}  macro AUROC {f['macro_auroc']:.3f}  malignant AUROC {f['malignant_auroc']:.3f}  "
              f"sens {f['sensitivity']:.3f} spec {f['specificity']:.3f}  bal.acc {f['balanced_accuracy']:.3f}  "
              f"image-type check passes {_share(f['modality_pass_rate'])}  assessed (every check) "
              f"{_share(f.get('assessed_rate'))}")
    if a.record_in_card:
        card_path = Path(a.model) / "card.json"
        card = json.loads(card_path.read_text())
        card["external"] = {**out, "command": f"dermalens external-check --model <bundle> --part {a.part} --runtime "
                                              f"{run['runtime']} --precision {run['precision']} --record-in-card"}
        save_card(Path(a.model), card)
        print(f"recorded in {card_path} under external")


def cmd_gate_check(a):
    from .evaluate.gate_figures import gate_rates, print_rates, record_in_card
    table, info = gate_rates(Path(a.model), Path(a.data), Path(a.split_file), a.runtime, a.precision)
    print(f"image-type check, {info['runtime']} {info['precision']}, check and held-out parts:")
    print_rates(table)
    if a.record_in_card:
        record_in_card(Path(a.model), table, info)
        print(f"recorded in {Path(a.model) / 'card.json'} under modality.figures_by_precision.{info['precision']}")


def cmd_fit_gate(a):
    from .evaluate.ood_eval import bundle_ood_set
    from .export.model_card import save_card
    from .export.modality_bundle import fit_gate_into
    card = fit_gate_into(Path(a.model), Path(a.data), Path(a.split_file), a.version, Path(a.cache) if a.cache else None,
                         a.changes or "")
    # the existing out-of-distribution set must stay refused with the check in place
    ood = card["modality"]["ood_set"] = bundle_ood_set(a.model, a.data, a.split_file)
    print(f"out-of-distribution set: {ood['flagged']}/{ood['total']} not assessed; missed: {ood['missed'] or 'none'}")
    save_card(Path(a.model), card)
    print(f"modality check written to {a.model} (threshold {card['modality']['threshold']:.4f})")
    if card["preprocessing"].get("trim_dark_margins"):
        print("note: the check is fitted, and the figures above measured, on views with dark margins kept; this bundle "
              "serves them trimmed: `dermalens gate-check --record-in-card` measures it as served")


def _figure(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"  # None: the set cannot define it (metrics.undefined_figures says why)


def _print_summary(card, splits=("validation", "validation_with_metadata", "test", "test_with_metadata",
                                  "test_tta")):
    for split in splits:
        m = card.get("metrics", {}).get(split)
        if m:
            mal = m.get("malignant", {})
            print(f"{split:10s} bal.acc {_figure(m['balanced_accuracy'])}  acc {_figure(m['accuracy'])}  "
                  f"macro AUROC {_figure(m['macro_auroc'])}  ECE {_figure(m['ece'])}  malignant sens "
                  f"{_figure(mal.get('sensitivity'))} spec {_figure(mal.get('specificity'))}")
            ci = m.get("intervals")
            if ci:
                # the 95 % lesion-bootstrap intervals of the same figures, in the same order
                span = {f: "n/a" if ci.get(f) is None else f"{ci[f][0]:.3f}-{ci[f][1]:.3f}"
                        for f in ("balanced_accuracy", "accuracy", "macro_auroc", "ece",
                                  "malignant_sensitivity", "malignant_specificity")}
                print(f"{'  95% CI':10s} bal.acc {span['balanced_accuracy']}  acc {span['accuracy']}  "
                      f"macro AUROC {span['macro_auroc']}  ECE {span['ece']}  malignant sens "
                      f"{span['malignant_sensitivity']} spec {span['malignant_specificity']}")


def _print_subgroups(m):
    for mode, mm in (("image only", m), ("with metadata", m.get("with_metadata") or {})):
        sub = mm.get("subgroups")
        if not sub:
            continue
        print(f"subgroups ({mode}): n, balanced accuracy, malignant sensitivity / specificity / AUROC")
        for grouping, table in sub["groups"].items():
            for name, e in table.items():
                def f(v):
                    return "  n/a" if v is None else f"{v:.3f}"
                print(f"  {grouping:5s} {name:18s} n {e['n']:5d}  bal.acc {f(e['balanced_accuracy'])}  sens "
                      f"{f(e['malignant_sensitivity'])} spec {f(e['malignant_specificity'])} AUROC "
                      f"{f(e['malignant_auroc'])}" + ("  (too small to judge)" if e["too_small"] else ""))


def _labels_metadata(records) -> dict | None:
    """A labels CSV's own patient columns (age, sex, localization or site, as HAM10000_metadata.csv has them) as
    the metadata of its images, said on stderr; None when it has none. A value dermalens does not read is left
    out (not given) with a warning naming its line: the user asked for labels, not for these columns."""
    from .labels_metadata import labels_metadata
    found = labels_metadata(records)
    if found is None:
        return None
    given, bad = found.columns, found.left_out
    print(f"metadata: the {', '.join(given)} column{'s' if len(given) > 1 else ''} of {records.source} "
          "(--no-metadata for image-only figures, --metadata FILE for details from another file)", file=sys.stderr)
    if bad:
        print(f"warning: {records.source}: {len(bad)} patient detail(s) that dermalens does not read are left out "
              f"as not given ({'; '.join(bad[:3])}{'; ...' if len(bad) > 3 else ''})", file=sys.stderr)
    return found.table


def _labels_name(labels: str) -> str:
    """What a labelled set is called in its default report folder: the CSV's own name, or its folder's for a CSV
    named like any other (labels.csv, metadata.csv, HAM10000_metadata.csv) and for a folder."""
    p = Path(labels)
    if p.is_file() and p.stem.lower() not in ("labels", "metadata", "ham10000_metadata"):
        return p.stem
    return (p if p.is_dir() else p.parent).resolve().name or "labels"


def _report_in(out) -> tuple[bool, str | None]:
    """(whether the folder holds a report, the labels file that report was made from: None for a split's or one
    that does not say)."""
    import json
    metrics = Path(out) / "metrics.json"
    if not metrics.is_file():
        return (Path(out) / "report.html").is_file(), None
    try:
        return True, json.loads(metrics.read_text(encoding="utf-8")).get("labels_file")
    except (ValueError, OSError, AttributeError):
        return True, None


def _whose(labels_file: str | None) -> str:
    return labels_file or "another evaluation (a split, or labels it does not name)"


def cmd_evaluate(a):
    from .data import ImagesMissing, load_dataset, load_ham10000, select_split, split_sha256
    from .evaluate.metrics import undefined_figures
    from .evaluate.report import check_report_folder, not_assessed_text, write_report
    from .evaluate.run import evaluate_records
    from .inference import Predictor
    if a.record_in_card and a.labels:
        raise ValueError("--record-in-card records the model's own val or test split; not with --labels")
    if a.labels:
        # these choose a HAM10000 split; with --labels they would be ignored without a word
        given = [f for f, v in (("--split", a.split), ("--split-file", a.split_file), ("--data", a.data),
                                ("--allow-split-mismatch", a.allow_split_mismatch)) if v]
        if given:
            raise ValueError(f"{given[0]} goes with a HAM10000 split; --labels evaluates the images it lists "
                             f"instead: give --labels or {given[0]}, not both")
    a.split, a.split_file, a.data = a.split or "test", a.split_file or str(DEFAULT_SPLIT_FILE), a.data or DEFAULT_DATA
    if a.out:
        check_report_folder(a.out)  # before minutes of predictions, not after
    if a.labels:  # the labels and the metadata are read before the model is loaded: a mistake costs no load
        try:
            records = load_dataset(a.labels, missing="skip" if a.skip_missing else "error")
        except ImagesMissing as e:
            raise ImagesMissing(f"{e}; --skip-missing evaluates the images that are there") from None
        for note in records.notes:
            print(f"note: {note}", file=sys.stderr)
        for warning in records.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        title = f"dermalens evaluation on {a.labels}"
    source = str(Path(records.source).resolve()) if a.labels else None  # metrics.json labels_file
    if a.out:
        held, whose = _report_in(a.out)
        if held and whose != source:
            print(f"warning: --out {a.out} held the report of {_whose(whose)}; it is replaced", file=sys.stderr)
    from .inference.metadata import read_metadata_csv
    metadata = read_metadata_csv(a.metadata) if a.metadata and not a.no_metadata else None
    if a.labels and not (a.metadata or a.no_metadata):
        metadata = _labels_metadata(records)  # its own age, sex, localization columns, if it has them
    if not a.labels:  # the data folder and the split too are read before the model is loaded
        records = select_split(load_ham10000(a.data), a.split, Path(a.split_file))
        if not (a.metadata or a.no_metadata):  # the data set's own, read once the data folder is known good
            metadata = read_metadata_csv(Path(a.data) / "HAM10000_metadata.csv")
    predictor = Predictor(a.model, runtime=a.runtime, precision=a.precision, share_cores=False)
    print(f"runtime: {predictor.runtime_info['runtime']} {predictor.runtime_info['precision']}", file=sys.stderr)
    if not a.labels:
        title = f"dermalens evaluation: HAM10000 {a.split} split ({Path(a.split_file).name})"
        trained_on = predictor.bundle.card.get("data", {}).get("split_sha256")
        split_info = {"name": Path(a.split_file).name, "sha256": split_sha256(Path(a.split_file))}
        split_info["is_the_models_split"] = not (trained_on and split_info["sha256"] != trained_on)
        if not split_info["is_the_models_split"]:
            # Another split file puts some of the model's training images into this "test" split.
            if not a.allow_split_mismatch:
                raise ValueError(
                    f"{a.split_file} is not the split this model was trained and calibrated on (card.json "
                    f"data.split_sha256 {trained_on[:16]}...): its {a.split} images may include the model's "
                    "training images, so the figures would flatter it. Use the model's split file, or pass "
                    "--allow-split-mismatch to evaluate anyway (the report then says so)")
            title += " - NOT the model's own split: figures may include its training images"
    if a.out:
        out = a.out
    elif a.labels:  # named after the set, and never over another set's report
        base = out = Path("reports") / f"{predictor.bundle.card['name']}-labels-{_labels_name(a.labels)}"
        k = 1
        while (held := _report_in(out))[0] and held[1] != source:
            k += 1
            out = Path(f"{base}-{k}")
        if out != base:
            print(f"note: {base} holds the report of {_whose(_report_in(base)[1])}; this one goes to {out} "
                  "(--out chooses the folder)", file=sys.stderr)
    else:
        out = f"reports/{predictor.bundle.card['name']}-{a.split}"
    if not a.out:
        check_report_folder(out)  # the default folder is named after the bundle, so only now
    result = evaluate_records(predictor, records, tta=a.tta, metadata=metadata)
    m = result["metrics"]
    if a.labels:
        m["labels_file"] = source  # whose report this is, for the next run that would write here
    else:
        m["split_file"] = split_info
    paths = write_report(result, predictor, out, title)
    _print_summary({"metrics": {"image only": m, "with metadata": m.get("with_metadata")}},
                   ("image only", "with metadata"))
    for reason in undefined_figures(m):
        print(f"n/a: {reason}")
    refused = not_assessed_text(m)
    if refused:  # the desktop app's batch view scores the assessed ones only: say why they differ
        print(f"not assessed: {refused} (the desktop app's batch figures leave them out)")
    _print_subgroups(m)
    if a.record_in_card:
        from .evaluate.precision import record_in_card
        record_in_card(a.model, a.split, m, predictor.runtime_info)
        print(f"recorded in {Path(a.model) / 'card.json'} under metrics_by_precision.{predictor.runtime_info['precision']}")
    for s in m["skipped"]:
        print(f"skipped {s['path']}: {s['error']}", file=sys.stderr)
    print(f"metrics: {paths['metrics']}\nreport:  {paths['report']}")


def cmd_predict(a):
    if getattr(a, "cluster", None):
        try:
            from .cluster import run_cluster_predict
        except ImportError as e:
            raise ValueError(f"--cluster needs the cluster extra: pip install -e '.[cluster]' ({e})") from None
        return run_cluster_predict(a)
    from .predict import run_predict
    return run_predict(a)


def cmd_serve(a):
    from .serve.server import run_server
    run_server(host=a.host, port=a.port, workers=a.workers, model=a.model)


def cmd_gui(a):
    from .gui.app import run_gui
    run_gui(model=a.model, api=a.api)


def cmd_bench(a):
    from .bench import main as bench_main
    bench_main(["--model", a.model, "--repeat", str(a.repeat)] + (["--images", a.images] if a.images else []))


def _gate_data_arguments(parser, model_help: str) -> None:
    """--model, --data, --split-file of the commands that read the image-type check's five collections."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help=model_help)
    parser.add_argument("--data", default=str(Path(DEFAULT_DATA).parent),
                        help="folder holding ham10000/, isic_archive/, isic2017_sample/, pad_ufes_20/, sd198_clinical/")
    parser.add_argument("--split-file", default=DEFAULT_SPLIT_FILE)


def _runtime_arguments(parser) -> None:
    parser.add_argument("--runtime", choices=["openvino", "onnxruntime"], help="default: openvino when installed")
    parser.add_argument("--precision", choices=["fp32", "bf16"], help="default: bf16 where the CPU has it, else fp32")


def build_parser() -> argparse.ArgumentParser:
    from .data.splits import DEFAULT_SEED
    p = argparse.ArgumentParser(prog="dermalens", description=(
        "HAM10000 skin-lesion classifier (research and education only, not a medical device)."))
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("split", help="write the lesion-grouped train/val/test split file")
    s.add_argument("--data", default=DEFAULT_DATA, help="HAM10000 folder (metadata CSV + images)")
    s.add_argument("--out", default=str(DEFAULT_SPLIT_FILE))
    s.add_argument("--seed", type=int, default=DEFAULT_SEED)
    s.add_argument("--force", action="store_true", help="replace --out even if it holds a different split")
    s.set_defaults(func=cmd_split)

    t = sub.add_parser("train", help="fine-tune a backbone (needs the training install)")
    t.add_argument("--config", help="JSON config file (see configs/)")
    t.add_argument("--backbone", choices=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
                                          "mobilenetv2", "custom_cnn"])
    t.add_argument("--input-size", nargs="+", action=_SizeAction, metavar="HxW",
                   help="network input, height x width: 224x300 (or 224 300)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--patience", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--threads", type=int)
    t.add_argument("--loader-workers", type=int, help="processes that augment batches (0: in the training process)")
    t.add_argument("--color-constancy", choices=["shades_of_gray"])
    t.add_argument("--data", dest="data_root")
    t.add_argument("--split-file")
    t.add_argument("--cache-dir")
    t.add_argument("--out", dest="out_dir", help="run folder (checkpoints, history, curves)")
    t.add_argument("--init-from", help="start from this best.pt (a later stage) instead of ImageNet weights")
    t.add_argument("--ema-decay", type=float, help="validate and keep an EMA of the weights (e.g. 0.998); 0: off")
    t.add_argument("--teacher", help="soft targets to distil (python -m dermalens.train.teacher makes them)")
    t.add_argument("--distill-weight", type=float, help="share of the loss taken by the teacher's targets (0-1)")
    t.add_argument("--max-images-per-split", type=int, help="smoke tests only")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint_last.pt")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="training run(s) -> model bundle (ONNX + card), calibrated on validation")
    e.add_argument("run", nargs="+", help="run folder(s) holding best.pt; several make an ensemble bundle whose "
                                          "first run sets the view and supplies the OOD features and Grad-CAM")
    e.add_argument("--member", action="append", help="another run to add as an ensemble member (repeatable)")
    e.add_argument("--no-metadata", action="store_true", help="do not fit the patient-metadata model")
    e.add_argument("--no-test-extras", action="store_true",
                   help="skip the test split's TTA and Grad-CAM-vs-mask figures (they cost two more passes)")
    e.add_argument("--out", default=DEFAULT_MODEL, help="bundle folder to write: new or empty (default: the "
                                                         "shipped bundle, which needs --force)")
    e.add_argument("--force", action="store_true", help="replace the bundle already in --out (all its files), "
                                                        "also with a --version not newer than its own")
    e.add_argument("--data", default=DEFAULT_DATA)
    e.add_argument("--split-file", default=str(DEFAULT_SPLIT_FILE))
    e.add_argument("--name", default=SHIPPED_BUNDLE)
    e.add_argument("--version", type=_version, default="1.0.0", help="MAJOR.MINOR.PATCH (default 1.0.0)")
    e.add_argument("--no-test", action="store_true", help="skip the test-split evaluation")
    e.add_argument("--input-size", type=parse_size, metavar="HxW",
                   help="serve at this size instead of the trained one (pick it on validation with "
                        "python -m dermalens.evaluate.compare --input-size)")
    e.add_argument("--center-fraction", type=parse_fraction, metavar="F",
                   help="serve the central F (0.5-1) of each frame's width and height (pick it on validation "
                        "with experiments/decide_crop_pct.py)")
    e.add_argument("--changes", metavar="TEXT", help="what this version changes, for the card's changelog")
    e.add_argument("--max-images-per-split", type=positive, help="smoke tests only: a quick bundle, not a release")
    e.set_defaults(func=cmd_export)

    fg = sub.add_parser("fit-gate", help="fit the image-type (modality) check and write it into a bundle "
                                          "(needs the training install and the five collections of docs/data.md in the --data folder)")
    _gate_data_arguments(fg, "bundle folder to add the check to")
    fg.add_argument("--version", type=_version, required=True,
                    help="the bundle's new version, MAJOR.MINOR.PATCH (the check changes what it answers)")
    fg.add_argument("--cache", default=DEFAULT_GATE_CACHE, help="feature cache folder ('' for none; default "
                                                                "%(default)s)")
    fg.add_argument("--changes", metavar="TEXT", help="what this version changes, for the card's changelog")
    fg.set_defaults(func=cmd_fit_gate)

    gc = sub.add_parser("gate-check", help="the image-type check's pass / flag rates at one inference precision "
                                           "(check and held-out parts); --record-in-card writes them beside the fitted ones")
    _gate_data_arguments(gc, "bundle folder")
    _runtime_arguments(gc)
    gc.add_argument("--record-in-card", action="store_true")
    gc.set_defaults(func=cmd_gate_check)

    ex = sub.add_parser("external-check", help="a bundle on dermoscopy from other clinics (isic_archive: nv, mel, "
                                               "bkl), image only; --record-in-card writes it into the model card")
    ex.add_argument("--model", default=DEFAULT_MODEL, help="bundle folder")
    ex.add_argument("--data", default=str(Path(DEFAULT_DATA).parent),
                    help="folder holding isic_archive/ and isic2017_sample/ (whose images are left out)")
    ex.add_argument("--part", default="heldout", choices=["heldout", "all"],
                    help="heldout: only the part the image-type check was not fitted on (default)")
    _runtime_arguments(ex)
    ex.add_argument("--record-in-card", action="store_true")
    ex.set_defaults(func=cmd_external_check)

    ev = sub.add_parser("evaluate", help="metrics + HTML report of a bundle on a split or a labelled folder")
    ev.add_argument("--model", default=DEFAULT_MODEL, help="model bundle folder")
    # no defaults here: cmd_evaluate must see which were given, to refuse them beside --labels
    ev.add_argument("--split", choices=["train", "val", "test"], help="HAM10000 split to evaluate (default test)")
    ev.add_argument("--data", help=f"HAM10000 folder (with --split; default {DEFAULT_DATA})")
    ev.add_argument("--split-file", help=f"split file (with --split; default {DEFAULT_SPLIT_FILE})")
    ev.add_argument("--labels", help="labelled set instead of a split: CSV image_id,dx (images beside it or in "
                                     "images/) or a folder holding labels.csv; not with --split, --data, "
                                     "--split-file, --allow-split-mismatch or --record-in-card")
    ev.add_argument("--skip-missing", action="store_true", help="evaluate the images that exist")
    ev.add_argument("--tta", action="store_true",
                    help="test-time augmentation: each image's flips (and quarter turns for a square input), averaged")
    ev.add_argument("--allow-split-mismatch", action="store_true",
                    help="evaluate on a split file other than the model's own (the report says so)")
    ev.add_argument("--metadata", metavar="FILE.csv",
                    help="patient details (image_id + age, sex, localization or site): subgroup figures, and the "
                         "figures with the metadata fused for a bundle that has a metadata model; default for a "
                         "HAM10000 split: the data set's HAM10000_metadata.csv")
    ev.add_argument("--no-metadata", action="store_true", help="image-only figures, no subgroups")
    ev.add_argument("--out", help="report folder (default reports/NAME-SPLIT, or reports/NAME-labels-SET with "
                                  "--labels: SET is the CSV's name, or its folder's; a folder holding another set's "
                                  "report is kept and a new one numbered -2, -3...)")
    _runtime_arguments(ev)
    ev.add_argument("--record-in-card", action="store_true",
                    help="write these figures into the bundle's card.json under metrics_by_precision")
    ev.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="classify image files, folders or globs")
    pr.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    pr.add_argument("--model", default=DEFAULT_MODEL)
    pr.add_argument("--tta", action="store_true", help="test-time augmentation")
    pr.add_argument("--csv", action=_Once, help="also write the results as CSV")
    pr.add_argument("--json", action=_Once, help="also write the results as JSON")
    pr.add_argument("--explain", action=_Once, metavar="DIR", help="write Grad-CAM overlays (PNG) into DIR")
    pr.add_argument("--recursive", action="store_true", help="look into sub-folders too")
    pr.add_argument("--cluster", metavar="ADDRESS|local:N",
                    help="run on a Dask cluster (tcp://host:8786) or N local worker processes; needs --out "
                         "(inputs may also be manifest CSVs with a path or image_id column, and fsspec URLs)")
    pr.add_argument("--out", metavar="FOLDER", help="with --cluster: folder or URL for the Parquet partitions; "
                                                    "rerunning into it skips the images already done")
    pr.add_argument("--partition-size", type=positive, metavar="N", help="with --cluster: images per task (256)")
    pr.add_argument("--metadata", action=_Once, metavar="FILE.csv",
                    help="patient details per image: image_id plus any of age, sex, localization (or site); "
                         "HAM10000_metadata.csv works")
    pr.add_argument("--age", help="patient's age in years (one image)")
    pr.add_argument("--sex", help="male, female or unknown (one image)")
    pr.add_argument("--site", help="body site, HAM10000 localization vocabulary such as back or face (one image)")
    pr.set_defaults(func=cmd_predict)

    sv = sub.add_parser("serve", help="start the web app and REST API")
    sv.add_argument("--host", default=os.environ.get("DERMALENS_HOST", "127.0.0.1"))
    # string defaults: argparse converts them with `type` only when serve runs, so a bad variable fails here alone
    sv.add_argument("--port", type=_port, default=os.environ.get("DERMALENS_PORT", "8000"),
                    help="default 8000 or DERMALENS_PORT")
    sv.add_argument("--workers", type=_workers, default=os.environ.get("DERMALENS_WORKERS", "1"),
                    help="worker processes, each with its own copy of the model (default 1 or DERMALENS_WORKERS)")
    sv.add_argument("--model", default=DEFAULT_MODEL)
    sv.set_defaults(func=cmd_serve)

    g = sub.add_parser("gui", help="desktop app (Tkinter)")
    g.add_argument("--model", default=DEFAULT_MODEL, help="bundle for local mode")
    g.add_argument("--api", help="remote mode: URL of a running dermalens server, e.g. http://127.0.0.1:8000")
    g.set_defaults(func=cmd_gui)

    b = sub.add_parser("bench", help="latency, throughput and memory benchmarks (prints figures)")
    b.add_argument("--model", default=DEFAULT_MODEL)
    b.add_argument("--images", help="folder of JPEG/PNG images (default: the full-size HAM10000 sample "
                                        "beside the data folder, else the repository's fixtures)")
    b.add_argument("--repeat", type=positive, default=200)
    b.set_defaults(func=cmd_bench)
    return p


def main(argv=None):
    from .data import DatasetError
    from .inference.bundle import BundleError
    from .inference.metadata import MetadataError
    from .preprocess import ImageError
    parser = build_parser()
    a, extra = parser.parse_known_args(argv)
    if extra and a.command == "predict" and not any(x.startswith("-") for x in extra):
        a.inputs += extra  # `predict a.jpg --tta b.jpg`: argparse stops the inputs at the first flag
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return a.func(a) or 0
    except (DatasetError, BundleError, ImageError, MetadataError, ValueError,
            OSError) as e:  # OSError: a full disk, a missing permission; FileNotFoundError and FileExistsError too
        print(f"dermalens {a.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank gets Ctrl-C; one says so for the run
            print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
