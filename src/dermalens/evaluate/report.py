"""Self-contained HTML evaluation report: every plot embedded as a base64 PNG."""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from .. import DISCLAIMER
from ..paths import cannot_write_in, file_in_the_way, nearest_existing
from ..whole_file import replaced_whole
from .intervals import with_interval
from .metrics import reliability_bins, roc_points, undefined_figures
from .run import metadata_missing_text


def _png(fig) -> str:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def confusion_plot(cm: list[list[int]], codes: list[str]) -> str:
    import matplotlib.pyplot as plt
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(codes)):
        for j in range(len(codes)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(codes)), codes)
    ax.set_yticks(range(len(codes)), codes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (colour: row-normalised)")
    return _png(fig)


def roc_plot(y, probs, codes) -> str:
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for c, (fpr, tpr) in roc_points(y, probs, codes).items():
        ax.plot(fpr, tpr, label=c)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("One-vs-rest ROC")
    if ax.get_legend_handles_labels()[0]:  # a set of one class has no curve
        ax.legend(loc="lower right")
    return _png(fig)


def reliability_plot(y, probs) -> str:
    import matplotlib.pyplot as plt
    bins = [b for b in reliability_bins(probs, y) if b["count"]]
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["accuracy"] for b in bins], width=1 / 15,
           edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([b["confidence"] for b in bins], [b["confidence"] for b in bins], "r.", label="mean confidence")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel("confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability diagram")
    ax.legend(loc="upper left")
    return _png(fig)


def _summary_rows(m: dict) -> list[tuple[str, str]]:
    return [("balanced accuracy", with_interval(m, "balanced_accuracy")),
            ("macro AUROC", with_interval(m, "macro_auroc")), ("ECE", with_interval(m, "ece")),
            ("malignant AUROC", with_interval(m, "malignant_auroc")),
            ("malignant sensitivity", with_interval(m, "malignant_sensitivity")),
            ("malignant specificity", with_interval(m, "malignant_specificity"))]


def metadata_section(m: dict) -> str:
    """The figures with patient metadata fused (when measured) and the subgroup tables of both modes."""
    parts = []
    wm = m.get("with_metadata")
    if wm:
        parts.append(f"<h2>With patient metadata</h2><p>{wm['images_with_metadata']} of {wm['n']} images had at "
                     f"least one of age, sex, site; {html.escape(wm.get('rule', ''))}.</p><table>"
                     + "".join(f"<tr><th>{k}</th><td>{m_}</td><td>{w}</td></tr>" for (k, m_), (_, w)
                               in zip(_summary_rows(m), _summary_rows(wm)))
                     + "</table><p>Columns: image only, with metadata.</p>")
    for mode, mm in (("image only", m), ("with metadata", wm or {})):
        sub = mm.get("subgroups")
        if not sub:
            continue
        rows = []
        for grouping, table in sub["groups"].items():
            for name, e in table.items():
                ci = e["intervals"]

                def cell(key, value):
                    if value is None:
                        return "n/a"
                    iv = ci.get(key)
                    return f"{value:.3f}" + (f" ({iv[0]:.3f}-{iv[1]:.3f})" if iv else "")
                rows.append(f"<tr{' class=small-group' if e['too_small'] else ''}><td>{grouping}</td>"
                            f"<td>{html.escape(name)}</td><td>{e['n']}</td><td>{e['malignant']}</td>"
                            f"<td>{cell('balanced_accuracy', e['balanced_accuracy'])}</td>"
                            f"<td>{cell('malignant_sensitivity', e['malignant_sensitivity'])}</td>"
                            f"<td>{cell('malignant_specificity', e['malignant_specificity'])}</td>"
                            f"<td>{cell('malignant_auroc', e['malignant_auroc'])}</td>"
                            f"<td>{'too small to judge' if e['too_small'] else ''}</td></tr>")
        parts.append(f"<h2>Subgroups ({mode})</h2><p>95 % lesion-bootstrap intervals in brackets; "
                     f"{html.escape(sub['rule'])}.</p><table><tr><th>by</th><th>group</th><th>n</th>"
                     "<th>malignant</th><th>balanced accuracy</th><th>malignant sensitivity</th>"
                     "<th>malignant specificity</th><th>malignant AUROC</th><th></th></tr>" + "".join(rows)
                     + "</table>")
    return "".join(parts)


PER_CLASS_NA = {
    "recall": "recall and F1: the set holds no image of the class",
    "precision": "precision: the model predicted the class for no image (0 of 0)",
    "auroc": "AUROC: needs images of the class and of others",
}


def per_class_table(m: dict) -> str:
    """The per-class table: a figure the set cannot define is n/a, with the reasons under the table (never a 0 or
    a blank that reads as a result)."""
    gate_pass = m.get("ood_pass_rate_by_class", {})  # share of the class's images the OOD gate lets through
    used: set[str] = set()

    def cell(value, why):
        if value is None:
            used.add(why)
            return "n/a"
        return f"{value:.3f}"
    rows = []
    for c, e in m["per_class"].items():
        precision = None if e.get("predicted", 1) == 0 else e["precision"]
        rows.append(f"<tr><td>{html.escape(c)}</td><td>{cell(precision, 'precision')}</td>"
                    f"<td>{cell(e['recall'], 'recall')}</td><td>{cell(e['f1'], 'recall')}</td>"
                    f"<td>{cell(e.get('auroc'), 'auroc')}</td><td>{e['support']}</td>"
                    f"<td>{format(gate_pass[c], '.3f') if c in gate_pass else 'n/a'}</td></tr>")
    notes = [PER_CLASS_NA[k] for k in PER_CLASS_NA if k in used]
    if gate_pass and len(gate_pass) < len(m["per_class"]):
        notes.append("passes OOD gate: the set holds no image of the class")
    return ("<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>AUROC</th><th>support</th>"
            "<th>passes OOD gate</th></tr>" + "".join(rows) + "</table>"
            + (f"<p>n/a, not computable for this set: {html.escape('; '.join(notes))}.</p>" if notes else ""))


def left_out_section(m: dict) -> str:
    """The images the figures leave out and why (listed but not found, unreadable): each one named."""
    skipped = m.get("skipped") or []
    if not skipped:
        return ""
    items = "".join(f"<li>{html.escape(str(s.get('image_id', s.get('path', ''))))}: {html.escape(s['error'])}</li>"
                    for s in skipped)
    return (f'<h2>Left out of the figures</h2><p class="warn">{len(skipped)} listed image(s) are not in any figure '
            f"above:</p><ul>{items}</ul>")


def not_assessed_text(m: dict) -> str:
    """How many images the app would give no answer for (a check refused them), and which checks: every figure
    still counts them, so a set of phone photos or other clinics' images is judged on images the app would turn
    away. The report and the terminal say it in these words ('' when every image is assessed)."""
    rate = m.get("assessed_rate")
    if rate is None or rate >= 1:
        return ""
    n = m["n"]
    why = ", ".join(f"{code.replace('_', ' ')} {round(share * n)}"
                    for code, share in (m.get("refused_by") or {}).items())
    return (f"{round((1 - rate) * n)} of the {n} images would not be assessed by dermalens (a user gets no answer "
            f"for them){f' (refused as: {why})' if why else ''}; the figures include them")


def not_assessed_note(m: dict) -> str:
    text = not_assessed_text(m)
    return f'<p class="warn">{html.escape(text)}.</p>' if text else ""


def _write_text(path: Path, text: str) -> None:
    """UTF-8 whatever the locale (report.html says charset utf-8; a path or image id that is not ASCII must not
    fail after every prediction), and whole or not at all (whole_file.replaced_whole): a write that fails leaves
    the earlier file as it was.
    A name the file system gave as undecodable bytes (surrogates) is written as those bytes when they are UTF-8,
    else as U+FFFD."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    with replaced_whole(path, encoding="utf-8") as f:
        f.write(text)


def check_report_folder(out: str | Path, flag: str = "--out") -> None:
    """Refuse, before any image is predicted, a report folder that write_report could not write:
    ValueError saying which and why."""
    out = Path(out)
    blocker = file_in_the_way(out)
    if blocker == out:
        raise ValueError(f"{flag} {out}: is a file; give a folder for metrics.json and report.html")
    if blocker:
        raise ValueError(f"{flag} {out}: {blocker} is a file, so no folder can be made inside it")
    existing = nearest_existing(out)  # the folder write_report would create from
    for name in ("metrics.json", "report.html"):
        if (out / name).is_dir():
            raise ValueError(f"{flag} {out}: {out / name} is a folder, so the report cannot be written there")
    why = cannot_write_in(existing)
    if why:
        raise ValueError(f"{flag} {out}: cannot write in {existing} ({why})")


def write_report(result: dict, predictor, out_dir: str | Path, title: str, n_examples: int = 6) -> dict:
    """Write metrics.json and report.html into out_dir; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # the runtime and precision the figures were computed at: bf16 and fp32 differ in the last digits
    m = {**result["metrics"], "runtime": dict(getattr(predictor, "runtime_info", None) or {})}
    y, probs = result["y"], result["probs"]
    codes = predictor.bundle.codes
    _write_text(out / "metrics.json", json.dumps(m, indent=2))
    plots = {"Confusion matrix": confusion_plot(m["confusion_matrix"], codes),
             "ROC curves": roc_plot(y, probs, codes), "Reliability": reliability_plot(y, probs)}
    curves = predictor.bundle.path / "curves.png"
    if curves.is_file():
        plots["Training curves"] = "data:image/png;base64," + base64.b64encode(curves.read_bytes()).decode()
    examples = []
    # assessed images only, answered as the figures were (TTA or not): a user gets no class or heat-map for the others
    shown = np.flatnonzero(result.get("assessed", np.ones(len(result["records"]), bool)))
    for i in shown[np.linspace(0, len(shown) - 1, min(n_examples, len(shown))).astype(int)] if len(shown) else []:
        p = predictor.predict_pixels(result["pixels"][i:i + 1], tta=bool(m.get("tta")), explain=True)[0]
        r = result["records"][i]
        examples.append((r.image_id, r.dx, p.codes[p.top], float(p.probabilities[p.top]),
                         "data:image/png;base64," + base64.b64encode(p.overlay_png()).decode()))
    mal = m.get("malignant", {})
    skipped = m.get("skipped") or []

    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"
    runtime = " ".join(str(m["runtime"][k]) for k in ("runtime", "precision") if k in m["runtime"]) or "n/a"
    summary = [("images", m["n"]), ("runtime", runtime), ("accuracy", with_interval(m, "accuracy")),
               ("balanced accuracy", with_interval(m, "balanced_accuracy")),
               ("macro AUROC", with_interval(m, "macro_auroc")),
               ("macro F1", fmt(m["macro_f1"])), ("ECE", with_interval(m, "ece")),
               ("malignant AUROC", with_interval(m, "malignant_auroc")),
               ("malignant sensitivity", with_interval(m, "malignant_sensitivity")),
               ("malignant specificity", with_interval(m, "malignant_specificity")),
               ("malignant threshold", fmt(mal.get("threshold"))), ("test-time augmentation", m.get("tta")),
               ("passes the OOD gate", fmt(m.get("ood_pass_rate"))),
               ("passes the image-type check", fmt(m.get("modality_pass_rate"))),
               ("assessed (every check passed)", fmt(m.get("assessed_rate"))),
               ("skipped (listed but not found)", sum(x.get("reason") == "not found" for x in skipped)),
               ("skipped (unreadable)", sum(x.get("reason") != "not found" for x in skipped))]
    missing_meta = metadata_missing_text(m)
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
.plots img{{max-width:48%;margin:4px}} .ex{{display:inline-block;margin:6px;text-align:center;font-size:90%}}
.warn{{background:#fff3cd;border:1px solid #e0c060;padding:8px}} .small-group{{color:#777}}</style></head><body>
<h1>{html.escape(title)}</h1><p class="warn">{html.escape(DISCLAIMER)}</p>
<p>Model: {html.escape(predictor.bundle.card['name'])} {html.escape(predictor.bundle.card['version'])}</p>
<h2>Summary (image only)</h2><p>Intervals: 95 % percentile bootstrap over lesions (images of one lesion are resampled together).</p><table>{''.join(f'<tr><th>{k}</th><td>{v}</td></tr>' for k, v in summary)}</table>
{''.join(f'<p>n/a: {html.escape(reason)}.</p>' for reason in undefined_figures(m))}
{f'<p>n/a: {html.escape(m["intervals"]["why_none"])}.</p>' if (m.get("intervals") or {}).get("why_none") else ''}
{left_out_section(m)}
{not_assessed_note(m)}
{f'<p class="warn">Warning: {html.escape(missing_meta)}.</p>' if missing_meta else ''}
{metadata_section(m)}
<h2>Per class (image only)</h2>{per_class_table(m)}
<h2>Plots</h2><div class="plots">{''.join(f'<img alt="{k}" title="{k}" src="{v}">' for k, v in plots.items())}</div>
<h2>Example heat-maps (Grad-CAM, predicted class; assessed images only)</h2>
{'' if examples else '<p>No image was assessed, so there is no heat-map to show.</p>'}{''.join(f'<div class="ex"><img src="{src}" width="256"><br>{html.escape(i)}: true {t}, predicted {p} ({c:.2f})</div>' for i, t, p, c, src in examples)}
</body></html>"""
    _write_text(out / "report.html", page)
    return {"metrics": str(out / "metrics.json"), "report": str(out / "report.html")}
