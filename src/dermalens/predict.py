"""`dermalens predict`: files, folders or globs -> a table, CSV/JSON, Grad-CAM overlays.

An unreadable file is reported and skipped; the others are still predicted. So is an input that gives no
file at all (a pattern that matched nothing, a folder without images, a name that does not exist); when no
input gives a file that exists, predict stops before the model is loaded. Exit status: 0 when every input was
predicted, 1 when some were skipped, 2 when none could be.
"""
from __future__ import annotations

import csv
import glob
import json
import os
import sys
import unicodedata
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from .data.datasets import IMAGE_EXTENSIONS
from .paths import broken_link, cannot_write_in, nearest_existing
from .preprocess import ImageError
from .whole_file import replaced_whole


# Image files a folder holds that dermalens does not pick up, said rather than passed over in silence.
OTHER_IMAGE_SUFFIXES = (".jp2", ".svg", ".dng", ".psd")


def left_out_note(files) -> str | None:
    """'left out 2 image file(s) of a type not read from a folder (.dng: 2); ...' for a folder's files of image
    types dermalens does not read (OTHER_IMAGE_SUFFIXES); None when there are none."""
    other = Counter(f.suffix.lower() for f in files if f.suffix.lower() in OTHER_IMAGE_SUFFIXES)
    if not other:
        return None
    return (f"left out {sum(other.values())} image file(s) of a type not read from a folder ("
            + ", ".join(f"{k}: {n}" for k, n in sorted(other.items()))
            + "); save them as JPEG or PNG, or name one on its own to try it")


def expand_inputs(inputs: list[str], recursive: bool = False) -> tuple[list[Path], list[str]]:
    """(image paths in a stable order, problems such as patterns that matched nothing)."""
    paths, problems, _ = gather_inputs(inputs, recursive)
    return paths, problems


def gather_inputs(inputs: list[str], recursive: bool = False) -> tuple[list[Path], list[str], list[dict]]:
    """expand_inputs' (paths, problems) and, among the problems, the inputs that gave no file at all (a pattern
    that matched nothing, a folder without images) as error entries {file: the input as given, error}."""
    paths, problems, unmatched = [], [], []
    for item in inputs:
        p = Path(item)
        if _is_dir(p):
            # a broken link named like an image is kept, so it is reported as skipped when read, not dropped unseen
            files = [f for f in (p.rglob("*") if recursive else p.iterdir()) if f.is_file() or broken_link(f)]
            found = sorted(f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS)
            other = left_out_note(files)
            if other:  # a camera's raw .dng files must not vanish from a folder's results without a word
                problems.append(f"{item}: {other}")
            overlays = [f for f in found if f.name.endswith(OVERLAY_SUFFIX)]
            if overlays:  # a heat-map over a lesion still looks like dermoscopy to the image-type check
                problems.append(f"{item}: left out {len(overlays)} Grad-CAM overlay(s) written by --explain "
                                f"(*{OVERLAY_SUFFIX}); name such a file on its own to predict it anyway")
                found = [f for f in found if f not in overlays]
            if not found:
                deeper = not recursive and any(f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS for f in p.rglob("*"))
                problems.append(f"{item}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})"
                                + ("; its sub-folders do: add --recursive" if deeper else ""))
                unmatched.append({"file": item, "error": problems[-1]})
            paths += found
        elif any(ch in item for ch in "*?[") and not _is_file(p):  # scan[1].jpg that exists is that file
            found = sorted(Path(f) for f in glob.glob(item, recursive=True) if Path(f).is_file())
            if not found:
                problems.append(f"{item}: pattern matched no file")
                unmatched.append({"file": item, "error": problems[-1]})
            paths += found
        else:
            paths.append(p)  # a missing file is reported when it is read
    seen, unique = set(), []
    for p in paths:
        key = p.resolve()  # in/a.jpg, /abs/in/a.jpg and a folder + a glob over it are one image
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique, problems, unmatched


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except OSError:  # too long a name, as for _is_dir
        return False


def nothing_to_predict(paths: list[Path], unmatched: list[dict]) -> str | None:
    """Why there is nothing to predict, when no input names a file that exists (said before the model is
    loaded, as a ValueError's message); None when some do."""
    if any(_exists(p) for p in paths):
        return None
    why = [e["error"] for e in unmatched] + [f"{p}: no such file or folder" for p in paths]
    return ("nothing to predict: " + "; ".join(why)
            + " (check the names; a shell passes a pattern that matched nothing on as it is)")


def _is_dir(p: Path) -> bool:
    try:
        return p.is_dir()
    except OSError:  # a name too long for the system: reported as that file's error when it is read
        return False


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except OSError:  # too long a name, as for _is_dir
        return False


def prediction_row(path: Path, p) -> dict:
    """One output row. An image that is not assessed keeps every column, but its diagnostic ones are empty (None)."""
    row = {"file": str(path), "prediction": p.codes[p.top], "name": p.names[p.top],
           "confidence": round(float(p.probabilities[p.top]), 4),
           "malignancy": round(p.malignancy, 4), "malignant": p.malignancy >= p.malignant_threshold,
           "risk": p.risk, "in_distribution": p.in_distribution,
           "not_assessed_because": "; ".join(p.ood_reasons), "not_assessed_codes": ";".join(r.code for r in p.ood_reasons),
           "dermoscopic_probability": p.dermoscopic, "metadata_used": p.metadata_used}
    row.update({f"p_{c}": round(float(v), 4) for c, v in zip(p.codes, p.probabilities)})
    if not p.in_distribution:
        row.update({k: None for k in row if k in DIAGNOSTIC or k.startswith("p_")})
    return row


DIAGNOSTIC = ("prediction", "name", "confidence", "malignancy", "malignant")


def result_columns(codes) -> list[str]:
    """The columns prediction_row gives a model with these classes, plus --explain's: taken from a row
    of a blank prediction, so this list cannot drift from the rows."""
    from types import SimpleNamespace
    blank = SimpleNamespace(codes=list(codes), names=list(codes), top=0, probabilities=[0.0] * len(codes),
                            malignancy=0.0, malignant_threshold=0.5, risk="", in_distribution=True,
                            ood_reasons=[], dermoscopic=None, metadata_used=False)
    return [*prediction_row("", blank), "gradcam"]


def predict_files(predictor, paths, tta: bool = False, explain_dir: Path | None = None,
                  metadata: list[dict] | None = None, read=None, progress: bool = False,
                  patient: list | None = None) -> tuple[list[dict], list[dict]]:
    """Image paths -> (result rows, errors {file, error}): the one place `dermalens predict` turns
    files into rows, in-process and on each Dask worker (dermalens.cluster).

    `metadata`: one dict per path (extra manifest columns such as age, sex, site), passed through
    into that path's row or error without overwriting a result column. `read`: path -> what the
    predictor reads (bytes fetched through fsspec for a URL); it raises ImageError when it cannot.
    `patient`: one PatientMetadata (or None) per path, for a bundle with a metadata model."""
    from .inference.pipeline import predict_stream
    rows, errors = [], []
    overlays = overlay_names(paths, explain_dir) if explain_dir is not None else {}
    stream = predict_stream(predictor, paths, tta=tta, explain=explain_dir is not None,
                            progress=progress and len(paths) >= 5, read=read, patient=patient)
    for i, (path, p) in enumerate(stream):  # decoding in parallel with inference, results in input order
        extra = metadata[i] if metadata else {}
        if isinstance(p, ImageError):
            msg = str(p) if str(path) in str(p) else f"{path}: {p}"
            errors.append(_with_extra({"file": str(path), "error": msg}, extra))
            if progress:
                tqdm.write(f"skipped {msg}", file=sys.stderr)
            continue
        row = prediction_row(path, p)
        if explain_dir is not None:  # no heat-map of an image that is not assessed, as in the API and web page
            overlay = explain_dir / overlays[path] if p.in_distribution else None
            if overlay is not None:
                try:
                    overlay.write_bytes(p.overlay_png())
                except OSError as e:  # a full disk: this heat-map is lost, not the run's table, CSV and JSON
                    print(f"warning: {overlay}: heat-map not written ({e.strerror or e})", file=sys.stderr)
                    overlay = None
            row["gradcam"] = None if overlay is None else str(overlay)
        rows.append(_with_extra(row, extra))
    return rows, errors


OVERLAY_SUFFIX = "_gradcam.png"


def overlay_names(paths: list[Path], explain_dir: Path | None = None) -> dict:
    """path -> its Grad-CAM overlay's file name: `<stem>_gradcam.png`, numbered where inputs share a stem
    (x.jpg, x.png, other/x.jpg), so no overlay replaces another, nor an input image in `explain_dir`."""
    here = explain_dir.resolve() if explain_dir is not None else None
    taken = {Path(p).name for p in paths if here is not None and Path(p).resolve().parent == here}
    names = {}
    for p in paths:
        stem, n = Path(p).stem, 1
        name = _within_name_limit(stem, OVERLAY_SUFFIX)
        while name in taken:
            n += 1
            name = _within_name_limit(stem, f"_{n}{OVERLAY_SUFFIX}")
        taken.add(name)
        names[p] = name
    return names


NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems


def _within_name_limit(stem: str, tail: str) -> str:
    """stem + tail, the stem cut short where a legal input name plus the overlay suffix would be too long to write."""
    while len(os.fsencode(stem + tail)) > NAME_MAX and stem:
        stem = stem[:-1]
    return stem + tail


def check_outputs(inputs: list[str], paths: list[Path], csv_path: str | None, json_path: str | None,
                  explain: str | None, recursive: bool = False, metadata: str | None = None) -> None:
    """Refuse, before any image is read, output paths that would fail after the work or destroy an input:
    ValueError saying which and why."""
    def same(a: Path, b: Path) -> bool:
        return a.resolve() == b.resolve()

    outs = [(flag, Path(v)) for flag, v in (("--csv", csv_path), ("--json", json_path)) if v]
    resolved_inputs = {p.resolve() for p in paths} if outs else set()
    for flag, out in outs:
        if out.is_dir():
            raise ValueError(f"{flag} {out}: is a folder; give a file name, such as {out / ('results' + flag[1:].replace('-', '.'))}")
        if not out.parent.is_dir():
            raise ValueError(f"{flag} {out}: folder {out.parent} does not exist")
        if out.resolve() in resolved_inputs:
            raise ValueError(f"{flag} {out}: is one of the input images; writing there would replace it")
        if metadata and same(out, Path(metadata)):
            raise ValueError(f"{flag} {out}: is the --metadata file; writing there would replace it")
        if explain and same(out, Path(explain)):
            raise ValueError(f"{flag} {out}: is also the --explain folder; give them different names")
        _check_writable(flag, out, out.parent)
    if len(outs) == 2 and same(outs[0][1], outs[1][1]):
        raise ValueError(f"--csv and --json name the same file ({csv_path}); one would replace the other")
    if explain:
        folder = Path(explain)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"--explain {folder}: is a file; give a folder for the overlays")
        existing = nearest_existing(folder)  # mkdir starts there
        if not existing.is_dir():
            raise ValueError(f"--explain {folder}: {existing} is a file, so the folder cannot be made")
        _check_writable("--explain", folder, existing)
        for item in inputs:
            src = Path(item)
            if _is_dir(src) and (same(folder, src) or (recursive and folder.resolve().is_relative_to(src.resolve()))):
                raise ValueError(f"--explain {folder}: is among the input folders, so its overlays would be read as "
                                 "images next time; give another folder")


def _check_writable(flag: str, given: Path, folder: Path) -> None:
    why = cannot_write_in(folder)
    if why:
        raise ValueError(f"{flag} {given}: folder {folder} cannot be written ({why})")


def _with_extra(row: dict, extra: dict) -> dict:
    row.update({k: v for k, v in extra.items() if k not in row})
    return row


def patient_metadata(a, paths: list[Path]):
    """path -> PatientMetadata or None, from --metadata FILE.csv (by image_id = file name or stem) and/or
    --age/--sex/--site (one image only: the same patient details for several images would be a guess)."""
    from .inference.metadata import MetadataError, PatientMetadata, lookup, read_metadata_csv
    table = read_metadata_csv(a.metadata) if getattr(a, "metadata", None) else {}
    given = [getattr(a, k, None) for k in ("age", "sex", "site")]
    single = None
    if any(v is not None for v in given):
        if len(paths) != 1:
            raise MetadataError("--age/--sex/--site describe one patient's image: give exactly one image, or use "
                                "--metadata FILE.csv for several")
        single = PatientMetadata.parse(*given)
    out, listed = {}, 0
    for p in paths:
        m = lookup(table, str(p)) if table else None
        listed += m is not None
        if single is not None:  # the command line wins over the file, field by field
            m = single.over(m)
        out[p] = m if m is not None and m.present else None
    if table and listed < len(paths):
        print(f"warning: {a.metadata} lists {listed} of the {len(paths)} images (by file name or name without "
              "extension); the others are predicted from the image alone", file=sys.stderr)
    return out


def run_predict(a) -> int:
    for flag in ("out", "partition_size"):
        if getattr(a, flag, None):
            raise ValueError(f"--{flag.replace('_', '-')} goes with --cluster; without it, use --csv or --json")
    from . import DISCLAIMER
    from .inference import Predictor
    paths, problems, unmatched = gather_inputs(a.inputs, getattr(a, "recursive", False))
    why = nothing_to_predict(paths, unmatched)
    if why:
        raise ValueError(why)
    check_outputs(a.inputs, paths, a.csv, a.json, a.explain, getattr(a, "recursive", False),
                  getattr(a, "metadata", None))
    predictor = Predictor(a.model, mode="throughput")  # several images in flight: see inference.pipeline
    metas = patient_metadata(a, paths)
    if any(metas.values()) and not predictor.accepts_metadata:
        print("warning: this model has no metadata model; the patient details are not used", file=sys.stderr)
    skipped = {e["error"] for e in unmatched}
    for msg in problems:
        print(f"{'skipped' if msg in skipped else 'warning:'} {msg}", file=sys.stderr)
    explain_dir = Path(a.explain) if a.explain else None
    if explain_dir:
        explain_dir.mkdir(parents=True, exist_ok=True)
    rows, errors = predict_files(predictor, paths, tta=a.tta, explain_dir=explain_dir, progress=True,
                                 patient=[metas.get(p) for p in paths])
    errors = unmatched + errors  # an input that gave no file is skipped as an unreadable one is: exit 1, not 0
    _print_table(rows)
    print(f"\n{DISCLAIMER}")
    if a.csv:
        # written even when empty: an older CSV there is not this run's; a file name that is not UTF-8
        # (a Latin-1 archive) is written back as its own bytes, so the row still names its file
        with replaced_whole(a.csv) as f:
            # no row: the header alone, which a CSV reader takes as an empty table (a 0-byte file it refuses)
            columns = list(rows[0]) if rows else [c for c in result_columns(predictor.bundle.codes)
                                                   if c != "gradcam" or explain_dir]
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            w.writerows(rows)
    if a.json:
        with replaced_whole(a.json) as f:
            f.write(json.dumps({"model": predictor.model_info, "results": rows, "errors": errors,
                                "disclaimer": DISCLAIMER}, indent=2))
    print(f"{len(rows)} predicted, {len(errors)} skipped", file=sys.stderr)
    if not rows:
        return 2
    return 1 if errors else 0


def _print_table(rows: list[dict]) -> None:
    if not rows:
        return
    print("class? = uncertain (top probability below 50 %); risk 'indeterminate' = not assessed; "
          "meta = patient details used")
    # with --explain, each row names its own overlay: inputs that share a stem get numbered ones
    heat = [_cut(_shown(Path(r["gradcam"]).name), 40) if r.get("gradcam") else "-" for r in rows] \
        if "gradcam" in rows[0] else None
    names, under = _table_names([_shown(r["file"]) for r in rows])
    if under:
        print(f"files under {under}")
    width = max(map(_columns, names + ["file"]))
    risks = [r["risk"] + ("" if r["in_distribution"] else " (see below)") for r in rows]
    risk_width = max(map(len, risks + ["risk"]))
    print(f"{_pad('file', width)}  {'class':6s} {'conf':>5s}  {'malig.':>6s}  {'meta':4s}  "
          + (f"{'risk':{risk_width}s}  heat-map" if heat else "risk"))
    for i, (name, risk, r) in enumerate(zip(names, risks, rows)):
        meta = "yes" if r.get("metadata_used") else "no"
        if r["in_distribution"]:
            cls = r["prediction"] + ("?" if r["confidence"] < 0.5 else "")  # ?: no class reaches 50 %
            line = f"{_pad(name, width)}  {cls:6s} {r['confidence']:5.2f}  {r['malignancy']:6.2f}  {meta:4s}  "
        else:
            line = f"{_pad(name, width)}  {'-':6s} {'-':>5s}  {'-':>6s}  {meta:4s}  "
        print(line + (f"{risk:{risk_width}s}  {heat[i]}" if heat else risk))
    overlays = [r["gradcam"] for r in rows if r.get("gradcam")]
    if overlays:
        print(f"\nheat-maps (Grad-CAM) written to {_shown(str(Path(overlays[0]).parent))}")
    flagged = [r for r in rows if not r["in_distribution"]]
    if flagged:
        print("\nnot assessed:")
        for r in flagged:
            print(f"  {_shown(r['file'])}: {r['not_assessed_because']}")


TABLE_NAME_WIDTH = 48


def _table_names(files: list[str]) -> tuple[list[str], str | None]:
    """The file column: names as given where they fit; else each relative to the folder they share (returned, to be
    printed above the table) and cut in the middle, so a folder that tells two same-named files apart stays in view."""
    if max(map(len, files)) <= TABLE_NAME_WIDTH:
        return files, None
    try:
        under = os.path.commonpath([os.path.dirname(f) or "." for f in files])
    except ValueError:  # absolute and relative paths mixed
        under = "."
    if under == ".":
        return [_cut(f, TABLE_NAME_WIDTH) for f in files], None
    return [_cut(os.path.relpath(f, under), TABLE_NAME_WIDTH) for f in files], under


def _cut(name: str, width: int) -> str:
    """name, at most `width` characters: its start and its end, joined by '...' ."""
    if len(name) <= width:
        return name
    head = (width - 3) // 3
    return name[:head] + "..." + name[-(width - 3 - head):]


def _columns(text: str) -> int:
    """Terminal columns `text` takes: wide characters (Chinese, Japanese, Korean) take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _columns(text))


def _shown(name: str) -> str:
    """A file name for the terminal: bytes that are not UTF-8 as U+FFFD, which any UTF-8 stdout can print."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
